"""Tests for fbn_prune.decompose.ica (the per-layer CanICA decomposition). Fast: about a second each."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from fbn_prune.errors import UserError
from fbn_prune.decompose.ica import CanICA, decompose


def planted(tokens: int = 2000, neurons: int = 1000, sources: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A (tokens, neurons) mixture of ``sources`` sparse heavy-tailed spatial maps.

    Each map touches ~10% of the neurons with Laplace-distributed loadings; time courses
    are Gaussian; each neuron gets independent noise topping its variance up to 1, so
    the per-neuron z-scoring of the method leaves the planted maps unchanged.
    Returns (signal (tokens, neurons) float32, true maps (sources, neurons) float32).
    """
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.empty(sources, neurons).exponential_(1 / 0.25, generator=g)
    sign = torch.where(torch.rand(sources, neurons, generator=g) < 0.5, -1.0, 1.0)
    support = torch.rand(sources, neurons, generator=g) < 0.1
    maps = (magnitude * sign * support).clamp(-0.9, 0.9)
    energy = (maps * maps).sum(0)
    maps = maps / (energy / 0.9).clamp(min=1).sqrt()  # every neuron: signal variance <= 0.9
    energy = (maps * maps).sum(0)
    courses = torch.randn(tokens, sources, generator=g)
    noise = torch.randn(tokens, neurons, generator=g) * (1 - energy).sqrt()
    return courses @ maps + noise, maps


def matched_abs_corr(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Best one-to-one |corr| between the rows of b and rows of a (Hungarian); one value per row of b."""
    a_np, b_np = a.double().numpy(), b.double().numpy()
    corr = np.abs(np.corrcoef(b_np, a_np)[: len(b_np), len(b_np):])  # (rows of b, rows of a)
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols]


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return planted()


@pytest.mark.parametrize("engine", ["sklearn", "torch"])
def test_recovers_planted_sparse_sources(data, engine):
    signal, truth = data
    maps = decompose(signal, n_components=8, engine=engine, device="cpu")
    corr = matched_abs_corr(maps, truth)
    assert corr.min() > 0.9, corr


def test_shape_dtype_zscored_and_signed(data):
    signal, _ = data
    maps = decompose(signal.half(), n_components=10, device="cpu")  # float16 input accepted
    assert maps.shape == (10, signal.shape[1])
    assert maps.dtype == torch.float32 and maps.device.type == "cpu"
    assert torch.isfinite(maps).all()
    torch.testing.assert_close(maps.mean(dim=1), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(maps.std(dim=1, correction=0), torch.ones(10), atol=1e-5, rtol=0)
    peaks = maps.gather(1, maps.abs().argmax(dim=1, keepdim=True))
    assert (peaks > 0).all()


def test_estimator_attributes(data):
    signal, _ = data
    model = CanICA(8, seed=3, engine="torch", device="cpu")
    assert not hasattr(model, "reduce_seconds_") and not hasattr(model, "ica_seconds_")  # set by fit
    model.fit(signal)
    assert model.maps_.shape == (8, signal.shape[1])
    assert model.engine_ == "torch"
    assert model.device_ == torch.device("cpu")
    assert 1 <= model.n_iter_ <= model.max_iter and model.converged_
    for seconds in (model.reduce_seconds_, model.ica_seconds_):
        assert isinstance(seconds, float) and math.isfinite(seconds) and seconds >= 0
    assert 0 < model.explained_variance_ratio_ <= 1
    assert model.singular_values_.shape == (8,)
    assert torch.all(model.singular_values_[:-1] >= model.singular_values_[1:])
    assert torch.equal(model.maps_, decompose(signal, 8, seed=3, engine="torch", device="cpu"))


@pytest.mark.parametrize("engine", ["sklearn", "torch"])
def test_same_seed_is_deterministic(data, engine):
    signal, _ = data
    a = decompose(signal, n_components=12, seed=7, engine=engine, device="cpu")
    b = decompose(signal, n_components=12, seed=7, engine=engine, device="cpu")
    assert torch.equal(a, b)
    c = decompose(signal, n_components=12, seed=8, engine=engine, device="cpu")
    assert c.shape == a.shape and torch.isfinite(c).all()
    assert not torch.equal(a, c), "the seed must reach the decomposition"


def test_does_not_touch_global_rng_or_input(data):
    signal, _ = data
    before = signal.clone()
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    decompose(signal, n_components=4, seed=1, device="cpu")
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state(), np_state))
    assert torch.equal(signal, before)


@pytest.mark.parametrize("fun", ["cube", "logcosh", "exp"])
def test_sklearn_and_torch_engines_match(data, fun):
    signal, _ = data
    a = decompose(signal, n_components=8, seed=0, engine="sklearn", fun=fun, device="cpu")
    b = decompose(signal, n_components=8, seed=0, engine="torch", fun=fun, device="cpu")
    corr = matched_abs_corr(a, b)
    assert corr.min() > 0.99, corr


def test_engines_match_with_more_components_than_sources(data):
    signal, _ = data
    a = CanICA(12, engine="sklearn", device="cpu").fit(signal)
    b = CanICA(12, engine="torch", device="cpu").fit(signal)
    assert a.n_iter_ == b.n_iter_
    assert matched_abs_corr(a.maps_, b.maps_).min() > 0.99


def test_non_convergence_is_logged_not_warned(data, caplog):
    signal, _ = data
    for engine in ("sklearn", "torch"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning escaping would fail the test
            with caplog.at_level(logging.WARNING, logger="fbn_prune.decompose.ica"):
                model = CanICA(8, engine=engine, max_iter=1, tol=1e-12, device="cpu").fit(signal)
        assert not model.converged_ and model.n_iter_ == 1
    assert sum("did not converge" in r.getMessage() for r in caplog.records) == 2


def test_constant_neurons_do_not_produce_nan(data):
    signal, _ = data
    signal = signal.clone()
    signal[:, :5] = 3.0
    maps = decompose(signal, n_components=8, device="cpu")
    assert torch.isfinite(maps).all()


def test_too_few_tokens_is_a_user_error():
    signal = torch.randn(10, 50)
    with pytest.raises(UserError, match="need at least 16 tokens for 16 components, got 10"):
        decompose(signal, n_components=16)


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((50, 10), {"n_components": 16}, "need at least 16 neurons for 16 components, got 10"),
        ((50, 20), {"n_components": 0}, "n_components must be a positive integer"),
        ((50,), {"n_components": 2}, "2-D"),
        ((50, 20), {"n_components": 2, "engine": "jax"}, "engine must be one of"),
        ((50, 20), {"n_components": 2, "fun": "tanh"}, "fun must be one of"),
        ((50, 20), {"n_components": 2, "seed": -1}, "seed must be an integer"),
    ],
)
def test_bad_arguments_are_user_errors(shape, kwargs, message):
    with pytest.raises(UserError, match=message):
        decompose(torch.randn(*shape), **kwargs)


def test_non_finite_signal_is_a_user_error():
    signal = torch.randn(50, 20)
    signal[3, 4] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        decompose(signal, n_components=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_torch_engine_matches_cpu(data):
    signal, _ = data
    gpu = CanICA(8, engine="torch", device="cuda").fit(signal)
    cpu = CanICA(8, engine="torch", device="cpu").fit(signal)
    assert gpu.device_.type == "cuda" and gpu.maps_.device.type == "cpu"
    assert matched_abs_corr(gpu.maps_, cpu.maps_).min() > 0.99
