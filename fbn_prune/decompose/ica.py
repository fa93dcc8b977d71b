"""Per-layer functional-network decomposition ("CanICA", spatial ICA as in nilearn).

One layer's activations for one calibration run, ``signal`` of shape (tokens, neurons),
become ``k`` spatial maps of shape (k, neurons):

1. z-score every neuron over the tokens (float32, std floored at 1e-6);
2. reduce the (neurons x tokens) matrix ``M = Z^T`` to its top ``k`` principal directions
   with a seeded randomized SVD (centred across neurons, i.e. PCA with neurons as
   samples), giving the (neurons x k) matrix ``U * S``;
3. whiten it to unit variance (sklearn's "unit-variance" / "eigh" whitening, computed
   once here in float64 so both engines start from the same data) and run parallel
   FastICA with neurons as samples and ``k`` features (``cube``, ``logcosh`` or ``exp``);
4. z-score every source across neurons and flip its sign so that its largest-|value|
   entry is positive.

Two FastICA engines implement step 3 with the same algorithm, whitened input and initial
unmixing matrix (``numpy.random.RandomState(seed).normal(size=(k, k))``, exactly what
scikit-learn draws for ``random_state=seed``): ``"sklearn"`` (CPU,
``sklearn.decomposition.FastICA`` with BLAS limited to one thread) and ``"torch"`` (any
device, a line-by-line port of scikit-learn's ``_ica_par``), both in fastica.py. ``"auto"`` picks torch when
the work runs on CUDA (``device``, by default CUDA when available), scikit-learn otherwise.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from fbn_prune.decompose.fastica import FUNS, ICA_DTYPE, fastica_sklearn, fastica_torch, initial_unmixing, whiten
from fbn_prune.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["CanICA", "decompose", "ENGINES"]

ENGINES = ("auto", "sklearn", "torch")

STD_FLOOR = 1e-6
"""Neurons whose standard deviation over tokens is below this are divided by it instead."""

POWER_ITERATIONS = 3
"""Subspace (power) iterations of the randomized SVD; 2-4 is the usual range."""

OVERSAMPLING = 10
"""Extra random directions drawn by the randomized SVD beyond ``k`` (for accuracy)."""


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def decompose(
    signal: torch.Tensor,
    n_components: int = 64,
    *,
    seed: int = 0,
    engine: str = "auto",
    fun: str = "cube",
    max_iter: int = 300,
    tol: float = 1e-4,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Decompose one layer's activations for one run into z-scored spatial ICA maps.

    Args:
        signal: (tokens, neurons) float16/bfloat16/float32 activations (any device). It is
            not modified.
        n_components: number of maps ``k``; ``1 <= k <= min(tokens, neurons)``.
        seed: integer in [0, 2**32); seeds the randomized SVD and FastICA's initial
            unmixing matrix. The global torch/numpy random states are left untouched.
        engine: ``"sklearn"``, ``"torch"`` or ``"auto"`` (torch when ``device`` is CUDA, else
            sklearn).
        fun: FastICA nonlinearity: ``"cube"`` (default), ``"logcosh"`` or ``"exp"``.
        max_iter: maximum FastICA iterations.
        tol: FastICA convergence tolerance on ``max(|abs(diag(W1 W^T)) - 1|)``.
        device: where the torch work runs (z-scoring, SVD, torch FastICA). Default: CUDA
            if available, else CPU.

    Returns:
        maps: (n_components, neurons) float32 tensor on the CPU; every row has mean 0 and
        standard deviation 1 across neurons, and its largest-|value| entry is positive.

    Raises:
        UserError: bad shape, too few tokens/neurons for ``n_components``, non-finite
            values, or an unknown ``engine``/``fun``.
    """
    model = CanICA(n_components, seed=seed, engine=engine, fun=fun, max_iter=max_iter, tol=tol, device=device)
    return model.fit(signal).maps_


