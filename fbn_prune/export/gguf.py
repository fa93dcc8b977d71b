"""Write a checkpoint as one GGUF file for llama.cpp (llama-cpp-python, ollama, LM Studio) with the
``gguf`` library, the way llama.cpp's own ``convert_hf_to_gguf.py`` writes the same model.

Layouts and the llama.cpp architecture they become:

- ``uniform``: the original architecture (``llama`` for Llama and Mistral, ``qwen2``, ``qwen3``),
  one global ``feed_forward_length``.
- ``padded``: ``deci`` with each layer's real width: the zero padding is dropped, which changes no
  output (a zero channel adds act(0) * 0 = 0). ``arch="original"`` keeps the padding instead.
- ``exact``: ``deci``, llama.cpp's architecture for Llama-family blocks of per-layer shape
  (``feed_forward_length``, ``attention.head_count`` and ``attention.head_count_kv`` are per-layer
  arrays).

As in the converter: tensor names come from gguf's ``TensorNameMap``; for the architectures whose
rotary embedding llama.cpp applies to adjacent pairs (``llama``, ``deci``) the rows of the Q and K
projections (and their biases) are permuted from transformers' half-split order; 1-D tensors stay
float32; q8_0 falls back to f16 for a matrix whose rows are not a multiple of 32. The tokenizer
is written from the checkpoint's ``tokenizer.json``: byte-level BPE as ``gpt2`` (tokens, token
types, merges, the pre-tokenizer name llama.cpp knows it by) or, for a byte-fallback BPE (Llama 2,
Mistral v0.1-0.3), as ``llama`` through gguf's ``LlamaHfVocab`` with scores that keep the merge order; special token ids, whether BOS/EOS
are added, and the chat template come from the tokenizer files.

The file is streamed (one tensor in memory at a time), written beside the target and renamed
into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors import safe_open

from fbn_prune.errors import UserError
from fbn_prune.export.checkpoint import PROVENANCE_FILE

log = logging.getLogger(__name__)

DTYPES = ("f32", "f16", "q8_0")
ARCH_CHOICES = ("auto", "original", "deci")

_FILE_TYPE = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


@dataclass(frozen=True)
class Family:
    """How one transformers ``model_type`` is written for llama.cpp.

    Attributes:
        arch: llama.cpp architecture of the stock block (the uniform layout).
        permute_qk: that architecture applies rotary embeddings to adjacent pairs, so Q/K rows
            are reordered from transformers' half-split layout (llama.cpp's ``LlamaModel.permute``).
        deci: the block is DECI's (RMSNorm, rotary GQA attention with optional Q/K/V biases,
            SwiGLU FFN), so per-layer widths can be written as ``deci``.
    """

    model_type: str
    arch: str
    permute_qk: bool
    deci: bool


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llama", "llama", permute_qk=True, deci=True),
    Family("mistral", "llama", permute_qk=True, deci=True),
    Family("qwen2", "qwen2", permute_qk=False, deci=True),
    Family("qwen3", "qwen3", permute_qk=False, deci=False),  # per-head Q/K norms: no DECI equivalent
)}

# Pre-tokenizers llama.cpp recognises by the hash of the token ids of a fixed probe text (the
# table convert_hf_to_gguf.py generates), restricted to the tokenizers of the families above.
_PRE_PROBE = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
              "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
              "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
              "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
_PRE_BY_HASH = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2 / Qwen2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
}
# The same by structure, for tokenizers with their own vocabulary: the splitting regex before a
# byte-level step (llama.cpp implements each name with that regex).
_PRE_BY_REGEX = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
}


@dataclass
class Checkpoint:
    """What the writer needs to know about a model folder.

    ``widths[i]``: FFN channels layer i really uses; ``stored[i]``: channels its tensors hold
    (larger than ``widths[i]`` only in the padded layout, where the extra channels are zero).
    """

    folder: Path
    config: dict
    family: Family
    layout: str
    widths: list[int]
    stored: list[int]
    info: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.widths)


@dataclass(frozen=True)
class GgufResult:
    """What was written: the file, its llama.cpp architecture, dtype, per-layer FFN widths, size."""

    path: Path
    architecture: str
    dtype: str
    widths: list[int]
    tensors: int
    bytes: int


# ----------------------------------------------------------------------------- reading the folder
def read_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """The layout and shape of a checkpoint folder; UserError when it is not one the writer handles."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise UserError(f"{folder} is not a model folder (no config.json).")
    config = json.loads((path / "config.json").read_text())
    info = json.loads((path / PROVENANCE_FILE).read_text()) if (path / PROVENANCE_FILE).is_file() else {}
    model_type = config.get("fbn_base_model_type") or config.get("model_type")
    family = FAMILIES.get(model_type)
    if family is None:
        raise UserError(f"GGUF export supports {', '.join(FAMILIES)} models; {folder} is {model_type!r}.")
    n_layers = int(config["num_hidden_layers"])
    if config.get("fbn_ffn"):
        widths = [int(w) for w in config["fbn_ffn"]["widths"]]
        return Checkpoint(path, config, family, "exact", widths, list(widths), info)
    stored = [int(config["intermediate_size"])] * n_layers
    if info.get("layout") == "padded" and len(info.get("widths") or []) == n_layers:
        return Checkpoint(path, config, family, "padded", [int(w) for w in info["widths"]], stored, info)
    return Checkpoint(path, config, family, "uniform", list(stored), stored, info)


