"""Channel importance scores per layer, one function per method (higher = keep).

Every method returns ``list[Tensor]`` with one (width_i,) float64 score per layer, so all
methods share selection, surgery, export and verification and compare at equal size.

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

from fbn_prune.models.arch import Adapter
from fbn_prune.models.arch.base import channel_index

log = logging.getLogger(__name__)

NEEDS_STATS = {"wanda-sp", "flap", "fbn-act"}
NEEDS_MAPS = {"fbn", "fbn-act", "fbn-paper"}
NEEDS_GRAM = {"fbn"}


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
    """(mean, variance, L2 norm) of each channel's signal over calibration tokens, each (width,)."""
    n = float(stats["count"][0])
    mean = stats[f"sum.{layer}"] / n
    var = (stats[f"sumsq.{layer}"] / n - mean**2).clamp_min(0)
    return mean, var, stats[f"sumsq.{layer}"].sqrt()


def prior(maps: torch.Tensor, network_weight: float) -> torch.Tensor:
    """The network-membership prior 1 + w * m / mean(m) of one layer's maps (runs, k, width): (width,) float64."""
    from fbn_prune.decompose.networks import membership

    m = membership(maps).double()
    return 1 + network_weight * m / m.mean().clamp_min(1e-12)


def fbn_scores(g: torch.Tensor, columns: torch.Tensor, maps: torch.Tensor | None, network_weight: float,
               ridge: float, cache: Path | None = None, device: str = "cpu") -> torch.Tensor:
    """One layer's ``fbn`` scores (width,), cached in ``cache`` (a folder) by the content of its inputs;
    the elimination runs on ``device`` (see eliminate.py)."""
    from fbn_prune.select.eliminate import elimination_scores

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


def _flap(model, adapter: Adapter, stats, layer: int) -> torch.Tensor:
    """FLAP's fluctuation score Var(X_j) * ||W_down[:, j]||^2 of one layer: (width,) float64."""
    _, var, _ = activation_stats(stats, layer)
    return var * (down_columns(model, adapter, layer) ** 2).sum(1)


def layer_scores(method: str, model, adapter: Adapter, *, stats=None, maps_fn=None, gram_fn=None, seed: int = 0,
                 network_weight: float = 1.0, ridge: float = 1e-3, cache: Path | None = None,
                 device: str = "cpu") -> list[torch.Tensor]:
    """Scores of every layer for ``method``. ``maps_fn(i)`` gives layer i's maps (runs, k, width),
    ``gram_fn(i)`` its calibration Gram matrix (width, width); ``cache``: folder for fbn's scores;
    ``device``: where fbn's elimination runs."""
    n_layers = adapter.num_layers(model)
    out = []
    from fbn_prune.decompose.networks import membership

    for i in range(n_layers):
        if method == "fbn-paper":
            out.append(membership(maps_fn(i)).double())
        elif method == "fbn":
            out.append(fbn_scores(gram_fn(i), down_columns(model, adapter, i), maps_fn(i) if maps_fn else None,
                                  network_weight, ridge, cache, device))
        elif method == "fbn-act":
            out.append(_flap(model, adapter, stats, i) * prior(maps_fn(i), network_weight))
        elif method == "random":
            width = down_columns(model, adapter, i).shape[0]
            g = torch.Generator().manual_seed(seed * 7919 + i)
            out.append(torch.rand(width, generator=g, dtype=torch.float64))
        elif method == "magnitude":
            out.append(channel_weight_sq(model, adapter, i).sqrt())
        elif method == "wanda-sp":
            _, _, norm = activation_stats(stats, i)
            out.append(down_columns(model, adapter, i).abs().sum(1) * norm)
        elif method == "flap":
            out.append(_flap(model, adapter, stats, i))
        else:
            raise ValueError(f"unknown method {method}")
    return out
