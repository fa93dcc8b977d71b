"""fbn_prune.evaluate.paired: paired bootstrap intervals and McNemar's exact test, on synthetic per-document data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fbn_prune.evaluate import paired


def test_interval_covers_the_true_difference():
    """Two correlated 0/1 'models' whose true accuracies are 70% and 62%: over 40 seeded data sets of
    400 documents, the 95% paired interval covers the true -8 points in about 95% of them."""
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    trials = 40
    for t in range(trials):
        hard = rng.random(400)  # per-document difficulty, shared by both models (that is what pairing uses)
        a = (hard < 0.70).astype(float)  # P(right) = 0.70
        b = (hard < 0.65).astype(float)  # P(right) = 0.65, wrong on a superset of a's errors
        flip = rng.random(400) < 0.1  # some noise of b's own
        b = np.where(flip, 1 - b, b)  # true mean of b: 0.65 * 0.9 + 0.35 * 0.1 = 0.62
        (p,) = paired.compare("mean", True, [a, b], [(0, 1)], iters=2000, seed=t)
        assert p.delta == pytest.approx(b.mean() - a.mean())
        assert p.delta_low <= p.delta <= p.delta_high
        covered += p.delta_low <= -0.08 <= p.delta_high
        widths.append(p.delta_high - p.delta_low)
    assert covered >= 0.85 * trials
    # paired is much narrower than the unpaired interval (sqrt(2 p q / n) * 1.96 * 2 ~ 13 points)
    assert np.mean(widths) < 0.08


def test_identical_models_give_a_zero_width_interval():
    rng = np.random.default_rng(1)
    acc = (rng.random(200) < 0.6).astype(float)
    (p,) = paired.compare("mean", True, [acc, acc.copy()], [(0, 1)], iters=1000)
    assert (p.delta, p.delta_low, p.delta_high) == (0.0, 0.0, 0.0)
    assert (p.retention, p.retention_low, p.retention_high) == (1.0, 1.0, 1.0)
    assert p.mcnemar_p == 1.0 and (p.a_only, p.b_only) == (0, 0) and not p.significant
    ll = np.stack([-rng.random(50) * 100, rng.integers(10, 40, 50)], axis=1)
    for kind in ("weighted_perplexity", "bits_per_byte"):
        (q,) = paired.compare(kind, False, [ll, ll.copy()], [(0, 1)], iters=500)
        assert (q.delta_low, q.delta_high, q.retention_low) == (0.0, 0.0, 1.0) and q.mcnemar_p is None


def test_weighted_perplexity_is_a_ratio_of_sums():
    ll = np.array([[-10.0, 5], [-30.0, 5], [-4.0, 2]])
    assert paired.value("weighted_perplexity", ll) == pytest.approx(math.exp(44 / 12))
    assert paired.value("bits_per_byte", ll) == pytest.approx(44 / 12 / math.log(2))
    assert paired.value("perplexity", [-1.0, -3.0]) == pytest.approx(math.exp(2))
    worse = ll * np.array([1.1, 1.0])  # 10% lower log-likelihood per document: higher perplexity
    (p,) = paired.compare("weighted_perplexity", False, [ll, worse], [(0, 1)], iters=500)
    assert p.delta > 0 and p.retention == pytest.approx(math.exp(44 / 12) / math.exp(1.1 * 44 / 12))
    assert p.delta_low > 0  # every resample: worse on every document
    with pytest.raises(ValueError):
        paired.columns("weighted_perplexity", [1.0, 2.0])


def test_mcnemar_against_a_hand_computed_case():
    # 10 discordant documents: the original alone right on 9, the pruned alone on 1, 5 concordant.
    # Exact two-sided p = 2 * P(X <= 1 | Bin(10, 1/2)) = 2 * (1 + 10) / 1024 = 22/1024.
    a = np.array([1] * 9 + [0] + [1, 1, 1, 0, 0], dtype=float)
    b = np.array([0] * 9 + [1] + [1, 1, 1, 0, 0], dtype=float)
    p, a_only, b_only = paired.mcnemar(a, b)
    assert (a_only, b_only) == (9, 1)
    assert p == pytest.approx(22 / 1024)
    (r,) = paired.compare("mean", True, [a, b], [(0, 1)], iters=500)
    assert r.mcnemar_p == pytest.approx(22 / 1024) and r.delta == pytest.approx(-8 / 15)


def test_resamples_are_shared_across_models_and_calls():
    x = np.arange(30, dtype=float)[:, None]
    one = paired.resampled_sums(x, iters=300, seed=5)
    again = paired.resampled_sums(np.concatenate([x, 2 * x], axis=1), iters=300, seed=5)
    assert np.array_equal(one[:, 0], again[:, 0]) and np.array_equal(again[:, 1], 2 * again[:, 0])
    assert not np.array_equal(one, paired.resampled_sums(x, iters=300, seed=6))
    # each resample draws n documents: the counts behind a column of ones sum to n
    assert np.all(paired.resampled_sums(np.ones((30, 1)), iters=50, seed=0) == 30)


def test_several_models_and_pairs():
    rng = np.random.default_rng(2)
    hard = rng.random(300)
    models = [(hard < q).astype(float) for q in (0.7, 0.5, 0.68)]
    out = paired.compare("mean", True, models, [(0, 1), (0, 2), (1, 2)], iters=2000)
    assert [round(p.delta, 6) for p in out] == [round(models[j].mean() - models[i].mean(), 6)
                                                 for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert out[0].significant and out[0].delta_high < 0  # 20 points worse on nested errors
    assert out[2].significant and out[2].delta_low > 0
    assert out[1].delta_high <= 0  # right on a subset of the original's documents: no resample favours it
