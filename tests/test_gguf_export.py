"""GGUF export: every tensor and hyperparameter read back with gguf's reader, transformers' own GGUF
loader as an independent reader (uniform layout), dtypes, refusals, prune --to-gguf, and a slow run
in llama.cpp itself when a binding is installed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import bad, run
from safetensors.torch import load_file
from tiny import sample_texts, save_tiny, tiny_model, tiny_tokenizer

gguf = pytest.importorskip("gguf")

from fbn_prune import pipeline  # noqa: E402
from fbn_prune.export.gguf import export_gguf  # noqa: E402
from fbn_prune.export.gguf_tensors import unpermute_qk  # noqa: E402
from fbn_prune.config.recipe import Recipe  # noqa: E402

FAMILIES = ["llama", "mistral", "qwen2"]
LAYOUTS = ["uniform", "padded", "exact"]
PROMPT = "The quick dog sees a red bird near the river, and then the old farmer walks into the kitchen."


def pruned(arch: str, layout: str, root: Path, calib: Path, **overrides) -> Path:
    """A tiny checkpoint of ``arch`` pruned to ``layout`` (magnitude scores: no capture, seconds)."""
    src = save_tiny(arch, root / f"tiny-{arch}", **overrides)
    recipe = Recipe.from_dict({
        "model": str(src), "out": str(root / f"{arch}-{layout}"), "device": "cpu",
        "export": {"layout": layout},
        "calibration": {"source": str(calib), "samples": 8, "seq_len": 32, "batch_size": 8, "holdout": 2},
        "selection": {"method": "magnitude", "compensate": "none", "ratio": 0.3, "round_to": 8, "min_width": 8,
                      "protect_first": 0 if layout == "uniform" else 1},
    })
    return pipeline.prune(recipe, progress=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(arch, layout) -> pruned checkpoint folder, made once per module."""
    root = tmp_path_factory.mktemp("gguf_ckpt")
    calib = root / "calib.txt"
    calib.write_text("\n\n".join(sample_texts(16, seed=3)) + "\n")
    made: dict[tuple[str, str], Path] = {}

    def get(arch: str, layout: str) -> Path:
        if (arch, layout) not in made:
            made[(arch, layout)] = pruned(arch, layout, root / f"{arch}-{layout}", calib)
        return made[(arch, layout)]

    return get


def fields(path: Path) -> dict:
    """Every key-value of a GGUF file (arrays as lists; token arrays left out)."""
    r = gguf.GGUFReader(path)
    out = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
            continue
        out[k] = f.contents()
    out["n_tokens"] = len(r.fields["tokenizer.ggml.tokens"].data)
    return out


