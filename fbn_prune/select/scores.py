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


def prior(maps: torch.Tensor, network_weight: float) -> torch.Tensor:
    """The network-membership prior 1 + w * m / mean(m) of one layer's maps (runs, k, width): (width,) float64."""
    m = membership(maps).double()
    return 1 + network_weight * m / m.mean().clamp_min(1e-12)


def fbn_scores(g: torch.Tensor, columns: torch.Tensor, maps: torch.Tensor | None, network_weight: float,
               ridge: float, cache: Path | None = None, device: str = "cpu") -> torch.Tensor:
    """One layer's ``fbn`` scores (width,), cached in ``cache`` (a folder) by the content of its inputs;
    the elimination runs on ``device`` (see eliminate.py)."""
    p = prior(maps, network_weight) if maps is not None and network_weight else None
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
