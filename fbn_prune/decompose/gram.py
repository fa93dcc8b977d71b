"""The Gram matrix of each layer's captured signal, which compensated elimination reads.

The Gram matrix G = X^T X / T of each layer's captured signal X (tokens, width): the statistic that
least-squares compensation (select/compensate.py) and compensated elimination (select/eliminate.py) read.
Written into a networks artifact as ``gram/layer{i:03d}.safetensors`` (see networks.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from fbn_prune.capture.activations import CaptureIndex
from fbn_prune.decompose.networks import gram_path


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


def write_grams(index: CaptureIndex, folder: str | Path, progress: bool = True, device: str = "cpu") -> None:
    """Each layer's Gram matrix (width, width), float32, streamed from the capture one layer at a time
    (products on ``device``: cpu, cuda or cuda:N)."""
    (Path(folder) / "gram").mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(index.widths)), desc="gram", unit="layer", disable=not progress):
        target = gram_path(folder, i)
        if target.is_file():
            continue
        tmp = target.with_suffix(".tmp")
        save_file({"gram": gram(index.signal(i), device=device).float()}, str(tmp))
        os.replace(tmp, target)
