"""Network reconstruction: fold what the removed channels carried into the kept ones.

Channels of one functional network fire together, so a removed channel's signal is
largely predictable from the kept channels. With the calibration Gram matrix
G = X^T X / T of a layer's signal X (tokens, width), the least-squares prediction of the
removed channels R from the kept channels K is x_R ~= x_K B with

    B = (G_KK + ridge * mean(diag G_KK) * I)^-1 G_KR          shape (|K|, |R|)

and since the down projection is linear, W_K x_K + W_R x_R ~= (W_K + W_R B^T) x_K: the
compensation is a change of the kept columns of the down projection only (no new
parameters, every architecture and layout). FLAP's bias compensation (``bias``) is the
special case that predicts x_R by its calibration mean c_R and adds W_R c_R to the down
projection's bias: only for architectures whose down projection has one (GPT-2, OPT,
GPT-NeoX).

:func:`compensate` applies either to every layer of a model and gives the compensated tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fbn_prune._runtime.threads import lapack_threads
from fbn_prune.decompose.networks import Networks
from fbn_prune.select.channels import activation_stats, down_columns

DEFAULT_RIDGE = 1e-3


def removed(keep: torch.Tensor, width: int) -> torch.Tensor:
    """Sorted channel indices not in ``keep``: (width - len(keep),) long."""
    mask = torch.ones(width, dtype=torch.bool)
    mask[keep] = False
    return torch.nonzero(mask).flatten()


def predictor(g: torch.Tensor, keep: torch.Tensor, ridge: float = DEFAULT_RIDGE) -> torch.Tensor:
    """B such that x_R ~= x_K B, from the Gram matrix g (width, width). Shape (|K|, |R|) float32."""
    rem = removed(keep, g.shape[0])
    gkk = g[keep][:, keep]
    reg = ridge * gkk.diagonal().mean().clamp_min(1e-12) * torch.eye(len(keep), dtype=g.dtype)
    with lapack_threads(g.device):
        return torch.linalg.solve(gkk + reg, g[keep][:, rem]).float()


def compensated_columns(columns: torch.Tensor, keep: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Down-projection columns (width, hidden) with W_K += W_R B^T and the removed columns zeroed."""
    rem = removed(keep, columns.shape[0])
    out = torch.zeros_like(columns)
    out[keep] = columns[keep] + (b.to(columns.dtype) @ columns[rem])
    return out


def bias_shift(columns: torch.Tensor, keep: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """FLAP's bias compensation: W_R c_R, the removed channels' mean contribution, (hidden,).
    columns (width, hidden) float64, mean (width,) the channels' calibration means."""
    rem = removed(keep, columns.shape[0])
    return mean[rem].to(columns.dtype) @ columns[rem]


@dataclass
class Compensation:
    """What compensation changes, per layer i (K: kept channels, R: removed ones, of layer i).

    ``predictors[i]``: for ``lstsq`` B (|K|, |R|) float32 (x_R ~= x_K B); for ``bias`` (None, c_R) with c_R
    (|R|,) float32 the removed channels' calibration means (what export/verify.py replays).
    ``replace``: state-dict key -> the compensated full-size tensor in the model's dtype: the down
    projection's weight (``lstsq``, (hidden, width), or (width, hidden) for Conv1D) or its bias (``bias``,
    (hidden,)). Removed channels' columns are zero; surgery drops them."""

    predictors: list
    replace: dict[str, torch.Tensor]


def compensate(model, adapter, kept: list[torch.Tensor], artifact: Networks, ridge: float,
               mode: str = "lstsq") -> Compensation:
    """Per-layer compensation of the channels ``kept[i]`` (sorted indices (|K_i|,)) of ``model``, from the
    networks ``artifact``'s Gram matrices (``lstsq``) or activation means (``bias``; the caller has checked
    that the down projection has a bias)."""
    predictors, replace = [], {}
    if mode == "bias":
        stats = artifact.stats()
        for i, keep in enumerate(kept):
            down = adapter.down_module(model, i)
            mean = activation_stats(stats, i)[0]
            predictors.append((None, mean[removed(keep, mean.numel())].float()))
            shift = bias_shift(down_columns(model, adapter, i), keep, mean)
            replace[f"{adapter.layers}.{i}.{adapter.down}.bias"] = (down.bias.detach().double().cpu() + shift).to(
                down.bias.dtype).contiguous()
        return Compensation(predictors, replace)
    for i, keep in enumerate(kept):
        b = predictor(artifact.gram(i), keep, ridge)
        predictors.append(b)
        w = adapter.down_module(model, i).weight
        cols = compensated_columns(down_columns(model, adapter, i), keep, b.double())
        replace[f"{adapter.layers}.{i}.{adapter.down}.weight"] = (cols if adapter.conv1d else cols.T).to(w.dtype).contiguous()
    return Compensation(predictors, replace)