def target_arch(ckpt: Checkpoint, arch: str = "auto") -> str:
    """The llama.cpp architecture ``ckpt`` is written as (see the module docstring)."""
    if arch not in ARCH_CHOICES:
        raise UserError(f"--arch must be one of {', '.join(ARCH_CHOICES)}, not {arch!r}.")
    if arch == "auto":
        arch = "original" if ckpt.layout == "uniform" else "deci"
    if arch == "original":
        if ckpt.layout == "exact":
            raise UserError("the exact layout has per-layer FFN widths, which only llama.cpp's deci architecture "
                            "holds; use --arch deci (or auto).")
        return ckpt.family.arch
    if not ckpt.family.deci:
        raise UserError(f"{ckpt.family.model_type} cannot be written as deci (supported: "
                        f"{', '.join(f.model_type for f in FAMILIES.values() if f.deci)}); "
                        + ("use --arch original." if ckpt.layout != "exact" else "export a uniform or padded layout."))
    return "deci"


def _tensor_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise UserError(f"{folder} holds no safetensors weights (model.safetensors or an index).")


# ----------------------------------------------------------------------------- tensors
@dataclass(frozen=True)
class _Planned:
    """One output tensor: where it comes from and how it is transformed (no data held)."""

    hf_name: str
    file: Path
    gguf_name: str
    shape: tuple[int, ...]  # after slicing, numpy order (rows, columns)
    rows: int | None = None  # keep the first `rows` rows (gate/up of a narrowed layer)
    cols: int | None = None  # keep the first `cols` columns (down of a narrowed layer)
    permute_heads: int | None = None  # interleave rotary halves of this many heads
    qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32


_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def _plan(ckpt: Checkpoint, arch: str, dtype: str) -> list[_Planned]:
    """Every output tensor in write order, from the safetensors headers alone."""
    cfg = ckpt.config
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], ckpt.n_layers)
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    permute = arch == "deci" or ckpt.family.permute_qk
    narrow = arch == "deci"
    tied = bool(cfg.get("tie_word_embeddings", False))
    plan: list[_Planned] = []
    for file in _tensor_files(ckpt.folder):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
                    continue
                shape = tuple(f.get_slice(name).get_shape())
                rows = cols = heads = None
                m = _LAYER.match(name)
                if m and narrow:
                    i, rest = int(m.group(1)), m.group(2)
                    width = ckpt.widths[i]
                    if rest.startswith(("mlp.gate_proj.", "mlp.up_proj.")) and width < shape[0]:
                        rows = width
                    elif rest == "mlp.down_proj.weight" and width < shape[1]:
                        cols = width
                if permute and name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
                    heads = n_head
                elif permute and name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
                    heads = n_kv
                out_shape = ((rows if rows is not None else shape[0]),) + tuple(shape[1:])
                if cols is not None:
                    out_shape = (out_shape[0], cols)
                new = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
                if new is None:
                    raise UserError(f"tensor {name} of {ckpt.folder} has no {arch} GGUF name; the checkpoint is not a "
                                    f"plain {ckpt.family.model_type} model.")
                plan.append(_Planned(name, file, new, out_shape, rows, cols, heads, _qtype(new, out_shape, dtype)))
    return plan


def _qtype(gguf_name: str, shape: tuple[int, ...], dtype: str) -> gguf.GGMLQuantizationType:
    """The stored type of one tensor: 1-D tensors (norms, biases) stay F32, as in the converter."""
    if dtype == "f32" or len(shape) < 2:
        return gguf.GGMLQuantizationType.F32
    if dtype == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16  # q8_0 falls back to f16 for rows not a multiple of 32


