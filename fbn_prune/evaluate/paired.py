"""Paired statistics: two (or more) models scored on the same documents, compared document by document.

Pure functions on numpy arrays; no lm-eval, no torch. :mod:`fbn_prune.evaluate.harness` collects the
per-document values, :mod:`fbn_prune.evaluate.rows` and :mod:`fbn_prune.evaluate.report` use what this module computes.

Per-document values of one metric, per model, as lm-eval's ``log_samples`` gives them:

* ``mean`` aggregation (acc, acc_norm, exact_match, ...): one number per document, shape ``(n,)``;
  the task's value is the mean.
* ``perplexity`` (lambada): the document's log-likelihood, shape ``(n,)``; value ``exp(-mean)``.
* ``weighted_perplexity`` (word/byte perplexity) and ``bits_per_byte``: ``(log-likelihood, words or
  bytes)`` per document, shape ``(n, 2)``; value ``exp(-sum ll / sum w)`` or ``-sum ll / sum w / ln 2``,
  a ratio of sums, so documents are weighted by their length exactly as lm-eval weights them.

Every supported value is a function of column sums over documents, so a bootstrap resample is a
vector of document counts ``c`` (shape ``(n,)``, summing to n) and the resampled sums are ``c @ x``.
All models and metrics of a task share the same resamples (the same seed and n give the same
count matrix), which is what makes the differences *paired*: a resample that drops a hard question
drops it for every model.

The interval is the percentile bootstrap (2.5th and 97.5th percentiles of the resampled
difference). Two identical models give a difference of exactly 0 in every resample, so a
zero-width interval. McNemar's exact test (for metrics that are 0 or 1 per document) is the
two-sided binomial test of the discordant pairs: among documents where exactly one model is right,
is "original right" as likely as "pruned right"?
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KINDS = ("mean", "perplexity", "weighted_perplexity", "bits_per_byte")
"""lm-eval aggregations whose value is a function of per-document sums (the ones bootstrapped here)."""
DEFAULT_ITERS = 10_000
DEFAULT_SEED = 1234
LEVEL = 0.95
_CELLS_PER_CHUNK = 4_000_000  # resample count matrix cells per block (32 MB of float64)


@dataclass(frozen=True)
class Paired:
    """Model ``b`` compared with model ``a`` on the same ``n`` documents (``b - a``).

    Attributes:
        n: documents.
        a, b: each model's value of the metric (as lm-eval aggregates it).
        delta: ``b - a`` in the metric's units; ``delta_low``/``delta_high``: its 95% paired
            bootstrap interval.
        retention: ``b / a`` (higher is better) or ``a / b`` (lower is better), so below 1 means
            ``b`` is worse; None where undefined (a zero denominator). ``retention_low``/``_high``:
            its interval (None where any resample is undefined).
        mcnemar_p: McNemar's exact two-sided p-value (0/1 metrics only, else None).
        a_only, b_only: documents right for ``a`` only / for ``b`` only (0/1 metrics only).
        iters, seed: the bootstrap's resamples and seed.
    """

    n: int
    a: float
    b: float
    delta: float
    delta_low: float
    delta_high: float
    retention: float | None
    retention_low: float | None
    retention_high: float | None
    mcnemar_p: float | None
    a_only: int | None
    b_only: int | None
    iters: int
    seed: int

    @property
    def significant(self) -> bool:
        """True when the 95% interval of the difference excludes zero."""
        return self.delta_low > 0 or self.delta_high < 0

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def columns(kind: str, values) -> np.ndarray:
    """Per-document values -> a float64 matrix of shape ``(n, 1)`` (mean, perplexity) or ``(n, 2)``
    (weighted_perplexity, bits_per_byte: log-likelihood, weight). Raises ValueError for a wrong shape."""
    if kind not in KINDS:
        raise ValueError(f"unsupported aggregation {kind!r}")
    x = np.asarray(values, dtype=np.float64)
    width = 2 if kind in ("weighted_perplexity", "bits_per_byte") else 1
    x = x.reshape(len(x), -1) if x.ndim == 1 or width == 1 else x
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"{kind} needs per-document values of shape (n,{'' if width == 1 else ' 2'}), got {x.shape}")
    return x


def from_sums(kind: str, sums: np.ndarray, n: int) -> np.ndarray:
    """The metric from column sums. ``sums``: shape ``(..., 1)`` or ``(..., 2)``; returns shape ``(...)``."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "mean":
            return sums[..., 0] / n
        if kind == "perplexity":
            return np.exp(-sums[..., 0] / n)
        if kind == "weighted_perplexity":
            return np.exp(-sums[..., 0] / sums[..., 1])
        if kind == "bits_per_byte":
            return -sums[..., 0] / sums[..., 1] / math.log(2)
    raise ValueError(f"unsupported aggregation {kind!r}")


def value(kind: str, values) -> float:
    """The task-level metric lm-eval reports, from per-document values."""
    x = columns(kind, values)
    return float(from_sums(kind, x.sum(axis=0), len(x)))