def tensors(path: Path) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (float32 array in transformers' (out, in) order, stored type name)."""
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        data = gguf.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        out[t.name] = (np.asarray(data, dtype=np.float32), t.tensor_type.name)
    return out


def expected(folder: Path, arch: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under their GGUF names, FFN narrowed to each layer's real width (deci)."""
    cfg = json.loads((folder / "config.json").read_text())
    info = json.loads((folder / "fbn_prune.json").read_text())
    widths = info["widths"]
    state = load_file(folder / "model.safetensors")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg["num_hidden_layers"])
    out = {}
    for name, t in state.items():
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        if arch == "deci" and ".mlp." in name:
            w = widths[int(name.split(".")[2])]
            t = t[:, :w] if "down_proj.weight" in name else t[:w]
        out[names.get_name(name, try_suffixes=(".weight", ".bias"))] = t
    return out


# ----------------------------------------------------------------------------- every tensor, every key
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_tensor_and_hyperparameter_read_back(family, layout, checkpoints, tmp_path):
    folder = checkpoints(family, layout)
    info = json.loads((folder / "fbn_prune.json").read_text())
    cfg = json.loads((folder / "config.json").read_text())
    result = export_gguf(folder, tmp_path / "m.gguf", dtype="f32")
    arch = {"uniform": "qwen2" if family == "qwen2" else "llama"}.get(layout, "deci")
    assert result.architecture == arch
    kv = fields(result.path)
    assert kv["general.architecture"] == arch
    assert kv["general.file_type"] == 0
    assert kv[f"{arch}.block_count"] == 4
    assert kv[f"{arch}.embedding_length"] == 64
    assert kv[f"{arch}.context_length"] == 256
    assert kv[f"{arch}.rope.freq_base"] == pytest.approx(10000.0)
    assert kv[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])
    assert kv[f"{arch}.rope.dimension_count"] == kv[f"{arch}.attention.key_length"] == 16
    assert kv[f"{arch}.vocab_size"] == kv["n_tokens"] == 512
    if arch == "deci":  # per-layer arrays; padded drops its zero padding
        assert kv["deci.feed_forward_length"] == info["widths"]
        assert (info["widths"] != info["stored_widths"]) == (layout == "padded")
        assert len(set(info["widths"])) > 1
        assert kv["deci.attention.head_count"] == [4] * 4 and kv["deci.attention.head_count_kv"] == [2] * 4
    else:
        assert kv[f"{arch}.feed_forward_length"] == info["widths"][0] < 96
        assert kv[f"{arch}.attention.head_count"] == 4 and kv[f"{arch}.attention.head_count_kv"] == 2
    # the checkpoint carries the original's tokenizer files as they were (the tiny models' byte-level BPE
    # splits like GPT-2), and the pre-tokenizer is named as transformers splits: for a stock qwen2 folder
    # transformers 5's Qwen2 tokenizer class imposes its own regex (digits one by one), so "qwen2"; the
    # exact layout's folder (remote code) keeps the file's splitting
    pre = "qwen2" if family == "qwen2" and layout != "exact" else "gpt-2"
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == pre
    assert kv["tokenizer.ggml.bos_token_id"] == kv["tokenizer.ggml.eos_token_id"] == 0
    assert kv["tokenizer.ggml.add_bos_token"] is False

    got, want = tensors(result.path), expected(folder, arch)
    assert sorted(got) == sorted(want)
    permuted = arch in ("llama", "deci")
    for name, ref in want.items():
        data, kind = got[name]
        assert kind == "F32", name
        t = torch.from_numpy(data.copy())
        if permuted and name.endswith(("attn_q.weight", "attn_q.bias")):
            t = unpermute_qk(t, 4)
        elif permuted and name.endswith(("attn_k.weight", "attn_k.bias")):
            t = unpermute_qk(t, 2)
        assert t.shape == ref.shape, name
        torch.testing.assert_close(t, ref.float(), atol=0, rtol=0, msg=name)
    if permuted:  # the permutation really moved rows (a reader that skips undoing it would be wrong)
        assert not np.array_equal(got["blk.0.attn_q.weight"][0], want["blk.0.attn_q.weight"].float().numpy())


def test_permutation_round_trips():
    from fbn_prune.export.gguf_tensors import permute_qk

    w = torch.arange(4 * 16 * 3, dtype=torch.float32).reshape(64, 3)
    p = permute_qk(w, 4)
    assert not torch.equal(p, w)
    torch.testing.assert_close(unpermute_qk(p, 4), w, atol=0, rtol=0)
    # head 0: rows (0, 8), (1, 9), ... -- the two rotary halves interleaved pairwise
    assert p[:4, 0].tolist() == [0.0, 24.0, 3.0, 27.0]


# ----------------------------------------------------------------------------- an independent reader
def hf_logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits[0].float()


