"""The deci layout: a DeciLM / Nemotron-NAS checkpoint (vLLM's native DeciLMForCausalLM) that transformers
loads through the shipped modeling_fbn.py with the same logits as the in-memory and the exact-layout model,
whose ffn_mult values give back every width under vLLM's formula, and that export-gguf writes as DECI."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import bad, run
from tiny import save_tiny, tiny_model
from transformers import AutoModelForCausalLM

from fbn_prune.errors import UserError
from fbn_prune.export.deci import ffn_mult_for, vllm_ffn_width
from fbn_prune.export.surgery import build_pruned, exact_module
from fbn_prune.models.arch import adapter_for

FFN = 512  # tiny llama with an FFN width that is a multiple of 256 (tests/tiny.py's default 96 is not)
IDS = [0, 17, 300, 42, 5, 511, 128, 64, 9, 250, 3, 77]


def vllm_width(ffn_mult: float, n_embd: int) -> int:
    """vLLM's width formula, restated from vllm/model_executor/models/nemotron_nas.py (commit 00bd1493):
    ``_ffn_mult_to_intermediate_size`` = ``_find_multiple(int(2 * ffn_mult * n_embd / 3), 256)``."""
    n = int(2 * ffn_mult * n_embd / 3)
    return n if n % 256 == 0 else n + 256 - (n % 256)


@pytest.fixture(scope="module")
def deci_out(tmp_path_factory, calib_txt):
    """A tiny llama (FFN 512) pruned through the command line with --layout deci."""
    root = tmp_path_factory.mktemp("deci")
    src = save_tiny("llama", root / "src", intermediate_size=FFN)
    out = root / "deci"
    r = run("prune", src, "--out", out, "--calib", calib_txt, "--calib-samples", 16, "--seq-len", 64, "--runs", 1,
            "--components", 4, "--method", "magnitude", "--compensate", "none", "--layout", "deci", "--ratio", 0.3,
            "--round-to", 256, "--min-width", 256, "--protect-first", 1, "--no-progress", "--device", "cpu")
    assert r.exit_code == 0, r.output
    return src, out


def test_ffn_mult_round_trips_through_vllms_formula():
    for hidden in (64, 576, 896, 960, 2048, 3072, 4096, 5120, 6144, 8192, 12288, 16384):
        for width in range(256, 64 * 1024 + 1, 256):
            mult = ffn_mult_for(width, hidden)
            assert vllm_width(mult, hidden) == vllm_ffn_width(mult, hidden) == width, (hidden, width, mult)
            assert exact_module("llama").deci_ffn_width(mult, hidden) == width  # the shipped loader agrees
    with pytest.raises(ValueError):
        ffn_mult_for(300, 64)


def test_config_is_nemotron_nas_with_block_configs(deci_out):
    _, out = deci_out
    cfg = json.loads((out / "config.json").read_text())
    info = json.loads((out / "fbn_prune.json").read_text())
    assert cfg["model_type"] == "nemotron-nas" and cfg["architectures"] == ["DeciLMForCausalLM"]
    assert cfg["auto_map"] == {"AutoConfig": "modeling_fbn.DeciLMConfig", "AutoModel": "modeling_fbn.DeciLMModel",
                               "AutoModelForCausalLM": "modeling_fbn.DeciLMForCausalLM"}
    assert (out / "modeling_fbn.py").is_file() and "fbn_ffn" not in cfg and cfg["fbn_base_model_type"] == "llama"
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"]  # both spellings (compat)
    assert [vllm_width(b["ffn"]["ffn_mult"], cfg["hidden_size"]) for b in cfg["block_configs"]] == info["widths"]
    assert info["widths"][0] == FFN and len(set(info["widths"])) > 1 and all(w % 256 == 0 for w in info["widths"])
    assert {b["attention"]["n_heads_in_group"] for b in cfg["block_configs"]} == {2}  # 4 heads, 2 KV heads
    assert info["layout"] == "deci" and info["verified"] is True
    card = (out / "README.md").read_text()
    assert "DeciLMForCausalLM" in card and "vllm serve" in card and "--trust-remote-code" in card
    summary = run("inspect", out).output
    assert "(deci layout)" in summary and "vllm serve" in summary


def test_reload_matches_in_memory_and_exact(deci_out):
    """Reloaded from disk: logits equal the in-memory deci model's and the exact layout's (same kept channels)."""
    src, out = deci_out
    info = json.loads((out / "fbn_prune.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    adapter = adapter_for(model.config)
    kept = [torch.tensor(info["kept"][str(i)]) for i in range(4)]
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, trust_remote_code=True).eval()
    assert type(loaded).__name__ == "DeciLMForCausalLM"
    assert adapter.channel_widths(loaded) == info["widths"]
    x = torch.tensor([IDS])
    with torch.no_grad():
        got = loaded(x).logits
        in_memory = build_pruned(model, adapter, kept, "deci")(x).logits
        exact = build_pruned(model, adapter, kept, "exact")(x).logits
    d_mem, d_exact = (got - in_memory).abs().max().item(), (got - exact).abs().max().item()
    print(f"deci reload vs in-memory {d_mem:.3g}, vs exact {d_exact:.3g}")
    assert d_mem < 1e-4 and d_exact < 1e-4


def test_export_gguf_writes_deci(deci_out, tmp_path):
    pytest.importorskip("gguf")
    from test_gguf_export import expected, fields, ggml_graph_logits, hf_logits, tensors
    from tiny import tiny_tokenizer

    from fbn_prune.export.gguf import export_gguf

    _, out = deci_out
    info = json.loads((out / "fbn_prune.json").read_text())
    result = export_gguf(out, tmp_path / "m.gguf", dtype="f32")
    assert result.architecture == "deci" and result.widths == info["widths"]
    kv = fields(result.path)
    assert kv["deci.feed_forward_length"] == info["widths"] and kv["deci.attention.head_count_kv"] == [2] * 4
    got, want = tensors(result.path), expected(out, "deci")
    assert sorted(got) == sorted(want)
    ids = tiny_tokenizer()("The quick dog sees a red bird near the river.")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, trust_remote_code=True).eval()
    diff = (ggml_graph_logits(result.path, ids) - hf_logits(model, torch.tensor([ids]))).abs().max().item()
    print(f"deci GGUF (llama.cpp semantics) vs transformers {diff:.3g}")
    assert diff < 1e-4
    bad(["export-gguf", out, tmp_path / "o.gguf", "--arch", "original"], "the deci layout has per-layer FFN widths")


@pytest.mark.slow
def test_llama_cpp_runs_the_deci_gguf(deci_out, tmp_path):
    """llama.cpp itself (llama-cpp-python) on the deci checkpoint's GGUF: same tokens, top-1 agreement >= 99% (f32)."""
    pytest.importorskip("gguf")
    from test_gguf_export import _llama_cpp, hf_logits, llama_cpp_run
    from tiny import sample_texts
    from transformers import AutoTokenizer

    from fbn_prune.export.gguf import export_gguf

    if _llama_cpp() is None:
        pytest.skip("no llama.cpp binding (llama-cpp-python or llama-cpp-py-sync) installed")
    _, out = deci_out
    path = export_gguf(out, tmp_path / "m.gguf", dtype="f32").path
    text = " ".join(sample_texts(3, seed=7))[:700]
    ids, got = llama_cpp_run(path, text)
    assert ids == AutoTokenizer.from_pretrained(out, trust_remote_code=True)(text)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, trust_remote_code=True).eval()
    ref = hf_logits(model, torch.tensor([ids])).numpy()
    agreement = float((got.argmax(-1) == ref.argmax(-1)).mean())
    print(f"deci in llama.cpp: {len(ids)} tokens, top-1 agreement {agreement:.4f}, max abs diff {abs(got - ref).max():.3g}")
    assert len(ids) > 100 and agreement >= 0.99 and abs(got - ref).max() < 1e-2


