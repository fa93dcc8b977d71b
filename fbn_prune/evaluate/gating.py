"""Applying the gate (:class:`fbn_prune.config.gate.Gate`) to the metric rows of one pruned checkpoint.

The gate checks each metric on its own: ``max_drop`` (percentage points) applies to accuracy-type
metrics, ``min_retention`` to every metric with a defined retention; ``metrics`` restricts either to
the named metrics; ``on="ci"`` gates the pessimistic bound of the interval (``delta_low``,
``retention_low``) instead of the measured value.

Public API: :func:`check_row`, :func:`apply_gate`.
"""

from __future__ import annotations

from fbn_prune.config.gate import Gate


def check_row(row: dict, gate: Gate) -> dict | None:
    """This metric's gate verdict ({"value", "limit", "passed"}), or None when the gate does not apply to it."""
    if gate.metrics and row["metric"] not in gate.metrics:
        return None
    ci = gate.on == "ci"
    if gate.max_drop is not None:
        if not row["points"]:
            return None
        if ci and row.get("delta_low") is None:
            return None
        drop = -100 * row["delta_low"] if ci else 100 * (row["original"] - row["pruned"])
        return {"value": round(drop, 6), "limit": gate.max_drop, "on": gate.on, "passed": drop <= gate.max_drop + 1e-9}
    retention = row.get("retention_low") if ci else row["retention"]
    if retention is None:
        return None
    return {"value": retention, "limit": gate.min_retention, "on": gate.on,
            "passed": retention >= gate.min_retention - 1e-12}


def apply_gate(rows: list[dict], gate: Gate | None) -> dict | None:
    """Mark each row's ``gate`` verdict and summarise; None without a gate."""
    for row in rows:
        row["gate"] = check_row(row, gate) if gate else None
    if gate is None:
        return None
    checked = [r for r in rows if r["gate"] is not None]
    failures = [r for r in checked if not r["gate"]["passed"]]
    if not checked:
        which = f" named {', '.join(gate.metrics)}" if gate.metrics else ""
        kind = "accuracy-type metric (higher is better, 0-1)" if gate.max_drop is not None else "metric with a retention"
        summary = (f"the gate ({gate.describe()}) checked nothing: no evaluated {kind}{which}"
                   + ("; use --min-retention for perplexity." if gate.max_drop is not None else "."))
    elif failures:
        summary = "evaluation gate failed: " + "; ".join(_failure_text(r, gate) for r in failures[:4])
        summary += f" (and {len(failures) - 4} more)" if len(failures) > 4 else ""
    else:
        summary = f"evaluation gate passed: {gate.describe()} ({len(checked)} checked)"
    return {"rule": gate.rule, "threshold": gate.threshold, "on": gate.on,
            "metrics": list(gate.metrics) if gate.metrics else None,
            "checked": len(checked), "passed": bool(checked) and not failures,
            "failures": [{k: r[k] for k in ("task", "metric", "filter", "original", "pruned", "retention", "gate")}
                         for r in failures],
            "summary": summary}


def _failure_text(row: dict, gate: Gate) -> str:
    name = f"{row['task']} {row['metric']}" + ("" if row["filter"] == "none" else f" [{row['filter']}]")
    if gate.max_drop is not None:
        how = "may have fallen up to" if gate.on == "ci" else "fell"
        return f"{name} {how} {row['gate']['value']:.2f} points (at most {gate.max_drop:g} allowed)"
    how = "may keep as little as" if gate.on == "ci" else "kept"
    return f"{name} {how} {row['gate']['value']:.1%} (at least {gate.min_retention:.1%} required)"