@pytest.mark.parametrize("family", FAMILIES + ["qwen3"])
def test_transformers_gguf_loader_gives_the_same_logits(family, tmp_path):
    """transformers' GGUF loader (its own tensor map and Q/K un-permutation) rebuilds the model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"head_dim": 128} if family == "qwen3" else {}  # transformers' qwen3 GGUF reader assumes head_dim 128
    folder = save_tiny(family, tmp_path / f"tiny-{family}", **extra)
    export_gguf(folder, tmp_path / "out" / "m.gguf", dtype="f32")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", gguf_file="m.gguf", dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "out", gguf_file="m.gguf")
    ids = tiny_tokenizer()(PROMPT, return_tensors="pt").input_ids
    assert tok(PROMPT, return_tensors="pt").input_ids.tolist() == ids.tolist()
    original = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    torch.testing.assert_close(hf_logits(loaded, ids), hf_logits(original, ids), atol=1e-4, rtol=1e-4)


def test_pruned_uniform_and_padded_original_load_in_transformers(checkpoints, tmp_path):
    from transformers import AutoModelForCausalLM

    ids = tiny_tokenizer()(PROMPT, return_tensors="pt").input_ids
    for layout in ("uniform", "padded"):
        folder = checkpoints("llama", layout)
        r = export_gguf(folder, tmp_path / layout / "m.gguf", dtype="f32", arch="original")
        assert r.architecture == "llama"
        loaded = AutoModelForCausalLM.from_pretrained(r.path.parent, gguf_file="m.gguf", dtype=torch.float32).eval()
        original = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        assert loaded.config.intermediate_size == original.config.intermediate_size
        torch.testing.assert_close(hf_logits(loaded, ids), hf_logits(original, ids), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- dtypes
def test_dtypes(checkpoints, tmp_path):
    folder = checkpoints("llama", "exact")
    ref = tensors(export_gguf(folder, tmp_path / "f32.gguf", dtype="f32").path)
    sizes = {"f32": (tmp_path / "f32.gguf").stat().st_size}
    for dtype, file_type in (("f16", 1), ("q8_0", 7)):
        r = export_gguf(folder, tmp_path / f"{dtype}.gguf", dtype=dtype)
        sizes[dtype] = r.path.stat().st_size
        assert fields(r.path)["general.file_type"] == file_type
        for name, (data, kind) in tensors(r.path).items():
            want = ref[name][0]
            if data.ndim == 1:
                assert kind == "F32", name
                np.testing.assert_array_equal(data, want)
                continue
            if dtype == "f16" or data.shape[-1] % 32:  # q8_0 falls back to f16 for rows not a multiple of 32
                assert kind == "F16", name
                np.testing.assert_allclose(data, want, rtol=1e-3, atol=1e-4)
            else:
                assert kind == "Q8_0", name
                assert np.abs(data - want).max() <= np.abs(want).max() / 127 + 1e-6, name
    assert sizes["q8_0"] < sizes["f16"] < sizes["f32"]


# ----------------------------------------------------------------------------- tokenizer extras
def test_chat_template_and_special_tokens(tmp_path):
    folder = save_tiny("llama", tmp_path / "chat")
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    (folder / "chat_template.jinja").write_text(template)
    kv = fields(export_gguf(folder, tmp_path / "m.gguf").path)
    assert kv["tokenizer.chat_template"] == template
    assert kv["tokenizer.ggml.unknown_token_id"] == kv["tokenizer.ggml.padding_token_id"] == 0


def byte_fallback_tokenizer():
    """A Llama-2-style tokenizer: BPE over "▁"-joined text with byte fallback, <s> prepended."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(sample_texts(60, seed=5), trainers.BpeTrainer(vocab_size=640, special_tokens=specials,
                                                                          show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_byte_fallback_tokenizer_is_written_as_llama(tmp_path):
    """Llama 2 / Mistral v0.x tokenizers: model "llama", byte tokens typed BYTE, merge order kept in the
    scores (transformers' GGUF tokenizer then splits text exactly as the original)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = byte_fallback_tokenizer()
    folder = tmp_path / "spm"
    model = tiny_model("llama", vocab_size=len(tok), bos_token_id=1, eos_token_id=2, pad_token_id=None)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    path = export_gguf(folder, tmp_path / "out" / "m.gguf", dtype="f32").path
    kv = fields(path)
    assert kv["tokenizer.ggml.model"] == "llama" and kv["tokenizer.ggml.add_bos_token"] is True
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (1, 2)
    types = gguf.GGUFReader(path).fields["tokenizer.ggml.token_type"].contents()
    assert types[:3] == [gguf.TokenType.CONTROL] * 3 and set(types[3:259]) == {gguf.TokenType.BYTE}
    text = "The quick dog sees a red bird near the river. Über 3 Äpfel!"
    loaded_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file="m.gguf")
    assert loaded_tok(text)["input_ids"] == tok(text)["input_ids"]
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file="m.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([tok(text)["input_ids"]])
    torch.testing.assert_close(hf_logits(loaded, ids), hf_logits(model, ids), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- command line
def test_cli_writes_and_describes(checkpoints, tmp_path):
    out = tmp_path / "x.gguf"
    r = run("export-gguf", checkpoints("qwen2", "exact"), out, "--dtype", "f32")
    assert r.exit_code == 0 and out.is_file()
    assert "deci" in r.output and "f32" in r.output and "per layer" in r.output
    assert "custom code" not in r.output  # the exact layout's remote code is never asked for


def test_refusals(checkpoints, tiny_dir, tmp_path):
    exact = checkpoints("llama", "exact")
    bad(["export-gguf", exact, tmp_path / "a.gguf", "--dtype", "q4_0"], "must be one of f32, f16, q8_0")
    bad(["export-gguf", tiny_dir("gpt2"), tmp_path / "b.gguf"], "supports llama, mistral, qwen2, qwen3")
    bad(["export-gguf", exact, tmp_path / "c.gguf", "--arch", "original"], "only llama.cpp's deci")
    bad(["export-gguf", tmp_path / "nothing", tmp_path / "d.gguf"], "not a model folder")
    (tmp_path / "e.gguf").write_text("old")
    bad(["export-gguf", exact, tmp_path / "e.gguf"], "--overwrite")
    assert (tmp_path / "e.gguf").read_text() == "old"
    assert not list(tmp_path.glob(".*.tmp-*"))
    qwen3 = save_tiny("qwen3", tmp_path / "q3")
    bad(["export-gguf", qwen3, tmp_path / "f.gguf", "--arch", "deci"], "cannot be written as deci")


def test_padding_that_is_not_zero_is_refused(checkpoints, tmp_path):
    folder = tmp_path / "padded"
    shutil.copytree(checkpoints("llama", "padded"), folder)
    info = json.loads((folder / "fbn_prune.json").read_text())
    state = load_file(folder / "model.safetensors")
    layer = next(i for i, (w, s) in enumerate(zip(info["widths"], info["stored_widths"])) if w < s)
    state[f"model.layers.{layer}.mlp.down_proj.weight"][:, -1] = 1.0
    from safetensors.torch import save_file

    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    bad(["export-gguf", folder, tmp_path / "p.gguf"], "--arch original")


def test_prune_to_gguf_writes_file_and_card(tiny_dir, calib_txt, tmp_path):
    out, file = tmp_path / "ckpt", tmp_path / "ckpt.gguf"
    r = run("prune", tiny_dir("llama"), "--out", out, "--calib", calib_txt, "--calib-samples", "8", "--method",
            "magnitude", "--compensate", "none", "--layout", "exact", "--protect-first", "1", "--device", "cpu",
            "--no-progress", "--to-gguf", file, "--gguf-dtype", "q8_0")
    assert r.exit_code == 0, r.output
    assert fields(file)["general.architecture"] == "deci"
    info = json.loads((out / "fbn_prune.json").read_text())
    assert info["gguf"] == {"file": "ckpt.gguf", "architecture": "deci", "dtype": "q8_0"}
    card = (out / "README.md").read_text()
    assert "### GGUF" in card and "ckpt.gguf" in card and "`deci`" in card


def test_push_uploads_the_gguf(tmp_path):
    from fbn_prune.ship.files import classify

    (tmp_path / "model-q8_0.gguf").write_bytes(b"GGUF")
    assert classify(tmp_path / "model-q8_0.gguf")[0]


def test_prune_refuses_a_bad_gguf_target_before_working(tiny_dir, calib_txt, tmp_path):
    (tmp_path / "taken.gguf").write_text("x")
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--calib", calib_txt, "--to-gguf", tmp_path / "taken.gguf"],
        "--overwrite")
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--calib", calib_txt, "--to-gguf", tmp_path / "n.gguf",
         "--gguf-dtype", "bf16"], "must be one of")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- llama.cpp's graph, re-implemented
def ggml_graph_logits(path: Path, ids: list[int]) -> torch.Tensor:
    """Logits computed from the GGUF file alone the way llama.cpp's llama / qwen2 / deci graphs compute
    them (read from llama.cpp's source: RMSNorm, per-layer head counts and FFN widths, "normal" rope on
    adjacent pairs for llama/deci and NeoX rope on halves for qwen2, GQA, SwiGLU). Shape (tokens, vocab).

    Not llama.cpp itself; it checks that the file holds what those graphs need in the order they
    read it (the Q/K permutation against the rope style, the per-layer widths, biases, tied output).
    """
    kv = fields(path)
    arch = kv["general.architecture"]
    t = {name: torch.from_numpy(data.copy()).double() for name, (data, _) in tensors(path).items()}

    def per_layer(key, i):
        v = kv[f"{arch}.{key}"]
        return v[i] if isinstance(v, list) else v

    eps, base = kv[f"{arch}.attention.layer_norm_rms_epsilon"], kv[f"{arch}.rope.freq_base"]
    hd = kv[f"{arch}.rope.dimension_count"]
    pos = torch.arange(len(ids), dtype=torch.float64)
    ang = pos[:, None] * base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)[None]  # (T, hd/2)
    cos, sin = ang.cos()[:, None], ang.sin()[:, None]

    def rope(v):  # v: (T, heads, hd)
        if arch in ("llama", "deci"):  # LLAMA_ROPE_TYPE_NORM: pairs (2j, 2j+1)
            a, b = v[..., 0::2], v[..., 1::2]
            return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(v.shape)
        a, b = v[..., : hd // 2], v[..., hd // 2:]  # NEOX: pairs (j, j + hd/2)
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def lin(x, name):
        y = x @ t[f"{name}.weight"].T
        return y + t[f"{name}.bias"] if f"{name}.bias" in t else y

    x = t["token_embd.weight"][ids]
    n = len(ids)
    mask = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(kv[f"{arch}.block_count"]):
        nh, nkv = per_layer("attention.head_count", i), per_layer("attention.head_count_kv", i)
        h = rms(x, t[f"blk.{i}.attn_norm.weight"])
        q = rope(lin(h, f"blk.{i}.attn_q").reshape(n, nh, hd))
        k = rope(lin(h, f"blk.{i}.attn_k").reshape(n, nkv, hd)).repeat_interleave(nh // nkv, 1)
        v = lin(h, f"blk.{i}.attn_v").reshape(n, nkv, hd).repeat_interleave(nh // nkv, 1)
        att = (torch.einsum("qhd,khd->hqk", q, k) / hd ** 0.5 + mask).softmax(-1)
        x = x + lin(torch.einsum("hqk,khd->qhd", att, v).reshape(n, nh * hd), f"blk.{i}.attn_output")
        h = rms(x, t[f"blk.{i}.ffn_norm.weight"])
        assert t[f"blk.{i}.ffn_up.weight"].shape[0] == per_layer("feed_forward_length", i)
        x = x + lin(torch.nn.functional.silu(lin(h, f"blk.{i}.ffn_gate")) * lin(h, f"blk.{i}.ffn_up"), f"blk.{i}.ffn_down")
    out = t.get("output.weight", t["token_embd.weight"])
    return (rms(x, t["output_norm.weight"]) @ out.T).float()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_file_computes_the_model_under_llama_cpp_semantics(family, layout, checkpoints, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = checkpoints(family, layout)
    path = export_gguf(folder, tmp_path / "m.gguf", dtype="f32").path
    ids = tiny_tokenizer()(PROMPT)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=layout == "exact").eval()
    torch.testing.assert_close(ggml_graph_logits(path, ids), hf_logits(model, torch.tensor([ids])), atol=1e-4, rtol=1e-4)


def test_graph_reference_notices_a_missing_permutation(checkpoints, tmp_path, monkeypatch):
    """The check above can fail: without the Q/K permutation the llama file computes something else."""
    from transformers import AutoModelForCausalLM

    from fbn_prune.export import gguf_tensors

    monkeypatch.setattr(gguf_tensors, "permute_qk", lambda w, n: w)
    folder = checkpoints("llama", "exact")
    path = export_gguf(folder, tmp_path / "m.gguf", dtype="f32").path
    ids = tiny_tokenizer()(PROMPT)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=True).eval()
    assert (ggml_graph_logits(path, ids) - hf_logits(model, torch.tensor([ids]))).abs().max() > 1e-2


# ----------------------------------------------------------------------------- llama.cpp itself
def _llama_cpp():
    """A llama.cpp binding whose library loads here: llama-cpp-python, else llama-cpp-py-sync (prebuilt
    CPU wheels; its library needs glibc 2.38); None when neither."""
    try:
        import llama_cpp  # noqa: F401

        return "llama_cpp"
    except (ImportError, OSError, RuntimeError):
        pass
    try:
        from llama_cpp_py_sync._cffi_bindings import get_lib

        get_lib()
        return "llama_cpp_py_sync"
    except (ImportError, OSError, RuntimeError):
        return None


def llama_cpp_run(path: Path, text: str) -> tuple[list[int], np.ndarray]:
    """llama.cpp's own tokenization of ``text`` and its logits at every position, shape (tokens, vocab)."""
    name = _llama_cpp()
    if name == "llama_cpp":
        from llama_cpp import Llama

        # f32 K/V cache: llama.cpp's default f16 cache alone moves tiny random models' logits by up to 0.06
        llm = Llama(model_path=str(path), n_ctx=1024, logits_all=True, verbose=False, type_k=0, type_v=0)
        ids = llm.tokenize(text.encode(), add_bos=True)
        llm.eval(ids)
        return ids, np.array(llm.scores[: len(ids)])
    from llama_cpp_py_sync import Llama

    llm = Llama(str(path), n_ctx=1024, n_threads=1, verbose=False)
    ids = llm.tokenize(text, add_special=True)
    rows, n_past = [], 0
    for token in ids:  # the binding asks for the logits of the last token of each decode
        n_past = llm._eval_tokens([token], n_past)
        rows.append(np.array(llm._ffi.unpack(llm._lib.llama_get_logits_ith(llm._ctx, -1), llm.n_vocab)))
    llm.close()
    return ids, np.stack(rows)


@pytest.mark.slow
@pytest.mark.skipif(_llama_cpp() is None, reason="no llama.cpp binding (llama-cpp-python or llama-cpp-py-sync) installed")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_agrees_with_transformers(family, layout, checkpoints, tmp_path):
    """llama.cpp tokenizes like transformers and its top-1 token agrees at >= 99% of positions (f32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = checkpoints(family, layout)
    path = export_gguf(folder, tmp_path / "m.gguf", dtype="f32").path
    text = " ".join(sample_texts(3, seed=7))[:700]
    ids, got = llama_cpp_run(path, text)
    assert ids == AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=layout == "exact").eval()
    ref = hf_logits(model, torch.tensor([ids])).numpy()
    agreement = float((got.argmax(-1) == ref.argmax(-1)).mean())
    print(f"{family}-{layout} in llama.cpp: {len(ids)} tokens, top-1 {agreement:.4f}, max abs diff {np.abs(got - ref).max():.3g}")
    assert len(ids) > 100 and agreement >= 0.99, (agreement, np.abs(got - ref).max())
    assert np.abs(got - ref).max() < 1e-2
