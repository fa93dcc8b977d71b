"""Channel scores: the compensated elimination behind ``fbn`` and the network prior."""

from __future__ import annotations

import torch

from fbn_prune.select.compensate import compensated_columns, predictor
from fbn_prune.select.eliminate import elimination_scores
from fbn_prune.select.scores import fbn_scores, prior


def _layer(seed=0, tokens=3000, width=96, hidden=24, sources=8):
    """Signals with planted co-firing groups (networks) plus private noise: x (tokens, width),
    its Gram matrix (width, width) float64 and random down columns (width, hidden) float64."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(tokens, sources, generator=g)
    mix = torch.randn(sources, width, generator=g) * (torch.rand(sources, width, generator=g) < 0.3)
    x = (s @ mix + 0.3 * torch.randn(tokens, width, generator=g)).double()
    cols = torch.randn(width, hidden, generator=g).double()
    return x, x.T @ x / tokens, cols


def _output_error(x, cols, keep, g) -> float:
    """Mean squared error per token of the down projection's output after lstsq compensation."""
    comp = compensated_columns(cols, keep, predictor(g, keep).double())
    return float(((x @ cols - x @ comp) ** 2).sum(1).mean())


def _top(score, n):
    return torch.argsort(score, descending=True)[:n].sort().values


def test_first_removal_is_the_cheapest_after_compensation():
    x, g, cols = _layer()
    score = elimination_scores(g, cols, block=1)
    first = int(torch.argmin(score))
    errors = [_output_error(x, cols, torch.tensor([i for i in range(g.shape[0]) if i != j]), g)
              for j in range(g.shape[0])]
    assert first == min(range(len(errors)), key=errors.__getitem__)


def test_beats_activation_scores_on_reconstruction_error():
    for seed in range(3):
        x, g, cols = _layer(seed)
        keep_n = g.shape[0] // 2
        elim = _output_error(x, cols, _top(elimination_scores(g, cols), keep_n), g)
        flap = _output_error(x, cols, _top(x.var(0) * (cols**2).sum(1), keep_n), g)
        assert elim < flap


def test_scores_are_a_full_order_and_blocks_stay_close_to_greedy():
    x, g, cols = _layer()
    exact = elimination_scores(g, cols, block=1)
    blocked = elimination_scores(g, cols, block=4)
    assert torch.unique(exact).numel() == g.shape[0] and torch.isfinite(blocked).all()
    keep_n = g.shape[0] // 2
    e1 = _output_error(x, cols, _top(exact, keep_n), g)
    e4 = _output_error(x, cols, _top(blocked, keep_n), g)
    assert e4 <= 1.1 * e1


def test_prior_protects_network_members():
    x, g, cols = _layer()
    width = g.shape[0]
    maps = torch.zeros(1, 1, width)
    maps[0, 0, :10] = 10.0  # channels 0..9: strong members of one network
    plain = _top(elimination_scores(g, cols), width // 2)
    weighted = _top(elimination_scores(g, cols, prior=prior(maps, 20.0)), width // 2)
    assert (weighted < 10).sum() >= (plain < 10).sum()
    assert (weighted < 10).sum() == 10


def test_fbn_scores_cache_is_keyed_by_inputs(tmp_path):
    _, g, cols = _layer()
    maps = torch.randn(2, 4, g.shape[0])
    a = fbn_scores(g, cols, maps, 0.25, 1e-3, cache=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    assert torch.equal(a, fbn_scores(g, cols, maps, 0.25, 1e-3, cache=tmp_path))
    b = fbn_scores(g, cols, maps, 1.0, 1e-3, cache=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and not torch.equal(a, b)


def test_shrinking_working_set_matches_the_full_size_update():
    """The elimination keeps only surviving rows; the reference below updates the full matrices
    with removed rows zeroed (the textbook form). Same scores."""
    import math

    _, g, cols = _layer(seed=4, width=60)
    n, block = g.shape[0], 3
    h = g.double() + 1e-3 * g.diagonal().double().mean() * torch.eye(n, dtype=torch.float64)
    hinv, w = torch.linalg.inv(h), cols.double().clone()
    alive, ref, running = torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.float64), 0.0
    while int(alive.sum()) > block:
        cost = (w * w).sum(1) / hinv.diagonal().clamp_min(1e-30)
        cost[~alive] = float("inf")
        r = torch.argsort(cost)[:block]
        for j in r.tolist():
            running = max(math.nextafter(running, math.inf), float(cost[j]))
            ref[j] = running
        solve = torch.linalg.solve(hinv[r][:, r], torch.cat([w[r], hinv[r]], dim=1))
        w -= hinv[:, r] @ solve[:, : w.shape[1]]
        hinv -= hinv[:, r] @ solve[:, w.shape[1]:]
        alive[r] = False
        w[r], hinv[r, :], hinv[:, r] = 0.0, 0.0, 0.0
        hinv[r, r] = 1.0
    got = elimination_scores(g, cols, 1e-3, block=block, device="cpu")
    assert got.dtype == torch.float64 and got.device.type == "cpu"
    removed = ~alive
    assert torch.allclose(got[removed], ref[removed], rtol=1e-9)
    assert (got[alive] > ref[removed].max()).all()