class CanICA:
    """scikit-learn-style estimator for the per-layer decomposition (see module docstring).

    Attributes set by :meth:`fit`:
        maps_: (n_components, neurons) float32 CPU tensor, z-scored maps (as ``decompose``).
        n_iter_: FastICA iterations run.
        converged_: whether FastICA reached ``tol`` within ``max_iter``.
        engine_: the engine actually used, ``"sklearn"`` or ``"torch"``.
        device_: the torch device the z-scoring/SVD (and torch FastICA) ran on.
        explained_variance_ratio_: share of the centred, z-scored signal's variance kept
            by the ``k`` principal directions.
        singular_values_: (n_components,) float32 CPU tensor, the top singular values.
        reduce_seconds_: wall time of z-scoring + randomized SVD.
        ica_seconds_: wall time of whitening + FastICA + map normalisation.
    """

    def __init__(
        self,
        n_components: int = 64,
        *,
        seed: int = 0,
        engine: str = "auto",
        fun: str = "cube",
        max_iter: int = 300,
        tol: float = 1e-4,
        device: str | torch.device | None = None,
    ) -> None:
        self.n_components = n_components
        self.seed = seed
        self.engine = engine
        self.fun = fun
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def fit(self, X: torch.Tensor | np.ndarray, y: object = None) -> "CanICA":
        """Fit on one layer's activations ``X`` of shape (tokens, neurons); returns self."""
        signal = _as_tensor(X)
        k = self._validate(signal)
        device = _resolve_device(self.device)
        engine = _resolve_engine(self.engine, device)

        t0 = time.perf_counter()
        z = _zscore_neurons(signal, device)  # (tokens, neurons) float32
        reduced, singular_values, evr = _reduce(z, k, seed=self.seed)  # (neurons, k)
        del z
        _sync(device)
        t1 = time.perf_counter()

        x1 = whiten(reduced)  # (k, neurons) float64, white
        del reduced
        w_init = initial_unmixing(k, self.seed)  # (k, k) float64 numpy
        if engine == "sklearn":
            sources, n_iter, converged = fastica_sklearn(x1, w_init, self.fun, self.max_iter, self.tol)
        else:
            sources, n_iter, converged = fastica_torch(x1, w_init, self.fun, self.max_iter, self.tol)
        maps = _normalise_maps(sources)  # (k, neurons) float32 on CPU
        _sync(device)
        t2 = time.perf_counter()

        if not converged:
            log.warning(
                "FastICA (%s engine, fun=%s) did not converge in %d iterations (tol=%g); using the last estimate",
                engine, self.fun, n_iter, self.tol,
            )
        self.maps_ = maps
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.engine_ = engine
        self.device_ = device
        self.singular_values_ = singular_values
        self.explained_variance_ratio_ = evr
        self.reduce_seconds_ = t1 - t0
        self.ica_seconds_ = t2 - t1
        return self

    def _validate(self, signal: torch.Tensor) -> int:
        if signal.ndim != 2:
            raise UserError(f"signal must be a 2-D (tokens, neurons) array, got shape {tuple(signal.shape)}")
        if signal.is_complex() or signal.dtype == torch.bool:
            raise UserError(f"signal must hold real numbers, got dtype {signal.dtype}")
        if self.engine not in ENGINES:
            raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.fun not in FUNS:
            raise UserError(f"fun must be one of {', '.join(FUNS)}, got {self.fun!r}")
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UserError(f"n_components must be a positive integer, got {k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**32:
            raise UserError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise UserError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if not self.tol > 0:
            raise UserError(f"tol must be positive, got {self.tol!r}")
        tokens, neurons = signal.shape
        if tokens < k:
            raise UserError(f"need at least {k} tokens for {k} components, got {tokens}")
        if neurons < k:
            raise UserError(f"need at least {k} neurons for {k} components, got {neurons}")
        return int(k)


# --------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------


def _as_tensor(X: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        return X.detach()
    if isinstance(X, np.ndarray):
        return torch.from_numpy(X)
    raise UserError(f"signal must be a torch.Tensor or numpy array, got {type(X).__name__}")


def _resolve_engine(engine: str, device: torch.device) -> str:
    """``auto``: the torch engine where the work runs on a GPU, scikit-learn on the CPU."""
    if engine == "auto":
        return "torch" if device.type == "cuda" else "sklearn"
    return engine


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"unknown device {device!r}") from exc


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _zscore_neurons(signal: torch.Tensor, device: torch.device, chunk: int = 2048) -> torch.Tensor:
    """(tokens, neurons) any float dtype -> new (tokens, neurons) float32 tensor on ``device``,
    every column z-scored over tokens (population std, floored at ``STD_FLOOR``).

    Two passes of column sums over blocks of ``chunk`` tokens (float32 within a block,
    float64 across blocks): torch's column-wise ``std_mean`` is ~20x slower on the CPU, and
    blocks bound the temporary memory of the squares.
    """
    z = signal.to(device=device, dtype=torch.float32, copy=True)
    tokens = z.shape[0]
    total = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)  # (neurons,)
    for i in range(0, tokens, chunk):
        total += z[i : i + chunk].sum(dim=0)
    mean = total / tokens
    if not bool(torch.isfinite(mean).all()):
        raise UserError("signal contains NaN or infinite values")
    z.sub_(mean.float())
    total.zero_()
    for i in range(0, tokens, chunk):
        block = z[i : i + chunk]
        total += (block * block).sum(dim=0)
    std = (total / tokens).sqrt()
    if not bool(torch.isfinite(std).all()):
        raise UserError("signal contains NaN, infinite or too large values (float32 overflow)")
    z.div_(std.clamp_min_(STD_FLOOR).float())
    return z


