"""Greedy compensated elimination: the order in which a layer's channels can go at least cost.

Greedy compensated elimination: the order in which a layer's channels can be removed when
every removal is followed by least-squares reconstruction from the channels that remain.

With the calibration Gram matrix H = X^T X / T (+ ridge) of a layer's signal X (tokens, width)
and the down projection's columns w_j (one hidden-size row per channel), removing channel j
and letting the remaining channels absorb what it carried (compensate.py) costs

    cost_j = ||w_j||^2 / [H^-1]_jj * prior_j

in output squared error per token (the optimal-brain-surgeon cost of a structured column).
``prior_j`` is an importance multiplier (1 for pure reconstruction; network membership for
``fbn``). After each removal the remaining columns take the optimal update and H^-1 loses
row and column j, so the next cost already accounts for the compensation. A channel's score is
the running maximum of the costs paid up to its removal (strictly increasing): monotone in elimination order, so the
lowest scores are removed first whatever the budget, and in output-error units across layers.

Channels of one functional network co-fire: Gram entries inside a network are large, so a
network member whose network survives in other members costs little (its signal is
predictable), while a lone high-energy channel costs a lot. Activation scores (FLAP, Wanda)
cannot see this; that is the difference the benchmark measures.
"""

from __future__ import annotations

import math

import torch

from fbn_prune._runtime.threads import lapack_threads
from fbn_prune.select.compensate import DEFAULT_RIDGE


def elimination_scores(g: torch.Tensor, columns: torch.Tensor, ridge: float = DEFAULT_RIDGE,
                       prior: torch.Tensor | None = None, block: int | None = None,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """Scores (width,) float64 on the CPU from the Gram matrix g (width, width) and the down columns
    (width, hidden); higher = removed later.

    Channels leave ``block`` at a time (default width // 128: 12 for 1,536, 86 for 11,008): the
    ``block`` cheapest by their current cost, removed jointly with the exact joint update.
    The last block's survivors score above every removed channel.

    The working set shrinks with every block (only surviving rows of H^-1 and W are kept and
    updated), so a layer costs about n^3 + n^2 (2 n / 3 + hidden) float64 flops for
    n = width; ``device`` runs it on a GPU (float64), which matters from 7B-sized layers up."""
    n = g.shape[0]
    block = block or max(1, n // 128)
    dev = torch.device(device)
    h = g.to(dev, torch.float64)
    h = h + ridge * h.diagonal().mean().clamp_min(1e-12) * torch.eye(n, dtype=torch.float64, device=dev)
    with lapack_threads(dev):
        hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))  # (m, m) over the m surviving channels; h is SPD
    del h
    w = columns.to(dev, torch.float64)  # (m, hidden)
    hidden = w.shape[1]
    p = torch.ones(n, dtype=torch.float64, device=dev) if prior is None else prior.to(dev, torch.float64)
    idx = torch.arange(n, device=dev)  # original channel index of each surviving row
    score = torch.zeros(n, dtype=torch.float64)
    running = 0.0
    while idx.numel() > block:
        cost = (w * w).sum(1) / hinv.diagonal().clamp_min(1e-30) * p
        r = torch.argsort(cost)[:block]  # local rows, cheapest first
        for j, c in zip(idx[r].tolist(), cost[r].tolist()):
            running = max(math.nextafter(running, math.inf), c)  # strictly increasing
            score[j] = running
        keep = torch.ones(idx.numel(), dtype=torch.bool, device=dev)
        keep[r] = False
        # exact joint removal of rows r: W_k -= H^-1_kr (H^-1_rr)^-1 W_r ; H^-1_kk -= H^-1_kr (H^-1_rr)^-1 H^-1_rk
        with lapack_threads(dev):
            solve = torch.linalg.solve(hinv[r][:, r], torch.cat([w[r], hinv[r][:, keep]], dim=1))  # (b, hidden + m')
        cross = hinv[keep][:, r]  # (m', b)
        w = w[keep] - cross @ solve[:, :hidden]
        hinv = hinv[keep][:, keep] - cross @ solve[:, hidden:]
        p, idx = p[keep], idx[keep]
    last = ((w * w).sum(1) / hinv.diagonal().clamp_min(1e-30) * p).cpu()
    score[idx.cpu()] = running + last + max(abs(running), 1e-300) * 1e-9
    return score
