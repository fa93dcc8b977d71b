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
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_RIDGE = 1e-3


def gram(signal: np.ndarray, chunk: int = 4096, device: str | torch.device = "cpu") -> torch.Tensor:
    """G = X^T X / T of a (tokens, width) float16 signal, streamed in row chunks: (width, width) float64
    on the CPU. Each chunk's float32 product is computed on ``device`` (a GPU makes 70B-wide layers
    minutes instead of hours) and accumulated there in float64."""
    tokens, width = signal.shape
    g = torch.zeros(width, width, dtype=torch.float64, device=device)
    for start in range(0, tokens, chunk):
        x = torch.from_numpy(np.asarray(signal[start : start + chunk], dtype=np.float32)).to(device)
        g += (x.T @ x).double()
    return (g / max(tokens, 1)).cpu()


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
