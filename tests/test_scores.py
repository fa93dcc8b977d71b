"""Channel scores: the compensated elimination behind ``fbn``, the network prior, and the method registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from clitools import bad
from transformers import AutoModelForCausalLM

from fbn_prune.cli.main import cli
from fbn_prune.config.recipe import Recipe
from fbn_prune.errors import UserError
from fbn_prune.models.arch import adapter_for
from fbn_prune.select.compensate import compensated_columns, predictor
from fbn_prune.select.methods import METHODS, Needs, ScoreInputs, check_selection, method_for
from fbn_prune.select.eliminate import elimination_scores
from fbn_prune.select.scores import GROUP_Z, fbn_scores, groups, membership, prior, recurrence, within_groups


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
    a = fbn_scores(g, cols, prior(maps, 0.25), 1e-3, cache=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    assert torch.equal(a, fbn_scores(g, cols, prior(maps, 0.25), 1e-3, cache=tmp_path))
    b = fbn_scores(g, cols, prior(maps, 1.0), 1e-3, cache=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and not torch.equal(a, b)


def test_recurrence_discounts_a_membership_seen_in_one_run_only():
    """fbn-recur's strength: a channel strong in every run keeps its membership; one strong in a single run
    of four drops to a quarter, where fbn's max |z| cannot tell the two apart."""
    maps = torch.zeros(4, 3, 6)
    maps[:, 1, 0] = 8.0   # channel 0: in a network in every run
    maps[2, 0, 1] = -8.0  # channel 1: in a network in run 2 only
    assert membership(maps)[:2].tolist() == [8.0, 8.0]
    assert recurrence(maps)[:2].tolist() == [8.0, 2.0]
    assert torch.equal(recurrence(maps[:1]), membership(maps[:1]))
    assert (prior(maps, 1.0, recurrence)[0] > prior(maps, 1.0, recurrence)[1]).item()


def test_groups_come_from_the_first_runs_strongest_map():
    maps = torch.zeros(2, 3, 5)
    maps[0, 0, 0] = 5.0
    maps[0, 2, 1] = -4.0
    maps[0, 1, 1] = 3.0
    maps[0, 1, 2] = GROUP_Z  # not above the threshold: background
    maps[1, 1, 3] = 9.0      # a later run does not form groups
    assert groups(maps).tolist() == [0, 2, -1, -1, -1]


def test_within_groups_prunes_every_group_by_the_same_share():
    """Ranking by the in-group percentile removes half of each group at half the width, however the raw
    scores of the groups compare (group 1's scores are all below group 0's), in each group's own order."""
    group = torch.tensor([0] * 8 + [1] * 8)
    score = torch.cat([100 + torch.arange(8.0), torch.arange(8.0)]).double()
    pct = within_groups(score, group)
    kept = pct.argsort(descending=True)[:8]
    assert sorted(kept.tolist()) == [4, 5, 6, 7, 12, 13, 14, 15]
    assert ((pct > 0) & (pct <= 1 + 1e-5)).all()
    raw_kept = score.argsort(descending=True)[:8]
    assert sorted(raw_kept.tolist()) == list(range(8))  # the raw scores would have emptied group 1


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


# ---- the method registry ------------------------------------------------------------------------

# what each method declares it reads from a networks artifact: (maps, stats, gram). A new method adds its row.
EXPECTED_NEEDS = {
    "fbn": (True, False, True),
    "fbn-recur": (True, False, True),
    "fbn-group": (True, False, True),
    "fbn-act": (True, True, False),
    "fbn-paper": (True, False, False),
    "random": (False, False, False),
    "magnitude": (False, False, False),
    "wanda-sp": (False, True, False),
    "flap": (False, True, False),
}


def test_every_method_has_a_needs_test():
    assert list(EXPECTED_NEEDS) == list(METHODS)


def _inputs(model, adapter, needs: Needs, tmp_path) -> ScoreInputs:
    """ScoreInputs holding only what ``needs`` declares (the rest None, so reading it fails)."""
    widths = adapter.channel_widths(model)
    g = torch.Generator().manual_seed(0)
    stats = {"count": torch.tensor([100.0], dtype=torch.float64)}
    for i, w in enumerate(widths):
        stats[f"sum.{i}"] = torch.randn(w, generator=g, dtype=torch.float64)
        stats[f"sumsq.{i}"] = 100 + torch.rand(w, generator=g, dtype=torch.float64)
    maps = [torch.randn(2, 4, w, generator=g) for w in widths]
    grams = []
    for w in widths:
        x = torch.randn(3 * w, w, generator=g, dtype=torch.float64)
        grams.append(x.T @ x / x.shape[0])
    return ScoreInputs(model, adapter, stats=stats if needs.stats else None,
                       maps_fn=maps.__getitem__ if needs.maps else None,
                       gram_fn=grams.__getitem__ if needs.gram else None, seed=3, cache=tmp_path)


@pytest.mark.parametrize("name", list(EXPECTED_NEEDS))
def test_method_declares_what_it_reads(name, tiny_dir, tmp_path):
    """Each method's declared needs are as expected, and its scores come from them alone: one finite
    (width,) float64 score per layer with every undeclared input absent."""
    method = method_for(name)
    assert (method.needs.maps, method.needs.stats, method.needs.gram) == EXPECTED_NEEDS[name]
    model = AutoModelForCausalLM.from_pretrained(tiny_dir("llama")).eval()
    adapter = adapter_for(model.config)
    x = _inputs(model, adapter, method.needs, tmp_path)
    for i, w in enumerate(adapter.channel_widths(model)):
        score = method.score(x, i)
        assert score.dtype == torch.float64 and score.shape == (w,) and bool(torch.isfinite(score).all())
    assert method.network_weight == (name in ("fbn", "fbn-recur", "fbn-group", "fbn-act"))
    assert method.threshold == name.startswith("fbn")


def test_unknown_method_and_threshold_with_a_baseline_are_refused():
    with pytest.raises(UserError, match=r"selection: method must be one of fbn, fbn-recur, fbn-group, fbn-act, fbn-paper, "
                                        r"random, magnitude, wanda-sp, flap, got 'lasso'\."):
        method_for("lasso")
    recipe = Recipe.from_dict({"selection": {"method": "flap", "threshold": 2.0}, "export": {"layout": "padded"}})
    with pytest.raises(UserError, match="other methods take --ratio"):
        check_selection(recipe.selection)
    assert check_selection(Recipe.from_dict({"selection": {"method": "fbn-act"}}).selection) is METHODS["fbn-act"]


def test_cli_choices_and_docs_table_follow_the_registry():
    names = list(METHODS)
    for command in (cli.commands["prune"], cli.commands["select"], cli.commands["networks"], cli.commands["search"]):
        option = next((p for p in command.params if p.name == "method"), None)
        if option is not None:
            assert list(option.type.choices) == names, command.name
    table = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    documented = re.findall(r"^\| `([a-z-]+)`", table, flags=re.M)
    assert documented == names


@pytest.mark.parametrize("method", [name for name, m in METHODS.items() if m.needs.maps])
def test_every_method_with_maps_needs_enough_tokens_per_run(method, tiny_dir, calib_txt, tmp_path):
    """The up-front check that each run holds as many tokens as ICA components asks the registry (fbn-act too)."""
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--calib", calib_txt, "--calib-samples", "4",
         "--seq-len", "8", "--components", "64", "--runs", "2", "--no-progress", "--method", method],
        "fewer than the 64 components")