def permute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """transformers' Q/K rows (per head: first rotary half, then second) -> llama.cpp's pairwise order.

    ``w``: (n_heads * head_dim, ...) weight or (n_heads * head_dim,) bias; same shape back.
    """
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of :func:`permute_qk` (what a GGUF reader does to get transformers' order back)."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _load(p: _Planned, handles: dict) -> np.ndarray:
    """The tensor of ``p`` sliced, permuted and converted to its stored type (numpy)."""
    t = handles[p.file].get_tensor(p.hf_name)
    if p.rows is not None:
        t = t[: p.rows]
    if p.cols is not None:
        t = t[:, : p.cols]
    if p.permute_heads is not None:
        t = permute_qk(t, p.permute_heads)
    data = t.to(torch.float32).contiguous().numpy()
    if p.qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    if p.qtype == gguf.GGMLQuantizationType.Q8_0:
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
    return data


def _check_padding(ckpt: Checkpoint, plan: list[_Planned], handles: dict) -> None:
    """Padded layout written narrow: the channels beyond each layer's width must be zero."""
    for p in plan:
        if p.rows is None and p.cols is None:
            continue
        t = handles[p.file].get_tensor(p.hf_name)
        rest = t[p.rows:] if p.rows is not None else t[:, p.cols:]
        if rest.numel() and bool(rest.ne(0).any()):
            raise UserError(f"{p.hf_name} has nonzero channels beyond the layer's width in {ckpt.folder}; "
                            "write it with --arch original to keep them.")


# ----------------------------------------------------------------------------- metadata
def _hparams(w: gguf.GGUFWriter, ckpt: Checkpoint, arch: str, dtype: str, n_vocab: int) -> list[int]:
    """Model hyperparameters as llama.cpp reads them; returns the per-layer FFN widths written."""
    cfg = ckpt.config
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // n_head)
    widths = ckpt.widths if arch == "deci" else ckpt.stored
    w.add_block_count(ckpt.n_layers)
    w.add_context_length(int(cfg["max_position_embeddings"]))
    w.add_embedding_length(int(cfg["hidden_size"]))
    if arch == "deci":  # per-layer arrays, as the converter writes Nemotron-NAS block configs
        w.add_feed_forward_length([int(x) for x in widths])
        w.add_head_count([n_head] * ckpt.n_layers)
        w.add_head_count_kv([n_kv] * ckpt.n_layers)
    else:
        w.add_feed_forward_length(int(widths[0]))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
    rope = _rope(cfg)
    w.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(n_vocab)
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif kind not in ("default", "llama3"):  # llama3: a rope_freqs tensor, see _rope_freqs
        raise UserError(f"rope scaling {kind!r} has no GGUF equivalent here (supported: none, linear, yarn, llama3).")
    sliding = cfg.get("sliding_window")
    if sliding and cfg.get("use_sliding_window", True) and sliding < int(cfg["max_position_embeddings"]):
        log.warning("sliding_window %s is not written: llama.cpp's %s attends to the whole context", sliding, arch)
    w.add_file_type(_FILE_TYPE[dtype])
    if dtype == "q8_0":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    return [int(x) for x in widths]


def _rope(cfg: dict) -> dict:
    """Rotary settings in either spelling: transformers 5's rope_parameters or 4.x's rope_theta/rope_scaling."""
    out = dict(cfg.get("rope_scaling") or {})
    out.update(cfg.get("rope_parameters") or {})
    if "rope_theta" not in out and cfg.get("rope_theta") is not None:
        out["rope_theta"] = cfg["rope_theta"]
    return out


def _rope_freqs(cfg: dict) -> np.ndarray | None:
    """Llama 3.x rope scaling as llama.cpp takes it: per-frequency factors (``rope_freqs.weight``), shape (head_dim/2,)."""
    rope = _rope(cfg)
    if (rope.get("rope_type") or rope.get("type")) != "llama3":
        return None
    base = float(rope.get("rope_theta", 10000.0))
    dim = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factor, lo, hi = float(rope.get("factor", 8.0)), float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    wavelen = 2 * np.pi / freqs
    smooth = (old_ctx / wavelen - lo) / (hi - lo)
    mid = 1 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old_ctx / hi, 1.0, np.where(wavelen > old_ctx / lo, factor, mid))
    return out.astype(np.float32)


