"""Build the smaller model: a fresh config, sliced tensors copied in (the input is never mutated).

Layouts (see README):
- ``uniform``: every layer keeps the same number of channels; the stock config with a
  smaller width.
- ``padded``: each layer's kept channels first, then zero channels up to the widest
  layer (rounded up to ``round_to``); stock config. Exact: a zero channel contributes
  act(0) * 0 = 0 (SwiGLU) or act(0) = 0 through a zero column (ReLU/GELU MLPs).
- ``exact``: every layer has its own width; config.json lists them and names the
  shipped ``modeling_fbn.py`` (loads with ``trust_remote_code=True``).
- ``deci`` (Llama only): every layer has its own width, a multiple of 256, stated as a DeciLM /
  Nemotron-NAS config (export/deci.py) that vLLM serves natively; transformers loads it through the
  same shipped ``modeling_fbn.py`` (its ``DeciLM*`` classes).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import sys
import tempfile
import types
from importlib import resources
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from fbn_prune.config.layouts import DECI, EXACT, Layout, layout_for
from fbn_prune.errors import UserError
from fbn_prune.export.deci import deci_config_data
from fbn_prune.export.padding import padding_note
from fbn_prune.models.arch import Adapter
from fbn_prune.models.arch.base import channel_index

log = logging.getLogger(__name__)

MODELING_FILE = "modeling_fbn.py"


def target_widths(kept: list[torch.Tensor], layout: str, round_to: int, original: list[int]) -> list[int]:
    """Stored FFN width of each layer for a layout (padded: the widest kept set rounded up)."""
    counts = [k.numel() for k in kept]
    if not layout_for(layout).per_layer:
        if len(set(counts)) != 1:
            raise ValueError("uniform layout needs equal kept counts in every layer")
        return counts
    if layout_for(layout).zero_padded:
        pad = min(max(original), math.ceil(max(counts) / round_to) * round_to)
        return [pad] * len(counts)
    return counts


def slice_state(state: dict[str, torch.Tensor], adapter: Adapter, kept: list[torch.Tensor],
                widths: list[int], original: list[int]) -> dict[str, torch.Tensor]:
    """A new state dict with each layer's channel tensors reduced to ``kept`` (zero-padded to ``widths``).

    Tensors that carry no channels are shared, not copied. Shapes: a channel dim of size
    parts * original[i] becomes parts * widths[i].
    """
    out = dict(state)
    for i, keep in enumerate(kept):
        for name, dim, parts in adapter.slice_rules(i):
            if name not in state:
                continue
            t = state[name]
            sliced = t.index_select(dim, channel_index(keep.to(t.device), original[i], parts))
            if widths[i] > keep.numel():  # pad each part block with zeros
                blocks = sliced.chunk(parts, dim=dim)
                pad_shape = list(t.shape)
                pad_shape[dim] = widths[i] - keep.numel()
                zeros = torch.zeros(pad_shape, dtype=t.dtype, device=t.device)
                sliced = torch.cat([x for blk in blocks for x in (blk, zeros)], dim=dim)
            out[name] = sliced.contiguous()
    return out


def check_fits(layout: str, model_type: str, widths: list[int], original: list[int]) -> None:
    """UserError (one line) when ``layout`` cannot write this model: a model type it does not support, or a
    stored width that is not a multiple of its ``width_step``."""
    record = layout_for(layout)
    record.check_model_type(model_type)  # pipeline checks both before the capture; this guards direct callers
    bad = [i for i, w in enumerate(widths) if w % record.width_step]
    if bad:
        full = " (unpruned layers keep the model's own width)" if any(widths[i] == original[i] for i in bad) else ""
        raise UserError(f"--layout {record.name} stores every FFN width as a multiple of {record.width_step}; "
                        f"layer{'s' * (len(bad) > 1)} {', '.join(map(str, bad))} would keep "
                        f"{', '.join(str(widths[i]) for i in bad)}{full}: use --layout exact, or --round-to and "
                        f"--min-width multiples of {record.width_step} on a model whose FFN width is one.")


def pruned_config(model, adapter: Adapter, widths: list[int], layout: str):
    """The config of the pruned model (a fresh object; the original config is untouched)."""
    data = model.config.to_dict()
    data.pop("quantization_config", None)
    record = layout_for(layout)
    if not record.remote_code:
        return AutoConfig.for_model(**adapter.with_width(data, widths[0]))
    base_type = data.pop("model_type")
    data = _REMOTE_CONFIG[record.name](data, base_type, adapter, [int(w) for w in widths])
    data.update(architectures=[record.architecture], auto_map=_auto_map(record))
    return getattr(exact_module(base_type), record.architecture).config_class(**data)


def _exact_config(data: dict, base_type: str, adapter: Adapter, widths: list[int]) -> dict:
    """The exact layout's config: the base config plus ``fbn_base_model_type`` and ``fbn_ffn`` (FFN paths, widths)."""
    return {**data, "fbn_base_model_type": base_type,
            "fbn_ffn": {"layers": adapter.layers, "rows": list(adapter.rows), "down": adapter.down,
                        "parts": adapter.fused_parts, "conv1d": adapter.conv1d, "widths": widths}}


