"""Whitening and parallel FastICA, the last steps of the decomposition in ica.py.

Parallel FastICA on already-white data, the third step of ica.py's decomposition: the whitening
itself and two engines with the same algorithm, input and initial unmixing matrix.

``"sklearn"`` (CPU, ``sklearn.decomposition.FastICA`` with BLAS limited to one thread) and ``"torch"``
(any device, a line-by-line port of scikit-learn's ``_ica_par``). Both take (k, neurons) float64
white data and a (k, k) ``w_init`` and return (k, neurons) sources, iterations run, converged flag.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from fbn_prune._runtime.threads import single_torch_thread
from fbn_prune.errors import UserError

log = logging.getLogger(__name__)

FUNS = ("cube", "logcosh", "exp")

ICA_DTYPE = torch.float64
"""FastICA runs on (k x neurons) matrices: cheap even in float64."""


def whiten(x: torch.Tensor) -> torch.Tensor:
    """scikit-learn's ``whiten="unit-variance", whiten_solver="eigh"`` preprocessing.

    Args:
        x: (n_samples=neurons, k) float tensor.
    Returns:
        (k, neurons) float64 tensor on x's device whose rows are uncorrelated with unit
        variance (the ``X1`` that sklearn feeds ``_ica_par``).
    """
    xt = x.to(ICA_DTYPE).T  # (k, n)
    n = xt.shape[1]
    xt = xt - xt.mean(dim=1, keepdim=True)
    d, u = torch.linalg.eigh(xt @ xt.T)  # ascending
    order = torch.argsort(d, descending=True)
    eps = torch.finfo(d.dtype).eps * 10
    if bool((d < eps).any()):
        log.warning("the reduced signal is rank-deficient (%d near-zero directions); some maps are noise",
                    int((d < eps).sum()))
    d = d.clamp_min(eps).sqrt()[order]
    u = u[:, order]
    u = u * torch.where(u[0] < 0, -1.0, 1.0)  # sklearn's sign convention (sign(0) taken as +1)
    whitening = (u / d).T  # (k, k)
    return (whitening @ xt) * math.sqrt(n)


def initial_unmixing(k: int, seed: int) -> np.ndarray:
    """(k, k) float64: the matrix scikit-learn's FastICA draws for ``random_state=seed``."""
    return np.random.RandomState(seed).normal(size=(k, k))


def _cube_numpy(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's ``cube`` (g(x) = x^3, mean g'(x) = mean 3x^2), without ``x**3``, which
    numpy computes with a slow generic ``pow`` (~80% of each iteration's time)."""
    x2 = x * x
    return x2 * x, 3.0 * x2.mean(axis=-1)


def fastica_sklearn(
    x1: torch.Tensor, w_init: np.ndarray, fun: str, max_iter: int, tol: float
) -> tuple[torch.Tensor, int, bool]:
    """Parallel FastICA by scikit-learn on already-white data (BLAS limited to one thread).

    Args:
        x1: (k, neurons) float64 white data (any device; copied to the CPU).
        w_init: (k, k) initial unmixing matrix.
    Returns:
        sources (k, neurons) float64 CPU tensor, iterations run, converged flag.
    """
    from sklearn.decomposition import FastICA  # heavy: imported when the sklearn engine runs
    from sklearn.exceptions import ConvergenceWarning

    samples = np.ascontiguousarray(x1.cpu().numpy().T)  # (neurons, k)
    g: str | Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] = _cube_numpy if fun == "cube" else fun
    ica = FastICA(
        n_components=None,  # whiten=False: components = features = k
        algorithm="parallel",
        whiten=False,
        fun=g,
        max_iter=max_iter,
        tol=tol,
        w_init=w_init.astype(samples.dtype),
    )
    converged = True
    with threadpool_limits(1, "blas"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sources = ica.fit_transform(samples)  # (neurons, k)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:
            log.warning("scikit-learn FastICA: %s", w.message)
    return torch.from_numpy(np.ascontiguousarray(sources.T)), int(ica.n_iter_), converged


def _g_torch(fun: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Nonlinearity as in sklearn: (k, n) ``wx`` -> (g(wx) (k, n), mean over n of g'(wx) (k,))."""
    if fun == "cube":
        def cube(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x2 = x * x
            return x2 * x, 3.0 * x2.mean(dim=-1)
        return cube
    if fun == "logcosh":
        def logcosh(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # alpha = 1
            gx = torch.tanh(x)
            return gx, (1.0 - gx * gx).mean(dim=-1)
        return logcosh
    if fun == "exp":
        def exp(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x2 = x * x
            e = torch.exp(-0.5 * x2)
            return x * e, ((1.0 - x2) * e).mean(dim=-1)
        return exp
    raise UserError(f"fun must be one of {', '.join(FUNS)}, got {fun!r}")


def _sym_decorrelation(w: torch.Tensor) -> torch.Tensor:
    """(k, k) -> (W W^T)^{-1/2} W, via eigh (as sklearn's ``_sym_decorrelation``)."""
    s, u = torch.linalg.eigh(w @ w.T)
    s = s.clamp_min(torch.finfo(w.dtype).tiny)
    return (u * s.rsqrt()) @ u.T @ w


def fastica_torch(
    x1: torch.Tensor, w_init: np.ndarray, fun: str, max_iter: int, tol: float
) -> tuple[torch.Tensor, int, bool]:
    """Parallel FastICA in torch, a port of scikit-learn's ``_ica_par``; runs on x1's device.

    Args:
        x1: (k, neurons) float64 white data.
        w_init: (k, k) initial unmixing matrix.
    Returns:
        sources (k, neurons) float64 tensor on x1's device, iterations run, converged flag.
    """
    g = _g_torch(fun)
    converged = False
    n_iter = 0
    with single_torch_thread(x1.device.type == "cpu"):
        w = _sym_decorrelation(torch.as_tensor(w_init, dtype=x1.dtype, device=x1.device))
        p = float(x1.shape[1])
        for ii in range(max_iter):
            gwtx, g_wtx = g(w @ x1)
            w1 = _sym_decorrelation(gwtx @ x1.T / p - g_wtx.unsqueeze(1) * w)
            del gwtx, g_wtx
            lim = float(((w1 * w).sum(dim=1).abs() - 1.0).abs().max())
            w = w1
            n_iter = ii + 1
            if lim < tol:
                converged = True
                break
        sources = w @ x1
    return sources, n_iter, converged