def _forbid(monkeypatch, *names):
    """Make each ``module.attr`` in ``names`` raise when called: the refusal must come before it."""
    for name in names:

        def refuse(*_a, _what=name, **_k):
            raise AssertionError(f"{_what} ran before the refusal")

        monkeypatch.setattr(name, refuse)


class _NoWeights:
    """Stands in for AutoModelForCausalLM in fbn_prune.models.sources: loading weights is a test failure."""

    @staticmethod
    def from_pretrained(*_a, **_k):
        raise AssertionError("the weights loaded before the refusal")


def test_refusals(tiny_dir, calib_txt, tmp_path, monkeypatch):
    """One-line errors before any capture or ICA: round_to/min_width not multiples of 256 (recipe), a non-llama
    model (from config.json, before the weights load), an original FFN width that is not a multiple of 256
    (before the calibration is read); also under --dry-run. surgery's late check still guards direct callers."""
    common = ["--calib", calib_txt, "--calib-samples", 16, "--seq-len", 64, "--runs", 1, "--components", 4, "--method",
              "magnitude", "--compensate", "none", "--layout", "deci", "--ratio", 0.3, "--no-progress", "--device", "cpu"]
    r256 = ["--round-to", 256, "--min-width", 256]
    qwen = save_tiny("qwen2", tmp_path / "qwen", intermediate_size=FFN)
    tiny_dir("llama")  # saved before the weights loader is forbidden
    _forbid(monkeypatch, "fbn_prune.pipeline.load_calibration", "fbn_prune.pipeline.build_networks",
            "fbn_prune.pipeline.layer_scores")
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "a", *common],
        "--layout deci stores every FFN width as a multiple of 256: give --round-to and --min-width")
    r = bad(["prune", tiny_dir("llama"), "--out", tmp_path / "b", *common, *r256],
            "--layout deci stores every FFN width as a multiple of 256; this model's FFN width 96 is not (unpruned "
            "layers keep it): use --layout exact.")
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    for dry in ([], ["--dry-run"]):
        bad(["prune", tiny_dir("llama"), "--out", tmp_path / "c", *common, *r256, *dry], "FFN width 96 is not")
    monkeypatch.setattr("fbn_prune.models.sources.AutoModelForCausalLM", _NoWeights)
    for dry in ([], ["--dry-run"]):
        r = bad(["prune", qwen, "--out", tmp_path / "d", *common, *r256, *dry],
                "--layout deci writes llama models only (what vLLM's DeciLMForCausalLM serves); this model is 'qwen2': "
                "use --layout exact.")
        assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    model = tiny_model("qwen2", intermediate_size=FFN)
    adapter = adapter_for(model.config)
    with pytest.raises(UserError, match=r"--layout deci writes llama models only .*this model is 'qwen2'"):
        build_pruned(model, adapter, [torch.arange(256)] * 4, "deci")