def _general(w: gguf.GGUFWriter, ckpt: Checkpoint) -> None:
    base = ckpt.info.get("base_model") or ckpt.config.get("_name_or_path") or ckpt.folder.name
    name = str(base).rstrip("/").split("/")[-1]
    if ckpt.info:
        name += f" (fbn_prune {ckpt.info.get('layout', ckpt.layout)})"
    w.add_name(name)
    if ckpt.info.get("license"):
        w.add_license(str(ckpt.info["license"]))
    hub = ckpt.info.get("base_model_hub_id")
    if hub:
        w.add_base_model_count(1)
        w.add_base_model_name(0, hub.split("/")[-1])
        w.add_base_model_repo_url(0, f"https://huggingface.co/{hub}")


# ----------------------------------------------------------------------------- tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json")


def tokenizer_folder(ckpt: Checkpoint, into: Path) -> Path:
    """The checkpoint's tokenizer files in ``into``, next to a config.json holding only the special token ids.

    Tokenizer readers (transformers' AutoTokenizer, gguf's LlamaHfVocab and SpecialVocab) also read
    config.json; the exact layout's names remote code (``auto_map``), which would make them ask for
    trust_remote_code. The tokenizer never needs that code.
    """
    for name in TOKENIZER_FILES:
        if (ckpt.folder / name).is_file():
            shutil.copyfile(ckpt.folder / name, into / name)
    ids = {k: v for k, v in ckpt.config.items() if k.endswith("_token_id") and v is not None}
    (into / "config.json").write_text(json.dumps(ids))
    return into


def _vocab(w: gguf.GGUFWriter, folder: Path, n_vocab: int) -> None:
    """Tokenizer, special tokens and chat template (as the converter's _set_vocab_gpt2 / _set_vocab_llama_hf)."""
    from transformers import AutoTokenizer  # heavy; only needed once per export

    tj_path = folder / "tokenizer.json"
    if not tj_path.is_file():
        raise UserError(f"{folder} has no tokenizer.json; GGUF export needs the tokenizer.")
    tj = json.loads(tj_path.read_text())
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise UserError(f"tokenizer type {model.get('type')!r} cannot be written to GGUF here (BPE only).")
    tok = AutoTokenizer.from_pretrained(folder)
    if model.get("byte_fallback"):
        vocab = gguf.LlamaHfVocab(folder)
        ranks = _merge_scores(model.get("merges") or [])
        tokens, scores, types = [], [], []
        for text, _, kind in vocab.all_tokens():
            tokens.append(text)
            scores.append(ranks.get(text.decode("utf-8", errors="replace"), -1000.0))
            types.append(kind)
        for i in range(len(tokens), n_vocab):
            tokens.append(f"[PAD{i}]".encode())
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        special = gguf.SpecialVocab(folder, n_vocab=len(tokens))
    else:
        tokens, types = _bpe_tokens(tok, n_vocab)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre_tokenizer_name(tok, tj))
        w.add_token_list(tokens)
        w.add_token_types(types)
        special = gguf.SpecialVocab(folder, load_merges=True)
    # whether BOS/EOS are prepended/appended: what the transformers tokenizer really does
    ids = tok("a")["input_ids"]
    special.add_special_token["bos"] = bool(tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id)
    special.add_special_token["eos"] = bool(tok.eos_token_id is not None and ids and ids[-1] == tok.eos_token_id)
    if special.chat_template is None and getattr(tok, "chat_template", None):
        special.chat_template = tok.chat_template
    special.add_to_gguf(w, quiet=True)


def _merge_scores(merges: list) -> dict[str, float]:
    """SentencePiece-style scores from BPE merges: the token made by merge k scores -k.

    llama.cpp's "llama" tokenizer merges the adjacent pair whose result scores highest, so these
    scores reproduce the merge order of tokenizer.json (gguf's LlamaHfVocab leaves every score at
    -1000, which loses it when the checkpoint has no tokenizer.model).
    """
    scores: dict[str, float] = {}
    for k, m in enumerate(merges):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        scores.setdefault(a + b, -float(k))
    return scores


