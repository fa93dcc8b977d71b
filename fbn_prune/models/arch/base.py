"""The adapter: everything fbn_prune needs to know about one MLP family.

An FFN "channel" (neuron) j of layer i is one intermediate unit: a row of each
up-type projection (``rows``; for fused projections, row j of every part) and a
column of the down projection (``down``). The neuron *signal* is the input of the
down projection, shape (tokens, width).

Weights are addressed by names in the model's state dict, so slicing is a pure
function from tensors to tensors (see :mod:`fbn_prune.export.surgery`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Adapter:
    """Where the FFNs of one architecture family live and how their channels are laid out.

    Attributes:
        model_types: ``config.model_type`` values this adapter handles.
        layers: dotted path from the CausalLM to the ``nn.ModuleList`` of decoder layers.
        rows: module paths, relative to a layer, whose *output* features are channels.
        down: module path, relative to a layer, whose *input* features are channels.
        width_key: the config attribute that holds the FFN width.
        fused_parts: how many channel blocks each ``rows`` module stacks (Phi-3's
            ``gate_up_proj`` holds gate then up: 2).
        conv1d: GPT-2 style ``Conv1D`` modules (weight stored as (in, out)).
        gated: the MLP multiplies a gate by an up projection (3 matrices per channel).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    rows: tuple[str, ...]
    down: str
    width_key: str = "intermediate_size"
    fused_parts: int = 1
    conv1d: bool = False
    gated: bool = True

    # ---- model navigation -------------------------------------------------
    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers)

    def num_layers(self, model: nn.Module) -> int:
        return len(self.decoder_layers(model))

    def down_module(self, model: nn.Module, layer: int) -> nn.Module:
        return model.get_submodule(f"{self.layers}.{layer}.{self.down}")

    def channel_width(self, model: nn.Module, layer: int) -> int:
        """FFN channels layer ``layer`` of ``model`` holds now (its down projection's input features)."""
        w = self.down_module(model, layer).weight
        return int(w.shape[0] if self.conv1d else w.shape[1])

    def channel_widths(self, model: nn.Module) -> list[int]:
        """channel_width of every layer."""
        return [self.channel_width(model, i) for i in range(self.num_layers(model))]

    def ffn_width(self, config) -> int:
        width = getattr(config, self.width_key, None)
        if width is None and self.width_key == "n_inner":  # GPT-2 default
            width = 4 * config.n_embd
        return int(width)

    def hidden_size(self, config) -> int:
        return int(getattr(config, "hidden_size", None) or config.n_embd)

    # ---- state-dict layout ------------------------------------------------
    def slice_rules(self, layer: int) -> list[tuple[str, int, int]]:
        """(parameter name, channel dim, parts) for every tensor that carries layer's channels.

        Biases of ``rows`` modules carry channels on dim 0; the down projection's
        bias does not carry channels and is absent here.
        """
        rules = []
        out_dim, in_dim = (1, 0) if self.conv1d else (0, 1)
        for r in self.rows:
            base = f"{self.layers}.{layer}.{r}"
            rules.append((f"{base}.weight", out_dim, self.fused_parts))
            rules.append((f"{base}.bias", 0, self.fused_parts))
        rules.append((f"{self.layers}.{layer}.{self.down}.weight", in_dim, 1))
        return rules

    def down_bias_name(self, layer: int) -> str:
        return f"{self.layers}.{layer}.{self.down}.bias"

    def params_per_channel(self, config) -> int:
        """Parameters removed with one channel: one row per up-type matrix and part, one down column (+ row biases)."""
        h = self.hidden_size(config)
        n_rows = len(self.rows) * self.fused_parts
        bias = n_rows if self.has_row_bias(config) else 0
        return h * (n_rows + 1) + bias

    def has_row_bias(self, config) -> bool:
        for key in ("mlp_bias", "enable_bias"):
            if hasattr(config, key):
                return bool(getattr(config, key))
        return self.name in ("gpt2", "gpt_neox")

    def supports_down_bias(self, config) -> bool:
        """True when the architecture's config can hold a bias on the down projection."""
        return self.name in ("gpt2", "gpt_neox", "opt") or hasattr(config, "mlp_bias")

    def with_width(self, config_dict: dict, width: int) -> dict:
        """A copy of a config dict whose FFN width is ``width``."""
        out = dict(config_dict)
        out[self.width_key] = int(width)
        return out


def resize_ffn_modules(model: nn.Module, adapter: Adapter, widths: list[int]) -> None:
    """Replace each layer's FFN modules by empty ones of the given widths (in place, for fresh models).

    Used by the exact layout's shipped modeling file (which inlines the same logic) and by tests.
    """
    for i, n in enumerate(widths):
        layer = model.get_submodule(f"{adapter.layers}.{i}")
        for r in adapter.rows:
            _replace(layer, r, _resized(layer.get_submodule(r), out=n * adapter.fused_parts, conv1d=adapter.conv1d))
        _replace(layer, adapter.down, _resized(layer.get_submodule(adapter.down), inp=n, conv1d=adapter.conv1d))


def _resized(mod: nn.Module, out: int | None = None, inp: int | None = None, conv1d: bool = False) -> nn.Module:
    w = mod.weight
    # `is None`, not `or`: a layer pruned to width 0 must get 0, not its old width
    if conv1d:  # Conv1D(nf=out, nx=in), weight (in, out)
        from transformers.pytorch_utils import Conv1D

        new = Conv1D(w.shape[1] if out is None else out, w.shape[0] if inp is None else inp)
    else:
        in_f = w.shape[1] if inp is None else inp
        out_f = w.shape[0] if out is None else out
        new = nn.Linear(in_f, out_f, bias=mod.bias is not None)
    return new.to(dtype=w.dtype)


def _replace(parent: nn.Module, path: str, new: nn.Module) -> None:
    *head, last = path.split(".")
    owner = parent.get_submodule(".".join(head)) if head else parent
    setattr(owner, last, new)


def channel_index(keep: torch.Tensor, width: int, parts: int) -> torch.Tensor:
    """Indices into a tensor dim that stacks ``parts`` blocks of ``width`` channels. Shape (parts * len(keep),)."""
    return torch.cat([keep + p * width for p in range(parts)])
