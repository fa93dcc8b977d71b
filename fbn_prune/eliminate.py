"""Greedy compensated elimination: the order in which a layer's channels can be removed when
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

from .compensate import DEFAULT_RIDGE


def elimination_scores(g: torch.Tensor, columns: torch.Tensor, ridge: float = DEFAULT_RIDGE,
                       prior: torch.Tensor | None = None, block: int | None = None) -> torch.Tensor:
    """Scores (width,) float64 from the Gram matrix g (width, width) and the down columns
    (width, hidden); higher = removed later.

    Channels leave ``block`` at a time (default width // 128: 12 for 1,536, 86 for 11,008): the
    ``block`` cheapest by their current cost, removed jointly with the exact joint update.
    The last block's survivors score above every removed channel."""
    n = g.shape[0]
    block = block or max(1, n // 128)
    h = g.double() + ridge * g.diagonal().double().mean().clamp_min(1e-12) * torch.eye(n, dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    w = columns.double().clone()
    p = torch.ones(n, dtype=torch.float64) if prior is None else prior.double()
    alive = torch.ones(n, dtype=torch.bool)
    score = torch.zeros(n, dtype=torch.float64)
    running = 0.0
    while int(alive.sum()) > block:
        cost = (w * w).sum(1) / hinv.diagonal().clamp_min(1e-30) * p
        cost[~alive] = float("inf")
        order = torch.argsort(cost)[:block]
        for j in order.tolist():  # cheapest first inside the block
            running = max(math.nextafter(running, math.inf), float(cost[j]))  # strictly increasing
            score[j] = running
        r = order
        solve = torch.linalg.solve(hinv[r][:, r], torch.cat([w[r], hinv[r]], dim=1))  # (b, hidden + n)
        w -= hinv[:, r] @ solve[:, : w.shape[1]]
        hinv -= hinv[:, r] @ solve[:, w.shape[1]:]
        alive[r] = False
        w[r] = 0.0
        hinv[r, :] = 0.0
        hinv[:, r] = 0.0
        hinv[r, r] = 1.0
    last = (w * w).sum(1) / hinv.diagonal().clamp_min(1e-30) * p
    score[alive] = running + last[alive] + max(abs(running), 1e-300) * 1e-9
    return score
