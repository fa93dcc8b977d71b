"""Writing a checkpoint as one GGUF file for llama.cpp, streamed and renamed into place.

Write a checkpoint as one GGUF file for llama.cpp (llama-cpp-python, ollama, LM Studio) with the
``gguf`` library, the way llama.cpp's own ``convert_hf_to_gguf.py`` writes the same model.

Layouts and the llama.cpp architecture they become:

- ``uniform``: the original architecture (``llama`` for Llama and Mistral, ``qwen2``, ``qwen3``),
  one global ``feed_forward_length``.
- ``padded``: ``deci`` with each layer's real width: the zero padding is dropped, which changes no
  output (a zero channel adds act(0) * 0 = 0). ``arch="original"`` keeps the padding instead.
- ``exact``: ``deci``, llama.cpp's architecture for Llama-family blocks of per-layer shape
  (``feed_forward_length``, ``attention.head_count`` and ``attention.head_count_kv`` are per-layer
  arrays).
- ``deci`` (a DeciLM / Nemotron-NAS config, Llama blocks): ``deci`` as exact, each width derived from
  ``block_configs[i].ffn.ffn_mult`` the way vLLM derives it (export/deci.py).

As in the converter: tensor names come from gguf's ``TensorNameMap``; for the architectures whose
rotary embedding llama.cpp applies to adjacent pairs (``llama``, ``deci``) the rows of the Q and K
projections (and their biases) are permuted from transformers' half-split order; 1-D tensors stay
float32; q8_0 falls back to f16 for a matrix whose rows are not a multiple of 32. The tokenizer
is written from the checkpoint's ``tokenizer.json``: byte-level BPE as ``gpt2`` (tokens, token
types, merges, the pre-tokenizer name llama.cpp knows it by) or, for a byte-fallback BPE (Llama 2,
Mistral v0.1-0.3), as ``llama`` through gguf's ``LlamaHfVocab`` with scores that keep the merge order;
special token ids, whether BOS/EOS are added, and the chat template come from the tokenizer files.

The file is streamed (one tensor in memory at a time), written beside the target and renamed
into place when complete. The tensors: :mod:`fbn_prune.export.gguf_tensors`; the tokenizer:
:mod:`fbn_prune.export.gguf_vocab`; the target checks (no gguf needed): :mod:`fbn_prune.export.gguf_target`.

Imports the optional ``gguf`` package: the command line imports this module only when a GGUF is written.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from safetensors import safe_open

from fbn_prune._io.atomic import replacing
from fbn_prune.config.layouts import layout_for
from fbn_prune.errors import UserError
from fbn_prune.export.gguf_target import check_dtype, check_output
from fbn_prune.export.gguf_tensors import (
    Checkpoint,
    check_padding,
    load_tensor,
    plan_tensors,
    read_model_folder,
    target_arch,
    tensor_nbytes,
)
from fbn_prune.export.gguf_vocab import tokenizer_folder, write_vocab

log = logging.getLogger(__name__)

_FILE_TYPE = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


@dataclass(frozen=True)
class GgufResult:
    """What was written: the file, its llama.cpp architecture, dtype, per-layer FFN widths, size."""

    path: Path
    architecture: str
    dtype: str
    widths: list[int]
    tensors: int
    bytes: int


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
    factor = float(rope.get("factor", 8.0))
    lo, hi = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    wavelen = 2 * np.pi / freqs
    smooth = (old_ctx / wavelen - lo) / (hi - lo)
    mid = 1 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old_ctx / hi, 1.0, np.where(wavelen > old_ctx / lo, factor, mid))
    return out.astype(np.float32)


def _general(w: gguf.GGUFWriter, ckpt: Checkpoint) -> None:
    recorded = ckpt.info.base_model if ckpt.info is not None else None
    base = recorded or ckpt.config.get("_name_or_path") or ckpt.folder.name
    name = str(base).rstrip("/").split("/")[-1]
    if ckpt.info is not None and ckpt.info.to_dict():
        name += f" (fbn_prune {ckpt.info.layout if ckpt.info.has('layout') else ckpt.layout})"
    w.add_name(name)
    if ckpt.info is not None and ckpt.info.license:
        w.add_license(str(ckpt.info.license))
    hub = ckpt.info.base_model_hub_id if ckpt.info is not None else None
    if hub:
        w.add_base_model_count(1)
        w.add_base_model_name(0, hub.split("/")[-1])
        w.add_base_model_repo_url(0, f"https://huggingface.co/{hub}")


def export_gguf(checkpoint: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "f16", arch: str = "auto",
                overwrite: bool = False) -> GgufResult:
    """Write ``checkpoint`` (a model folder) to the GGUF file ``out``; see the module docstring."""
    check_dtype(dtype)
    target = check_output(out, overwrite)
    ckpt = read_model_folder(checkpoint)
    arch_name = target_arch(ckpt, arch)
    plan = plan_tensors(ckpt, arch_name, dtype)
    embd = next((p for p in plan if p.gguf_name == "token_embd.weight"), None)
    if embd is None:
        raise UserError(f"{checkpoint} has no token embedding (model.embed_tokens.weight).")
    n_vocab = embd.shape[0]
    handles = {}
    with replacing(target, keep_mode=False) as tmp:
        for file in {p.file for p in plan}:
            handles[file] = safe_open(file, framework="pt")
        if layout_for(ckpt.layout).zero_padded and arch_name == "deci":
            check_padding(ckpt, plan, handles)
        w = gguf.GGUFWriter(path=None, arch=arch_name)
        _general(w, ckpt)
        widths = _hparams(w, ckpt, arch_name, dtype, n_vocab)
        with tempfile.TemporaryDirectory(prefix="fbn-gguf-tokenizer-") as tok_dir:
            write_vocab(w, tokenizer_folder(ckpt.folder, ckpt.config, Path(tok_dir)), n_vocab)
        freqs = _rope_freqs(ckpt.config)
        if freqs is not None:
            w.add_tensor_info(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", freqs.shape, freqs.dtype,
                              freqs.nbytes)
        for p in plan:
            nbytes, dt = tensor_nbytes(p)
            w.add_tensor_info(p.gguf_name, p.shape, dt, nbytes, raw_dtype=p.qtype)
        w.write_header_to_file(path=tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        if freqs is not None:
            w.write_tensor_data(freqs)
        for p in plan:
            w.write_tensor_data(load_tensor(p, handles))
        w.close()
    log.info("wrote %s (%s, %s, %d tensors)", target, arch_name, dtype, len(plan))
    return GgufResult(target, arch_name, dtype, widths, len(plan) + (freqs is not None), target.stat().st_size)