def _bpe_tokens(tok, n_vocab: int) -> tuple[list[str], list[int]]:
    """Token strings and types for ids 0..n_vocab-1 (unused ids padded), as the converter's get_vocab_base."""
    vocab = tok.get_vocab()
    if vocab and max(vocab.values()) >= n_vocab:
        raise UserError(f"the tokenizer has ids up to {max(vocab.values())} but the model only {n_vocab} embeddings.")
    reverse = {i: t for t, i in vocab.items()}
    added = tok.get_added_vocab()
    decoder = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        text = reverse[i]
        if text in added:
            special = decoder[i].special if i in decoder else False
            looks = text.startswith("<|") and text.endswith("|>")
            types.append(gguf.TokenType.CONTROL if special or looks else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(text)
    return tokens, types


def pre_tokenizer_name(tok, tokenizer_json: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenization (``tokenizer.ggml.pre``).

    Known tokenizers by the converter's hash of a probe text's token ids; else by structure: a plain
    GPT-2 byte-level pre-tokenizer is ``gpt-2``, a known splitting regex before a byte-level step is
    its model's name (``qwen2``, ``llama-bpe``); anything else gets ``default`` with a warning.
    """
    digest = hashlib.sha256(str(tok.encode(_PRE_PROBE)).encode()).hexdigest()
    if digest in _PRE_BY_HASH:
        return _PRE_BY_HASH[digest]
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers") or []
    if (pre.get("type") == "Sequence" and len(steps) == 2 and steps[0].get("type") == "Split"
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
        name = _PRE_BY_REGEX.get((steps[0].get("pattern") or {}).get("Regex"))
        if name:
            return name
    log.warning("pre-tokenizer not recognised (hash %s): written as 'default'; llama.cpp may split text "
                "differently from transformers", digest[:16])
    return "default"


# ----------------------------------------------------------------------------- entry point
def check_output(out: str | os.PathLike, overwrite: bool) -> Path:
    """Validate the GGUF target before any work: refuse an existing file without overwrite, a folder,
    an unwritable parent."""
    target = Path(out).expanduser().resolve()
    if target.is_dir():
        raise UserError(f"{out} is a folder; name the .gguf file to write.")
    if target.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it.")
    if target.exists() and not _is_gguf(target):
        raise UserError(f"{out} exists and is not a GGUF file; --overwrite replaces only an earlier GGUF file.")
    probe = target.parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {target.parent}: permission denied.")
    return target


def _is_gguf(path: Path) -> bool:
    """Whether ``path`` is a GGUF file (its first four bytes are the magic ``GGUF``)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise UserError(f"GGUF dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    return dtype


def export_gguf(checkpoint: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "f16", arch: str = "auto",
                overwrite: bool = False) -> GgufResult:
    """Write ``checkpoint`` (a model folder) to the GGUF file ``out``; see the module docstring."""
    check_dtype(dtype)
    target = check_output(out, overwrite)
    ckpt = read_checkpoint(checkpoint)
    arch_name = target_arch(ckpt, arch)
    plan = _plan(ckpt, arch_name, dtype)
    embd = next((p for p in plan if p.gguf_name == "token_embd.weight"), None)
    if embd is None:
        raise UserError(f"{checkpoint} has no token embedding (model.embed_tokens.weight).")
    n_vocab = embd.shape[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    handles = {}
    try:
        for file in {p.file for p in plan}:
            handles[file] = safe_open(file, framework="pt")
        if ckpt.layout == "padded" and arch_name == "deci":
            _check_padding(ckpt, plan, handles)
        w = gguf.GGUFWriter(path=None, arch=arch_name)
        _general(w, ckpt)
        widths = _hparams(w, ckpt, arch_name, dtype, n_vocab)
        with tempfile.TemporaryDirectory(prefix="fbn-gguf-tokenizer-") as tok_dir:
            _vocab(w, tokenizer_folder(ckpt, Path(tok_dir)), n_vocab)
        freqs = _rope_freqs(ckpt.config)
        if freqs is not None:
            w.add_tensor_info(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", freqs.shape, freqs.dtype,
                              freqs.nbytes)
        for p in plan:
            nbytes, dt = _nbytes(p)
            w.add_tensor_info(p.gguf_name, p.shape, dt, nbytes, raw_dtype=p.qtype)
        w.write_header_to_file(path=tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        if freqs is not None:
            w.write_tensor_data(freqs)
        for p in plan:
            w.write_tensor_data(_load(p, handles))
        w.close()
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%s, %s, %d tensors)", target, arch_name, dtype, len(plan))
    return GgufResult(target, arch_name, dtype, widths, len(plan) + (freqs is not None), target.stat().st_size)


def _nbytes(p: _Planned) -> tuple[int, np.dtype]:
    """Bytes and numpy dtype of the stored tensor (quantized tensors are raw uint8 blocks)."""
    n = int(np.prod(p.shape))
    if p.qtype == gguf.GGMLQuantizationType.F32:
        return 4 * n, np.dtype(np.float32)
    if p.qtype == gguf.GGMLQuantizationType.F16:
        return 2 * n, np.dtype(np.float16)
    block, size = gguf.GGML_QUANT_SIZES[p.qtype]
    return n // block * size, np.dtype(np.float32)  # dtype other than uint8: shape is taken as given


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
