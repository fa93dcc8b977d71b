"""Per-channel views of one FFN layer that scores and compensation read.

Per-channel views of one FFN layer that scores and compensation read: the down projection's columns,
the energy of every weight a channel owns, and the calibration statistics of its signal."""

from __future__ import annotations

import torch

from fbn_prune.models.arch import Adapter
from fbn_prune.models.arch.base import channel_index


def down_columns(model, adapter: Adapter, layer: int) -> torch.Tensor:
    """The down projection's weight with one row per channel: (width, hidden) float64."""
    w = adapter.down_module(model, layer).weight.detach().double().cpu()
    return w if adapter.conv1d else w.T


def channel_weight_sq(model, adapter: Adapter, layer: int) -> torch.Tensor:
    """Sum of squares of every weight a channel owns: (width,) float64."""
    cols = down_columns(model, adapter, layer)
    width = cols.shape[0]
    total = (cols**2).sum(1)
    layer_mod = adapter.decoder_layers(model)[layer]
    for r in adapter.rows:
        w = layer_mod.get_submodule(r).weight.detach().double().cpu()
        w = w.T if adapter.conv1d else w  # (parts * width, hidden)
        rows = (w**2).sum(1)
        for p in range(adapter.fused_parts):
            total += rows[channel_index(torch.arange(width), width, adapter.fused_parts)[p * width : (p + 1) * width]]
    return total


def activation_stats(stats: dict[str, torch.Tensor], layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, variance, L2 norm) of each channel's signal over calibration tokens, each (width,), from the
    artifact's statistics (Networks.stats: ``count`` (1,), ``sum.i`` and ``sumsq.i`` (width_i,))."""
    n = float(stats["count"][0])
    mean = stats[f"sum.{layer}"] / n
    var = (stats[f"sumsq.{layer}"] / n - mean**2).clamp_min(0)
    return mean, var, stats[f"sumsq.{layer}"].sqrt()
