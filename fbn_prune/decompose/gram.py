"""The Gram matrix of each layer's captured signal, which compensated elimination reads.

The Gram matrix G = X^T X / T of each layer's captured signal X (tokens, width): the statistic that
least-squares compensation (select/compensate.py) and compensated elimination (select/eliminate.py) read.
Written into a networks artifact as ``gram/layer{i:03d}.safetensors`` (see networks.py).

X^T X is summed run by run (:func:`gram_sum` of each run's rows, float64), and the runs' sums are added
in run order (:func:`fbn_prune._runtime.world.ordered_sum`): under torch.distributed each rank sums the
runs it captured and the partial sums travel along the ranks, so several processes write the same
bits as one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from fbn_prune._runtime import world
from fbn_prune.capture.activations import CaptureIndex
from fbn_prune.decompose.networks import gram_path


def gram_sum(signal: np.ndarray, chunk: int = 4096, device: str | torch.device = "cpu") -> torch.Tensor:
    """X^T X of a (tokens, width) float16 signal, streamed in row chunks: (width, width) float64 on the CPU.
    Each chunk's float32 product is computed on ``device`` (a GPU makes 70B-wide layers minutes instead
    of hours) and accumulated there in float64."""
    tokens, width = signal.shape
    g = torch.zeros(width, width, dtype=torch.float64, device=device)
    for start in range(0, tokens, chunk):
        x = torch.from_numpy(np.asarray(signal[start : start + chunk], dtype=np.float32)).to(device)
        g += (x.T @ x).double()
    return g.cpu()


def gram(signal: np.ndarray, chunk: int = 4096, device: str | torch.device = "cpu") -> torch.Tensor:
    """G = X^T X / T of one (tokens, width) float16 signal: (width, width) float64 on the CPU."""
    return gram_sum(signal, chunk, device) / max(signal.shape[0], 1)


def write_grams(index: CaptureIndex, folder: str | Path, n_tokens: int, progress: bool = True,
                device: str = "cpu") -> None:
    """Each layer's Gram matrix (width, width), float32, from the runs of ``index`` (this rank's capture)
    and, under torch.distributed, the other ranks' runs (``n_tokens``: the tokens of every run). Rank 0
    writes the files; layers whose file exists are skipped (rank 0 decides, so every rank agrees)."""
    (Path(folder) / "gram").mkdir(parents=True, exist_ok=True)
    todo = world.broadcast([i for i in range(len(index.widths)) if not gram_path(folder, i).is_file()],
                           "agreeing on the Gram matrices to compute")
    for i in tqdm(todo, desc="gram", unit="layer", disable=not progress):
        parts = (gram_sum(index.signal(i, r), device=device) for r in index.held)
        w = index.widths[i]
        total = world.ordered_sum(parts, (w, w), f"summing layer {i}'s Gram matrix")
        if total is None:  # not rank 0
            continue
        target = gram_path(folder, i)
        tmp = target.with_suffix(".tmp")
        save_file({"gram": (total / max(n_tokens, 1)).float()}, str(tmp))
        os.replace(tmp, target)