def _orthonormalize(y: torch.Tensor, rounds: int = 2) -> torch.Tensor:
    """(m, l) -> (m, l) with orthonormal columns spanning the same space (float32 in, out).

    Gram-matrix orthonormalization in float64, repeated (as in CholeskyQR2): much faster
    than Householder QR on tall matrices on the CPU, and rank-safe (eigenvalue floor).
    """
    for _ in range(rounds):
        gram = y.T.double() @ y.double()  # (l, l)
        d, v = torch.linalg.eigh(gram)
        d = d.clamp_min(d.max().clamp_min(torch.finfo(torch.float64).tiny) * 1e-12)
        y = y @ (v * d.rsqrt()).to(y.dtype)
    return y


def _reduce(z: torch.Tensor, k: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Top-``k`` PCA of the (neurons x tokens) matrix ``A = Z^T - 1 c^T`` (``c``: per-token
    mean over neurons, i.e. centred with neurons as samples) by randomized SVD
    (Halko et al. 2011; power iterations re-orthonormalized every half step).

    Args:
        z: (tokens, neurons) float32, z-scored.
    Returns:
        reduced: (neurons, k) float32 ``U * S`` on z's device;
        singular_values: (k,) float32 CPU;
        explained_variance_ratio: float, ``sum(S^2) / ||A||_F^2``.
    """
    tokens, neurons = z.shape
    width = min(k + OVERSAMPLING, tokens, neurons)
    c = z.mean(dim=1)  # (tokens,)

    def a_times(g: torch.Tensor) -> torch.Tensor:  # (tokens, l) -> (neurons, l): A @ g
        return z.T @ g - (c @ g).unsqueeze(0)

    def at_times(q: torch.Tensor) -> torch.Tensor:  # (neurons, l) -> (tokens, l): A^T @ q
        return z @ q - torch.outer(c, q.sum(dim=0))

    # Draw the test matrix on the CPU so the result does not depend on the device's RNG.
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    omega = torch.randn(tokens, width, generator=gen, dtype=torch.float32).to(z.device)
    q = _orthonormalize(a_times(omega))  # (neurons, l)
    for _ in range(POWER_ITERATIONS):
        p = _orthonormalize(at_times(q))  # (tokens, l)
        q = _orthonormalize(a_times(p))  # (neurons, l)
    b_t = at_times(q)  # (tokens, l) = (Q^T A)^T
    u_b, s, _ = torch.linalg.svd(b_t.T, full_matrices=False)  # (l, l), (l,)
    reduced = q @ (u_b[:, :k] * s[:k])  # (neurons, k)

    total = float(torch.linalg.vector_norm(z).double() ** 2) - neurons * float(torch.linalg.vector_norm(c).double() ** 2)
    kept = float((s[:k].double() ** 2).sum())
    evr = kept / total if total > 0 else 0.0
    return reduced, s[:k].float().cpu(), evr


def _normalise_maps(sources: torch.Tensor) -> torch.Tensor:
    """(k, neurons) sources -> (k, neurons) float32 CPU maps, z-scored across neurons, signed
    so that each row's largest-|value| entry is positive."""
    s = sources.to(ICA_DTYPE)
    s = s - s.mean(dim=1, keepdim=True)
    s = s / s.std(dim=1, correction=0, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
    peak = s.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(torch.gather(s, 1, peak))
    s = s * torch.where(sign == 0, torch.ones_like(sign), sign)
    return s.float().cpu().contiguous()
