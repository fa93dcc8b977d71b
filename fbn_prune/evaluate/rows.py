"""Metric rows of original against pruned, one per task, metric and filter, with paired intervals.

Metric rows: one per (task, metric, filter) of the original and the pruned model, with the paired
difference of the two (its 95% bootstrap interval and McNemar's test).

Conventions. A metric is *accuracy-type* ("points") when higher is better and both values lie
in [0, 1]: eval.md shows it in percent and its delta in percentage points. ``delta`` is
pruned - original in the metric's own units; ``delta_low``/``delta_high`` its 95% paired
bootstrap interval (:mod:`fbn_prune.evaluate.paired`); ``significant`` means the interval excludes zero.
``retention`` is pruned/original for higher-is-better metrics and original/pruned for
lower-is-better ones (perplexity, bits per byte), so retention below 1 always means the pruned
model is worse.

Public API: :func:`metric_rows`, :data:`PAIRED_KEYS`, :func:`aligned`, :func:`add_paired`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fbn_prune.evaluate import paired
from fbn_prune.evaluate.record import PairComparison

LOWER_IS_BETTER_HINTS = ("perplexity", "bits_per_byte", "loss")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metric_rows(original: dict, pruned: dict) -> list[dict]:
    """One row per (task, metric, filter) that either model reports, in lm-eval's order."""
    rows: list[dict] = []
    o_res, p_res = original.get("results", {}), pruned.get("results", {})
    for task in list(dict.fromkeys([*p_res, *o_res])):
        o, p = o_res.get(task, {}), p_res.get(task, {})
        hib_table = {**(original.get("higher_is_better", {}).get(task) or {}),
                     **(pruned.get("higher_is_better", {}).get(task) or {})}
        for key in dict.fromkeys([*p, *o]):
            if "," not in key:
                continue
            metric, filt = key.split(",", 1)
            if metric.endswith("_stderr"):
                continue
            ov, pv = o.get(key), p.get(key)
            if not (_is_number(ov) or _is_number(pv)):
                continue
            ov = float(ov) if _is_number(ov) else None
            pv = float(pv) if _is_number(pv) else None
            hib = hib_table.get(metric)
            if hib is None:
                hib = not any(h in metric for h in LOWER_IS_BETTER_HINTS)
            both = ov is not None and pv is not None
            points = bool(hib) and both and 0 <= ov <= 1 and 0 <= pv <= 1  # type: ignore[operator]
            retention = None
            if both:
                if hib and ov != 0:
                    retention = pv / ov  # type: ignore[operator]
                elif not hib and pv > 0 and ov >= 0:  # type: ignore[operator]
                    retention = ov / pv  # type: ignore[operator]
            stderr = f"{metric}_stderr,{filt}"
            rows.append({
                "task": task, "metric": metric, "filter": filt, "higher_is_better": bool(hib), "points": points,
                "original": ov, "original_stderr": o.get(stderr) if _is_number(o.get(stderr)) else None,
                "pruned": pv, "pruned_stderr": p.get(stderr) if _is_number(p.get(stderr)) else None,
                "delta": pv - ov if both else None,  # type: ignore[operator]
                "retention": retention,
                "n_original": (original.get("n-samples", {}).get(task) or {}).get("effective"),
                "n_pruned": (pruned.get("n-samples", {}).get(task) or {}).get("effective"),
            })
    return rows


PAIRED_KEYS = ("n_paired", "delta_low", "delta_high", "retention_low", "retention_high", "mcnemar_p",
               "original_only", "pruned_only", "significant")
"""Fields each metric row gets from the paired comparison (None where it does not apply)."""


def aligned(docs: list[dict], task: str, metric: str, filt: str) -> list[np.ndarray] | None:
    """Per-document values of ``metric`` for each model, on the documents every model answered, in one
    order: a list of arrays of shape ``(n,)`` or ``(n, 2)``. ``docs``: each model's ``task -> records``
    (see :func:`fbn_prune.evaluate.harness.per_doc`). None when a model lacks the task or the models saw
    different documents (their hashes differ)."""
    tables = []
    for d in docs:
        rows = (d or {}).get(task)
        if not rows:
            return None
        tables.append({r["doc_id"]: r for r in rows if r["filter"] == filt and metric in r["values"]})
    ids = sorted(set.intersection(*(set(t) for t in tables)))
    if not ids:
        return None
    for i in ids:
        hashes = {t[i].get("doc_hash") for t in tables}
        if len(hashes) > 1:
            return None
    return [np.asarray([t[i]["values"][metric] for i in ids], dtype=np.float64) for t in tables]


def _paired_fields(p: paired.Paired | None) -> dict:
    if p is None:
        return {k: None for k in PAIRED_KEYS}
    return {"n_paired": p.n, "delta_low": p.delta_low, "delta_high": p.delta_high, "retention_low": p.retention_low,
            "retention_high": p.retention_high, "mcnemar_p": p.mcnemar_p, "original_only": p.a_only,
            "pruned_only": p.b_only, "significant": p.significant}


def add_paired(rows: list[dict], comparison: PairComparison) -> None:
    """Add the paired difference (pruned - original), its 95% bootstrap interval and McNemar's test to
    each row whose metric lm-eval aggregates from per-document values (:data:`fbn_prune.evaluate.paired.KINDS`)."""
    aggs = comparison.aggregations or {}
    docs = [comparison.original.get("docs"), comparison.pruned_results.get("docs")]
    s = comparison.settings
    for row in rows:
        kind = (aggs.get(row["task"]) or {}).get(row["metric"])
        values = aligned(docs, row["task"], row["metric"], row["filter"]) if kind else None
        result = None
        if values is not None:
            result = paired.compare(kind, row["higher_is_better"], values, [(0, 1)],
                                    s.get("paired_iters", paired.DEFAULT_ITERS),
                                    s.get("paired_seed", paired.DEFAULT_SEED))[0]
        row.update(_paired_fields(result))