def resampled_sums(x: np.ndarray, iters: int = DEFAULT_ITERS, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Column sums of ``x`` (shape ``(n, k)``) over ``iters`` bootstrap resamples of its rows.

    Returns shape ``(iters, k)``. The resamples depend only on ``(n, iters, seed)``: two calls with
    the same n and seed draw the same documents, so columns of different calls are paired too.
    Drawn in blocks of rows so memory stays ~32 MB for any n.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("no documents to resample")
    rng = np.random.default_rng(seed)
    block = max(1, _CELLS_PER_CHUNK // n)
    out = np.empty((iters, x.shape[1]))
    for start in range(0, iters, block):
        rows = min(block, iters - start)
        idx = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)
        out[start:start + rows] = counts @ x
    return out


def bootstrap(kind: str, per_model: list, iters: int = DEFAULT_ITERS, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Each model's metric in each resample: shape ``(models, iters)``. ``per_model``: one array of
    per-document values per model, all for the same n documents in the same order."""
    xs = [columns(kind, v) for v in per_model]
    n = len(xs[0])
    if any(len(x) != n for x in xs):
        raise ValueError("every model needs values for the same documents")
    width = xs[0].shape[1]
    sums = resampled_sums(np.concatenate(xs, axis=1), iters, seed)  # (iters, models * width)
    return from_sums(kind, sums.reshape(iters, len(xs), width), n).T


def is_binary(values) -> bool:
    """True when every per-document value is 0 or 1 (accuracy-type), so McNemar's test applies."""
    x = np.asarray(values, dtype=np.float64)
    return x.ndim == 1 and bool(np.all((x == 0) | (x == 1)))


def mcnemar(a, b) -> tuple[float, int, int]:
    """McNemar's exact test for paired 0/1 outcomes ``a`` and ``b`` (shape ``(n,)``).

    Returns (two-sided p-value, documents right for ``a`` only, documents right for ``b`` only).
    The p-value is the binomial test of ``b_only`` successes in ``a_only + b_only`` trials at 1/2;
    1.0 when no document is discordant.
    """
    from scipy.stats import binomtest  # scipy.stats is heavy to import (most of a second); only the report needs it

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a_only = int(np.sum((a == 1) & (b == 0)))
    b_only = int(np.sum((a == 0) & (b == 1)))
    if a_only + b_only == 0:
        return 1.0, 0, 0
    return float(binomtest(b_only, a_only + b_only, 0.5).pvalue), a_only, b_only


def _retention(a: np.ndarray | float, b: np.ndarray | float, higher_is_better: bool):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(b, a) if higher_is_better else np.divide(a, b)


def _interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(samples, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def compare(kind: str, higher_is_better: bool, per_model: list, pairs: list[tuple[int, int]],
            iters: int = DEFAULT_ITERS, seed: int = DEFAULT_SEED) -> list[Paired]:
    """Paired comparisons of one metric between models on the same documents.

    Args:
        kind: the metric's lm-eval aggregation (one of :data:`KINDS`).
        higher_is_better: the metric's direction (sets which way retention is taken).
        per_model: per-document values of each model, shape ``(n,)`` or ``(n, 2)`` (see the module doc).
        pairs: ``(i, j)`` index pairs; each gives ``per_model[j] - per_model[i]``.

    Returns one :class:`Paired` per pair, in order. One bootstrap serves every pair.
    """
    stats = bootstrap(kind, per_model, iters, seed)  # (models, iters)
    points = [value(kind, v) for v in per_model]
    binary = all(is_binary(v) for v in per_model) and kind == "mean"
    out = []
    for i, j in pairs:
        diff = stats[j] - stats[i]
        lo, hi = _interval(diff)
        ret = _retention(points[i], points[j], higher_is_better)
        ret_point = float(ret) if np.isfinite(ret) else None
        ret_lo = ret_hi = None
        if ret_point is not None:
            rs = _retention(stats[i], stats[j], higher_is_better)
            if np.all(np.isfinite(rs)):
                ret_lo, ret_hi = _interval(rs)
        p = a_only = b_only = None
        if binary:
            p, a_only, b_only = mcnemar(per_model[i], per_model[j])
        out.append(Paired(
            n=len(columns(kind, per_model[i])), a=points[i], b=points[j], delta=points[j] - points[i],
            delta_low=lo, delta_high=hi, retention=ret_point, retention_low=ret_lo, retention_high=ret_hi,
            mcnemar_p=p, a_only=a_only, b_only=b_only, iters=iters, seed=seed,
        ))
    return out


__all__ = [
    "DEFAULT_ITERS",
    "DEFAULT_SEED",
    "KINDS",
    "Paired",
    "bootstrap",
    "columns",
    "compare",
    "from_sums",
    "is_binary",
    "mcnemar",
    "resampled_sums",
    "value",
]