def _deci_config(data: dict, base_type: str, adapter: Adapter, widths: list[int]) -> dict:
    """The deci layout's config: DeciLM ``block_configs`` (see export/deci.py; model type ``nemotron-nas`` comes
    with the config class) and ``fbn_base_model_type``, so fbn_prune reads the checkpoint as its base architecture."""
    return {**deci_config_data(data, widths), "fbn_base_model_type": base_type}


_REMOTE_CONFIG = {EXACT.name: _exact_config, DECI.name: _deci_config}
"""The config writer of each layout that ships modeling_fbn.py, by layout name."""


def _auto_map(record: Layout) -> dict[str, str]:
    """auto_map of a remote-code layout: its ``<Prefix>Config``, ``<Prefix>Model`` (what vLLM's Transformers
    backend builds) and ``<Prefix>ForCausalLM`` in the shipped modeling file."""
    module, prefix = Path(MODELING_FILE).stem, record.architecture.removesuffix("ForCausalLM")
    return {"AutoConfig": f"{module}.{prefix}Config", "AutoModel": f"{module}.{prefix}Model",
            "AutoModelForCausalLM": f"{module}.{record.architecture}"}


def modeling_source(base_model_type: str) -> str:
    """The exact layout's modeling file, specialised to the base architecture."""
    text = resources.files("fbn_prune.export.templates").joinpath(MODELING_FILE).read_text()
    return text.replace("{base_model_type}", base_model_type)


@functools.cache
def exact_module(base_model_type: str) -> types.ModuleType:
    """The shipped modeling file imported in-process, so export builds with the very classes users load."""
    folder = Path(tempfile.mkdtemp(prefix="fbn-modeling-"))
    path = folder / f"modeling_fbn_{base_model_type}.py"
    path.write_text(modeling_source(base_model_type))
    spec = importlib.util.spec_from_file_location(f"fbn_prune._modeling_fbn_{base_model_type}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_pruned(model, adapter: Adapter, kept: list[torch.Tensor], layout: str, round_to: int = 1,
                 dtype: torch.dtype | None = None, replace: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The pruned model as a new module on the CPU, weights sliced from ``model``.

    kept[i]: sorted original channel indices of layer i, shape (n_i,).
    replace: full-size tensors used instead of the model's own before slicing (compensated
    down projections); the model itself is not touched.
    """
    original = adapter.channel_widths(model)
    widths = target_widths(kept, layout, round_to, original)
    check_fits(layout, model.config.model_type, widths, original)
    if note := padding_note(layout, [k.numel() for k in kept], widths, original):
        log.warning(note)
    config = pruned_config(model, adapter, widths, layout)
    state = slice_state({**model.state_dict(), **(replace or {})}, adapter, kept, widths, original)
    dtype = dtype or next(model.parameters()).dtype
    with init_empty_weights(include_buffers=False):
        if layout_for(layout).remote_code:
            new = getattr(exact_module(model.config.model_type), layout_for(layout).architecture)(config).to(dtype)
        else:
            new = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {k: v.to("cpu", dtype) if v.is_floating_point() else v.to("cpu") for k, v in state.items()}
    new.load_state_dict(state, strict=True, assign=True)
    new.tie_weights()
    new.generation_config = model.generation_config
    new.eval()
    return new
