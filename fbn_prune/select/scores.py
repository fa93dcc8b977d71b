"""Channel importance scores of one layer, the maths behind each selection method.

Channel importance scores of one layer, one function per method (higher = keep). Which method
reads which (and what it needs from a networks artifact) is declared in methods.py.

Every score is one (width,) float64 tensor per layer, so all methods share selection, surgery,
export and verification and compare at equal size.

- ``fbn``: compensated elimination over the layer's functional connectivity (eliminate.py):
  channels leave in the order that costs least once the remaining members of their networks
  take over their signal (least-squares reconstruction from the calibration Gram matrix),
  each cost weighted by the network-membership prior (1 + w * m_j / mean(m)), with m_j the
  membership score below and w the network weight (``selection.network_weight``).
- ``fbn-act``: the previous default, activation energy weighted by membership:
  flap_j * (1 + w * m_j / mean(m)) (kept for the ablation in benchmarks/quality.py).
- ``fbn-recur``: ``fbn`` with the prior built from recurrence instead of membership: r_j = the mean
  over runs of the channel's strongest |z| in that run, so a channel counts as a network member
  only as far as its membership recurs on every disjoint calibration subset (a channel strong in one
  run only is discounted).
- ``fbn-group``: ``fbn``'s scores ranked within functional groups, as FANG (AAAI 2026) prunes each
  group of neurons independently: channel j's group is the first run's map where its |z| is largest
  when that exceeds :data:`GROUP_Z`, else the background group; its score is its percentile in its
  group, so every group loses about the same share of channels.
- ``fbn-paper``: the authors' rule, pure membership m_j = max |z| over all ICA maps and runs.
- ``random``: seeded uniform noise (the floor).
- ``magnitude``: L2 norm of all weights of the channel (its up-type rows and down column).
- ``wanda-sp``: sum_o |W_down[o, j]| * ||X_j||_2 (structured Wanda; X_j: channel j's signal).
- ``flap``: Var(X_j) * ||W_down[:, j]||_2^2 (FLAP's fluctuation metric).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fbn_prune.select.eliminate import elimination_scores

log = logging.getLogger(__name__)


def membership(maps: torch.Tensor) -> torch.Tensor:
    """The paper's score: max over runs and maps of |z|. A neuron is in some network at
    threshold T exactly when its score exceeds T. maps: (runs, k, width) -> (width,)."""
    return maps.abs().amax(dim=(0, 1))


def recurrence(maps: torch.Tensor) -> torch.Tensor:
    """How consistently a channel belongs to some network across the disjoint runs: the mean over runs
    of its strongest |z| in that run. maps: (runs, k, width) -> (width,). Equals :func:`membership`
    with one run; lower where the membership is strong in some runs only."""
    return maps.abs().amax(dim=1).mean(dim=0)


GROUP_Z = 2.0
"""|z| above which a channel joins its strongest map's group in ``fbn-group`` (else the background group)."""


def prior(maps: torch.Tensor, network_weight: float, strength=membership) -> torch.Tensor:
    """The network prior 1 + w * m / mean(m) of one layer's maps (runs, k, width): (width,) float64, with
    m = ``strength(maps)`` (:func:`membership` for ``fbn``, :func:`recurrence` for ``fbn-recur``)."""
    m = strength(maps).double()
    return 1 + network_weight * m / m.mean().clamp_min(1e-12)


def groups(maps: torch.Tensor, z: float = GROUP_Z) -> torch.Tensor:
    """Functional groups of one layer's channels from the first run's maps (runs, k, width): (width,) int64,
    the index of the map where the channel's |z| is largest, or -1 (background) when that is <= ``z``."""
    first = maps[0].abs()  # (k, width)
    strongest, which = first.max(dim=0)
    return torch.where(strongest > z, which, torch.full_like(which, -1))


def within_groups(score: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Each channel's percentile of ``score`` (width,) within its group (``group``: (width,) int), in (0, 1]:
    float64 (width,). Ranking a layer by it removes about the same share of every group; ties within a
    group keep the order of ``score``, ties across groups go to the higher ``score`` (a tiny tie-break)."""
    out = torch.empty_like(score, dtype=torch.float64)
    for g in group.unique():
        idx = (group == g).nonzero().squeeze(1)
        order = score[idx].argsort(stable=True)
        ranks = torch.empty(len(idx), dtype=torch.float64)
        ranks[order] = torch.arange(1, len(idx) + 1, dtype=torch.float64)
        out[idx] = ranks / len(idx)
    tiebreak = score.double().argsort().argsort().double() / (len(score) * 1e6)
    return out + tiebreak


def fbn_scores(g: torch.Tensor, columns: torch.Tensor, p: torch.Tensor | None, ridge: float,
               cache: Path | None = None, device: str = "cpu") -> torch.Tensor:
    """One layer's compensated-elimination scores (width,) with the prior ``p`` (width,) (None: no prior),
    cached in ``cache`` (a folder) by the content of its inputs; the elimination runs on ``device``
    (see eliminate.py)."""
    path = None
    if cache is not None:
        h = hashlib.sha256()
        for t in (g.float(), columns.float(), p if p is not None else torch.zeros(1)):
            h.update(t.contiguous().numpy().tobytes())
        h.update(f"{ridge!r}".encode())
        path = Path(cache) / f"fbn-{h.hexdigest()[:20]}.safetensors"
        cached = _cached_score(path, g.shape[0])
        if cached is not None:
            return cached
    score = elimination_scores(g, columns, ridge, prior=p, device=device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"score": score}, str(tmp))
        tmp.replace(path)
    return score


def _cached_score(path: Path, width: int) -> torch.Tensor | None:
    """A cached score (width,) when the file is readable, of that shape and finite; a damaged one is ignored
    (recomputed and rewritten), with a warning."""
    if not path.is_file():
        return None
    try:
        score = load_file(str(path)).get("score")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        score = None
    if score is not None and tuple(score.shape) == (width,) and bool(torch.isfinite(score).all()):
        return score
    log.warning("ignoring the damaged cached score %s (it is computed again)", path)
    return None


def flap(variance: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """FLAP's fluctuation score Var(X_j) * ||W_down[:, j]||^2: variance (width,), down columns (width, hidden)
    -> (width,) float64."""
    return variance * (columns**2).sum(1)


def wanda_sp(norm: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Structured Wanda sum_o |W_down[o, j]| * ||X_j||_2: signal norms (width,), down columns (width, hidden)
    -> (width,) float64."""
    return columns.abs().sum(1) * norm


def random_scores(width: int, seed: int, layer: int) -> torch.Tensor:
    """Seeded uniform noise (width,) float64, distinct per layer."""
    g = torch.Generator().manual_seed(seed * 7919 + layer)
    return torch.rand(width, generator=g, dtype=torch.float64)
