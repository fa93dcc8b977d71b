"""Which tensors a GGUF file holds and how each is made from the checkpoint's safetensors, for llama.cpp.

:func:`read_model_folder` reads a folder's layout and per-layer FFN widths; :func:`target_arch` picks the
llama.cpp architecture (see :mod:`fbn_prune.export.gguf`); :func:`plan_tensors` lists every output tensor
from the safetensors headers alone: its gguf name (gguf's ``TensorNameMap``), shape, the rows or columns a
narrowed layer keeps, whether its rows are permuted (the architectures whose rotary embedding llama.cpp
applies to adjacent pairs, ``llama`` and ``deci``), and its stored type (1-D tensors stay float32; q8_0
falls back to f16 for a matrix whose rows are not a multiple of 32). :func:`load_tensor` then reads one
tensor at a time.

Imports the optional ``gguf`` package: only :mod:`fbn_prune.export.gguf` imports this module.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors import safe_open

from fbn_prune.config.layouts import DECI, EXACT, PADDED, UNIFORM, layout_for
from fbn_prune.errors import UserError
from fbn_prune.export.deci import DECI_MODEL_TYPE, deci_widths
from fbn_prune.export.provenance import PROVENANCE_FILE, Provenance, read_provenance

ARCH_CHOICES = ("auto", "original", "deci")

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
    info: Provenance | None = None  # fbn_prune.json; None for a folder fbn_prune did not write

    @property
    def n_layers(self) -> int:
        return len(self.widths)


def read_model_folder(folder: str | os.PathLike) -> Checkpoint:
    """The layout and shape of a checkpoint folder; UserError when it is not one the writer handles."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise UserError(f"{folder} is not a model folder (no config.json).")
    config = json.loads((path / "config.json").read_text())
    info = read_provenance(path) if (path / PROVENANCE_FILE).is_file() else None
    deci = config.get("model_type") == DECI_MODEL_TYPE  # DeciLM / Nemotron-NAS: Llama blocks, per-layer widths
    model_type = "llama" if deci else config.get("fbn_base_model_type") or config.get("model_type")
    family = FAMILIES.get(model_type)
    if family is None:
        raise UserError(f"GGUF export supports {', '.join(FAMILIES)} models; {folder} is {model_type!r}.")
    n_layers = int(config["num_hidden_layers"])
    if deci:
        try:
            widths = deci_widths(config)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{folder}: a DeciLM config fbn_prune cannot write as GGUF ({e}).") from e
        return Checkpoint(path, config, family, DECI.name, widths, list(widths), info)
    if config.get("fbn_ffn"):
        widths = [int(w) for w in config["fbn_ffn"]["widths"]]
        return Checkpoint(path, config, family, EXACT.name, widths, list(widths), info)
    stored = [int(config["intermediate_size"])] * n_layers
    if info is not None and info.layout == PADDED.name and len(info.widths or []) == n_layers:
        return Checkpoint(path, config, family, PADDED.name, [int(w) for w in info.widths], stored, info)
    return Checkpoint(path, config, family, UNIFORM.name, list(stored), stored, info)


def target_arch(ckpt: Checkpoint, arch: str = "auto") -> str:
    """The llama.cpp architecture ``ckpt`` is written as (see the module docstring)."""
    if arch not in ARCH_CHOICES:
        raise UserError(f"--arch must be one of {', '.join(ARCH_CHOICES)}, not {arch!r}.")
    if arch == "auto":
        arch = "original" if not layout_for(ckpt.layout).per_layer else "deci"
    if arch == "original":
        if layout_for(ckpt.layout).remote_code:
            raise UserError(f"the {ckpt.layout} layout has per-layer FFN widths, which only llama.cpp's deci "
                            "architecture holds; use --arch deci (or auto).")
        return ckpt.family.arch
    if not ckpt.family.deci:
        raise UserError(f"{ckpt.family.model_type} cannot be written as deci (supported: "
                        f"{', '.join(f.model_type for f in FAMILIES.values() if f.deci)}); "
                        + ("export a uniform or padded layout." if layout_for(ckpt.layout).remote_code
                           else "use --arch original."))
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


@dataclass(frozen=True)
class PlannedTensor:
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


def plan_tensors(ckpt: Checkpoint, arch: str, dtype: str) -> list[PlannedTensor]:
    """Every output tensor in write order, from the safetensors headers alone."""
    cfg = ckpt.config
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], ckpt.n_layers)
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    permute = arch == "deci" or ckpt.family.permute_qk
    narrow = arch == "deci"
    tied = bool(cfg.get("tie_word_embeddings", False))
    plan: list[PlannedTensor] = []
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
                plan.append(PlannedTensor(name, file, new, out_shape, rows, cols, heads, _qtype(new, out_shape, dtype)))
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


def load_tensor(p: PlannedTensor, handles: dict) -> np.ndarray:
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


def check_padding(ckpt: Checkpoint, plan: list[PlannedTensor], handles: dict) -> None:
    """Padded layout written narrow: the channels beyond each layer's width must be zero."""
    for p in plan:
        if p.rows is None and p.cols is None:
            continue
        t = handles[p.file].get_tensor(p.hf_name)
        rest = t[p.rows:] if p.rows is not None else t[:, p.cols:]
        if rest.numel() and bool(rest.ne(0).any()):
            raise UserError(f"{p.hf_name} has nonzero channels beyond the layer's width in {ckpt.folder}; "
                            "write it with --arch original to keep them.")


def tensor_nbytes(p: PlannedTensor) -> tuple[int, np.dtype]:
    """Bytes and numpy dtype of the stored tensor (quantized tensors are raw uint8 blocks)."""
    n = int(np.prod(p.shape))
    if p.qtype == gguf.GGMLQuantizationType.F32:
        return 4 * n, np.dtype(np.float32)
    if p.qtype == gguf.GGMLQuantizationType.F16:
        return 2 * n, np.dtype(np.float16)
    block, size = gguf.GGML_QUANT_SIZES[p.qtype]
    return n // block * size, np.dtype(np.float32)  # dtype other than uint8: shape is taken as given
