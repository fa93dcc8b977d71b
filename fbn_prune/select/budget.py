"""Scores + budget -> the channels each layer keeps.

A score ranks the channels of a layer (higher = more important). Three budgets:

- uniform ratio: every layer keeps the same count, round((1 - ratio) * width) rounded to
  ``round_to``, its top-scored channels;
- global ratio (padded / exact layouts): channels are added in blocks of ``round_to``,
  best block first across all pruned layers, until (1 - ratio) of the pruned layers'
  channels are kept. With membership scores this is the paper's union-of-networks rule
  with the threshold T solved for the ratio, rather than tuned by hand;
- threshold: keep channels whose score exceeds T (the paper's |z| > T rule).

Protected layers keep every channel; no pruned layer keeps fewer than ``min_width``.
Ties break by channel index, so equal inputs give equal outputs.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import torch

from fbn_prune.errors import UserError


@dataclass(frozen=True)
class Budget:
    """How many channels to keep, and the constraints on where."""

    ratio: float | None = None
    threshold: float | None = None
    uniform: bool = False
    protect_first: int = 0
    protect_last: int = 0
    round_to: int = 1
    min_width: int = 1

    def pruned_layers(self, n_layers: int) -> list[int]:
        return [i for i in range(n_layers) if self.protect_first <= i < n_layers - self.protect_last]


def ranking(score: torch.Tensor) -> torch.Tensor:
    """Channel indices by descending score, ties by ascending index. (width,) -> (width,) long."""
    return torch.argsort(-score.double(), stable=True)


def _round_keep(n: float, width: int, b: Budget) -> int:
    k = int(round(n / b.round_to)) * b.round_to
    return max(min(k, width), min(b.min_width, width))


def select(scores: list[torch.Tensor], b: Budget) -> list[torch.Tensor]:
    """Kept channel indices per layer, each sorted ascending. scores[i]: (width_i,).

    Raises UserError when protection leaves nothing to prune.
    """
    n = len(scores)
    widths = [int(s.numel()) for s in scores]
    pruned = b.pruned_layers(n)
    if not pruned:
        raise UserError(f"protecting {b.protect_first} first and {b.protect_last} last layers leaves none of {n} to prune.")
    counts = {i: widths[i] for i in range(n)}
    if b.threshold is not None:
        for i in pruned:
            counts[i] = _round_up(int((scores[i] > b.threshold).sum()), widths[i], b)
    elif b.uniform:
        if len(set(widths[i] for i in pruned)) != 1:
            raise UserError("the uniform layout needs equal FFN widths in all layers; use --layout padded or exact.")
        keep = _round_keep((1 - b.ratio) * widths[pruned[0]], widths[pruned[0]], b)
        for i in pruned:
            counts[i] = keep
    else:
        counts.update(_global_counts([scores[i] for i in pruned], pruned, b))
    return [torch.sort(ranking(scores[i])[: counts[i]]).values for i in range(n)]


def _round_up(k: int, width: int, b: Budget) -> int:
    return min(width, max(b.min_width, math.ceil(k / b.round_to) * b.round_to))


def _global_counts(scores: list[torch.Tensor], layers: list[int], b: Budget) -> dict[int, int]:
    """Per-layer kept counts hitting (1 - ratio) of all channels of ``layers``, in round_to blocks.

    A block's priority is the score of its weakest channel, so within a layer blocks are
    taken in order; across layers the best remaining block wins (a solved global threshold).
    """
    target = (1 - b.ratio) * sum(s.numel() for s in scores)
    counts, widths, ordered, heap = {}, {}, {}, []
    for layer, s in zip(layers, scores):
        widths[layer], ordered[layer] = s.numel(), torch.sort(s.double(), descending=True).values
        counts[layer] = _round_up(0, widths[layer], b)  # min_width, rounded up to whole blocks
        _push(heap, layer, counts[layer], widths[layer], ordered[layer], b.round_to)
    kept = sum(counts.values())
    while heap:
        _, layer, new_count = heap[0]
        step = new_count - counts[layer]
        if kept + step / 2 > target:  # taking this block would overshoot by more than half a block
            break
        heapq.heappop(heap)
        counts[layer], kept = new_count, kept + step
        _push(heap, layer, new_count, widths[layer], ordered[layer], b.round_to)
    return counts


def _push(heap: list, layer: int, count: int, width: int, ordered: torch.Tensor, step: int) -> None:
    """Offer layer's next block (channels count..count+step of its descending scores)."""
    if count >= width:
        return
    new_count = min(width, count + step)
    heapq.heappush(heap, (-float(ordered[new_count - 1]), layer, new_count))


def achieved_ratio(kept: list[torch.Tensor], widths: list[int], layers: list[int]) -> float:
    """Fraction of the channels of ``layers`` that were removed."""
    total = sum(widths[i] for i in layers)
    return 1 - sum(kept[i].numel() for i in layers) / total


def channel_ratio_for_params(param_ratio: float, total_params: int, params_per_channel: int, pruned_channels: int) -> float:
    """The FFN channel ratio that removes ``param_ratio`` of all model parameters. UserError if impossible."""
    r = param_ratio * total_params / (params_per_channel * pruned_channels)
    if r >= 1:
        most = params_per_channel * pruned_channels / total_params
        raise UserError(f"removing {param_ratio:.0%} of parameters needs more than every prunable FFN channel "
                        f"(at most {most:.1%} of parameters live in them).")
    return r
