"""The evaluation report: eval.json (every metric of both models, with paired intervals), eval.md (a
table), eval-docs.jsonl (per-document results), the gate, and the model card's evaluation section with
Hub ``model-index`` metadata.

eval.json of one pruned checkpoint (``format: fbn_prune.eval/2``)::

    created, base {spec, path, hub_id, name, sha256, identity, parameters, cached_tasks},
    pruned {path, name, label, layout, parameters, base_model, method, achieved_ratio, cached_tasks,
            base_check {verdict, reason}},
    any_base,
    settings {tasks, limit, task_limits, documents, num_fewshot, batch_size, max_length, device,
              dtype, include_path, data_dir, bootstrap_iters, seeds, model_class, paired_iters, paired_seed},
    versions {python, fbn_prune, torch, transformers, lm_eval, ...},
    tasks {requested name: {tasks, groups, source, data_sha256}},
    metrics [{task, metric, filter, higher_is_better, points, original, original_stderr, pruned,
              pruned_stderr, delta, retention, n_original, n_pruned,
              n_paired, delta_low, delta_high, retention_low, retention_high, mcnemar_p,
              original_only, pruned_only, significant, gate}],
    gate null | {rule, threshold, on, metrics, checked, passed, failures [...], summary},
    documents_file "eval-docs.jsonl",
    lm_eval {original: {...}, pruned: {...}}   (lm-eval's own result dicts, unchanged),
    timings {prepare_s, original_s, pruned_s, total_s}

eval.json of several checkpoints (``format: fbn_prune.eval-compare/1``, :func:`build_many`)::

    created, base, pruned [...], labels ["original", name, ...], any_base, settings, versions, tasks,
    metrics [{task, metric, filter, higher_is_better, points, values {label: v}, stderr {label: se}}],
    pairs [{task, metric, filter, points, higher_is_better, a, b, value_a, value_b, n, delta, delta_low,
            delta_high, retention, retention_low, retention_high, mcnemar_p, a_only, b_only, significant,
            iters, seed}],
    gates [per checkpoint: null | {pruned, ...gate}], passed, documents_file, reports [each checkpoint's
    own eval.json record], timings

eval-docs.jsonl: one line per (task, document, filter), see :func:`doc_lines`.

Conventions. A metric is *accuracy-type* ("points") when higher is better and both values lie
in [0, 1]: eval.md shows it in percent and its delta in percentage points. ``delta`` is
pruned - original in the metric's own units; ``delta_low``/``delta_high`` its 95% paired
bootstrap interval (:mod:`fbn_prune.evaluate.paired`); ``significant`` means the interval excludes zero.
``retention`` is pruned/original for higher-is-better metrics and original/pruned for
lower-is-better ones (perplexity, bits per byte), so retention below 1 always means the pruned
model is worse.

The gate (:class:`Gate`) checks each metric on its own: ``max_drop`` (percentage points) applies
to accuracy-type metrics, ``min_retention`` to every metric with a defined retention; ``metrics``
restricts either to the named metrics; ``on="ci"`` gates the pessimistic bound of the interval
(``delta_low``, ``retention_low``) instead of the measured value.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from fbn_prune.evaluate import paired
from fbn_prune.config.gate import GATE_ON, Gate  # noqa: F401  (re-exported: report.Gate)
from fbn_prune.errors import UserError
from fbn_prune._io.atomic import atomic_write as _atomic_write

FORMAT = "fbn_prune.eval/2"
FORMAT_MANY = "fbn_prune.eval-compare/1"
DOCS_FILE = "eval-docs.jsonl"
LOWER_IS_BETTER_HINTS = ("perplexity", "bits_per_byte", "loss")

# lm-eval task -> (dataset name, Hub dataset id, config) for the card's model-index
HUB_DATASETS = {
    "piqa": ("PIQA", "ybisk/piqa", None),
    "arc_easy": ("ARC-Easy", "allenai/ai2_arc", "ARC-Easy"),
    "arc_challenge": ("ARC-Challenge", "allenai/ai2_arc", "ARC-Challenge"),
    "hellaswag": ("HellaSwag", "Rowan/hellaswag", None),
    "winogrande": ("WinoGrande", "allenai/winogrande", "winogrande_xl"),
    "openbookqa": ("OpenBookQA", "allenai/openbookqa", "main"),
    "lambada_openai": ("LAMBADA (OpenAI)", "EleutherAI/lambada_openai", None),
    "wikitext": ("WikiText-2", "wikitext", "wikitext-2-v1"),
    "boolq": ("BoolQ", "google/boolq", None),
}


# ----------------------------------------------------------------------------- the gate


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
        return f"{name} {how} {row['gate']['value']:.2f} points (at most {_num(gate.max_drop)} allowed)"
    how = "may keep as little as" if gate.on == "ci" else "kept"
    return f"{name} {how} {row['gate']['value']:.1%} (at least {gate.min_retention:.1%} required)"


# ----------------------------------------------------------------------------- rows
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
    (see :func:`fbn_prune.evaluate.run.per_doc`). None when a model lacks the task or the models saw
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


def add_paired(rows: list[dict], comparison: dict) -> None:
    """Add the paired difference (pruned - original), its 95% bootstrap interval and McNemar's test to
    each row whose metric lm-eval aggregates from per-document values (:data:`fbn_prune.evaluate.paired.KINDS`)."""
    aggs = comparison.get("aggregations") or {}
    docs = [comparison["original"].get("docs"), comparison["pruned_results"].get("docs")]
    s = comparison["settings"]
    for row in rows:
        kind = (aggs.get(row["task"]) or {}).get(row["metric"])
        values = aligned(docs, row["task"], row["metric"], row["filter"]) if kind else None
        result = None
        if values is not None:
            result = paired.compare(kind, row["higher_is_better"], values, [(0, 1)],
                                    s.get("paired_iters", paired.DEFAULT_ITERS),
                                    s.get("paired_seed", paired.DEFAULT_SEED))[0]
        row.update(_paired_fields(result))


def _lm_eval_part(results: dict) -> dict:
    """lm-eval's own result dict of one model (without the per-document records, which go to the jsonl)."""
    return {k: v for k, v in results.items() if k not in ("docs", "max_length")}


def build(comparison: dict, gate: Gate | None = None) -> dict:
    """The eval.json record from :func:`fbn_prune.evaluate.run.compare`'s result (one pruned checkpoint)."""
    rows = metric_rows(comparison["original"], comparison["pruned_results"])
    add_paired(rows, comparison)
    verdict = apply_gate(rows, gate)
    return {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base": comparison["base"],
        "pruned": comparison["pruned"],
        "any_base": comparison.get("any_base", False),
        "settings": comparison["settings"],
        "versions": comparison["versions"],
        "tasks": comparison["tasks"],
        "metrics": rows,
        "gate": verdict,
        "documents_file": DOCS_FILE,
        "lm_eval": {"original": _lm_eval_part(comparison["original"]),
                    "pruned": _lm_eval_part(comparison["pruned_results"])},
        "timings": comparison["timings"],
    }


def build_many(comparison: dict, records: list[dict]) -> dict:
    """The comparison record of several pruned checkpoints (:func:`fbn_prune.evaluate.run.compare_many`):
    every model's value per metric, and paired intervals for each checkpoint against the original and
    for each pair of checkpoints. ``records`` are the checkpoints' own records (:func:`build`)."""
    labels = comparison["labels"]
    results = [comparison["original"], *comparison["pruned_results"]]
    docs = [r.get("docs") for r in results]
    aggs = comparison.get("aggregations") or {}
    s = comparison["settings"]
    k = len(labels)
    pairs_idx = [(0, j) for j in range(1, k)] + [(i, j) for i in range(1, k) for j in range(i + 1, k)]
    metrics, pairs = [], []
    for row in metric_rows(results[0], results[1]):
        others = [metric_rows(results[0], r) for r in results[2:]]
        key = (row["task"], row["metric"], row["filter"])
        same = [next((o for o in rows if (o["task"], o["metric"], o["filter"]) == key), None)
                for rows in others]
        values = {labels[0]: row["original"], labels[1]: row["pruned"]}
        stderr = {labels[0]: row["original_stderr"], labels[1]: row["pruned_stderr"]}
        for lab, o in zip(labels[2:], same):
            values[lab] = o["pruned"] if o else None
            stderr[lab] = o["pruned_stderr"] if o else None
        points = row["higher_is_better"] and all(v is not None and 0 <= v <= 1 for v in values.values())
        metrics.append({"task": row["task"], "metric": row["metric"], "filter": row["filter"],
                        "higher_is_better": row["higher_is_better"], "points": points, "values": values,
                        "stderr": stderr})
        kind = (aggs.get(row["task"]) or {}).get(row["metric"])
        per_model = aligned(docs, row["task"], row["metric"], row["filter"]) if kind else None
        if per_model is None:
            continue
        found = paired.compare(kind, row["higher_is_better"], per_model, pairs_idx, s.get("paired_iters", paired.DEFAULT_ITERS),
                               s.get("paired_seed", paired.DEFAULT_SEED))
        for (i, j), p in zip(pairs_idx, found):
            pairs.append({"task": row["task"], "metric": row["metric"], "filter": row["filter"], "points": points,
                          "higher_is_better": row["higher_is_better"], **p.to_dict(), "value_a": p.a, "value_b": p.b,
                          "a": labels[i], "b": labels[j], "significant": p.significant})
    gates = [{"pruned": lab, **(r["gate"] or {})} if r["gate"] else None for lab, r in zip(labels[1:], records)]
    return {
        "format": FORMAT_MANY,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base": comparison["base"],
        "pruned": comparison["pruned"],
        "labels": labels,
        "any_base": comparison.get("any_base", False),
        "settings": s,
        "versions": comparison["versions"],
        "tasks": comparison["tasks"],
        "metrics": metrics,
        "pairs": pairs,
        "gates": gates,
        "passed": all(g is None or g["passed"] for g in gates),
        "documents_file": DOCS_FILE,
        "reports": records,
        "timings": comparison["timings"],
    }


def doc_lines(labels: list[str], results: list[dict]) -> list[dict]:
    """One JSON line per (task, document, filter): ``{"task", "doc_id", "doc_hash", "filter",
    "metrics": {metric: {model label: number | [log-likelihood, weight]}}}``, models in ``labels`` order."""
    merged: dict[tuple, dict] = {}
    for label, res in zip(labels, results):
        for task, rows in (res.get("docs") or {}).items():
            for r in rows:
                line = merged.setdefault((task, r["filter"], r["doc_id"]), {
                    "task": task, "doc_id": r["doc_id"], "doc_hash": r.get("doc_hash"), "filter": r["filter"],
                    "metrics": {}})
                for metric, v in r["values"].items():
                    line["metrics"].setdefault(metric, {})[label] = v
    return [merged[k] for k in sorted(merged, key=lambda k: (k[0], k[1], k[2]))]


def read_docs(path: str | os.PathLike[str]) -> dict[str, dict[str, list[dict]]]:
    """An eval-docs.jsonl file back into each model's ``task -> per-document records`` (the shape
    :func:`aligned` and :func:`fbn_prune.evaluate.run.per_doc` use), keyed by model label."""
    out: dict[str, dict[str, list[dict]]] = {}
    for text in Path(path).read_text(encoding="utf-8").splitlines():
        if not text.strip():
            continue
        line = json.loads(text)
        for metric, per_model in line["metrics"].items():
            for label, v in per_model.items():
                rows = out.setdefault(label, {}).setdefault(line["task"], [])
                if not rows or (rows[-1]["doc_id"], rows[-1]["filter"]) != (line["doc_id"], line["filter"]):
                    rows.append({"doc_id": line["doc_id"], "doc_hash": line.get("doc_hash"),
                                 "filter": line["filter"], "values": {}})
                rows[-1]["values"][metric] = v
    return out


def passed(record: dict) -> bool:
    """True when the record has no gate or its gate held."""
    return record.get("gate") is None or bool(record["gate"]["passed"])


# ----------------------------------------------------------------------------- markdown
def _num(v: float) -> str:
    return f"{v:g}"


def _value(v: float | None, points: bool) -> str:
    if v is None:
        return "n/a"
    if points:
        return f"{100 * v:.2f}"
    a = abs(v)
    return f"{v:,.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 10 else f"{v:.3f}"


def _signed(v: float | None, points: bool) -> str:
    if v is None:
        return "n/a"
    text = _value(abs(v), points)
    return ("+" if v > 0 else "-" if v < 0 else "±") + text


def _metric_label(row: dict) -> str:
    arrow = "↑" if row["higher_is_better"] else "↓"
    filt = "" if row["filter"] == "none" else f" [{row['filter']}]"
    return f"{row['metric']}{filt} {arrow}"


def _interval(low: float | None, high: float | None, points: bool) -> str:
    if low is None or high is None:
        return "n/a"
    return f"[{_signed(low, points)}, {_signed(high, points)}]"


def _p(v: float | None) -> str:
    if v is None:
        return "–"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def table(record: dict) -> str:
    """The Markdown table: task, metric, original, pruned, delta with its 95% paired interval, retention,
    McNemar's p (and the gate with a gate)."""
    gated = record.get("gate") is not None
    head = "| task | metric | original | pruned | delta | 95% CI | retention | McNemar p |" + (" gate |" if gated else "")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|" + ("---|" if gated else "")
    lines = [head, rule]
    for r in record["metrics"]:
        cells = [r["task"], _metric_label(r)]
        for which in ("original", "pruned"):
            text = _value(r[which], r["points"])
            err = r[f"{which}_stderr"]
            cells.append(text + (f" ± {_value(err, r['points'])}" if err is not None else ""))
        delta = _signed(r["delta"], r["points"])
        cells.append(f"**{delta}**" if r.get("significant") else delta)
        cells.append(_interval(r.get("delta_low"), r.get("delta_high"), r["points"]))
        cells.append(f"{r['retention']:.1%}" if r["retention"] is not None else "n/a")
        cells.append(_p(r.get("mcnemar_p")))
        if gated:
            g = r["gate"]
            cells.append("–" if g is None else "pass" if g["passed"] else "**FAIL**")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_many(record: dict) -> str:
    """Two Markdown tables: every model's value per metric; then the paired differences (b - a) with
    their 95% intervals and McNemar's p, each checkpoint against the original and each pair of checkpoints."""
    labels = record["labels"]
    lines = ["| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for r in record["metrics"]:
        cells = [r["task"], _metric_label(r)]
        for lab in labels:
            v, e = r["values"].get(lab), r["stderr"].get(lab)
            cells.append(_value(v, r["points"]) + (f" ± {_value(e, r['points'])}" if e is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| task | metric | comparison (b - a) | delta | 95% CI | McNemar p | a only / b only |",
              "|---|---|---|---:|---:|---:|---:|"]
    for p in record["pairs"]:
        delta = _signed(p["delta"], p["points"])
        counts = "–" if p["a_only"] is None else f"{p['a_only']} / {p['b_only']}"
        lines.append(f"| {p['task']} | {_metric_label(p)} | {p['b']} - {p['a']} | "
                     f"{f'**{delta}**' if p['significant'] else delta} | "
                     f"{_interval(p['delta_low'], p['delta_high'], p['points'])} | {_p(p['mcnemar_p'])} | {counts} |")
    return "\n".join(lines)


def _settings_lines(record: dict) -> list[str]:
    s, b, p, v = record["settings"], record["base"], record["pruned"], record["versions"]
    shots = "task defaults (zero-shot for the standard tasks)" if s["num_fewshot"] is None else f"{s['num_fewshot']}-shot"
    if s["limit"] is None and not s["task_limits"]:
        docs = "all documents"
    else:
        docs = ", ".join(f"{t} {n}" for t, n in (s["documents"] or {}).items()) + " documents (the first of each task)"
    orig = f"`{b['spec']}`" + (f" ({b['name']})" if b.get("name") and b["name"] != b["spec"] else "")
    if b.get("parameters"):
        orig += f", {b['parameters']:,} parameters"
    pruned = f"`{p['name']}`"
    if p.get("parameters"):
        pruned += f", {p['parameters']:,} parameters"
    if p.get("achieved_ratio") is not None:
        pruned += f" ({p['layout']} layout, {p['method']}, {p['achieved_ratio']:.1%} of FFN channels removed)"
    check = p.get("base_check") or {}
    lines = [
        f"- original: {orig}" + (f" (base check: {check['verdict']}, {check['reason']})" if check else ""),
        f"- pruned: {pruned}",
        (f"- lm-eval {v.get('lm_eval', '?')} (HFLM, in-process), {s['dtype']} on {s['device']}, batch size "
        f"{s['batch_size']}, context {s['max_length']}, {shots}; {docs}"),
    ]
    if b.get("cached_tasks"):
        lines.append(f"- original results reused from the cache for: {', '.join(b['cached_tasks'])}")
    if s.get("paired_iters"):
        lines.append(f"- paired intervals: {s['paired_iters']:,} bootstrap resamples of the documents, seed "
                     f"{s['paired_seed']}; per-document results in `{DOCS_FILE}`")
    return lines


NOTE = ("Accuracy-type metrics (higher is better, 0-1) are in percent and their delta in points; ± is lm-eval's "
        "standard error of each model alone. Both models answer the same documents, so the delta has a paired 95% "
        "interval (bootstrap over documents) and, for 0/1 metrics, McNemar's exact p; a delta in **bold** has an "
        "interval that excludes zero. Retention is pruned/original, or original/pruned for lower-is-better "
        "metrics (↓), so below 100% always means worse.")
NOTE_MANY = ("Accuracy-type metrics are in percent, deltas in points; ± is lm-eval's standard error of each model "
             "alone. All models answer the same documents: each delta (b - a) has a paired 95% bootstrap interval "
             "and, for 0/1 metrics, McNemar's exact p. A model beats another only where the interval excludes zero "
             "(delta in **bold**).")


def _gate_line(record: dict) -> str | None:
    g = record.get("gate")
    if g is None:
        return None
    if g["checked"] == 0:
        return f"**Gate: not applicable.** {g['summary']}"
    return f"**Gate: {'passed' if g['passed'] else 'FAILED'}.** {g['summary'].split(': ', 1)[-1]}."


def markdown(record: dict) -> str:
    """The text of eval.md."""
    parts = ["# Evaluation: original vs pruned", "", *_settings_lines(record), "", table(record), "", NOTE]
    if (gate := _gate_line(record)) is not None:
        parts += ["", gate]
    return "\n".join(parts) + "\n"


def markdown_many(record: dict) -> str:
    """The text of the comparison's eval.md (several pruned checkpoints)."""
    s, b = record["settings"], record["base"]
    lines = ["# Evaluation: original vs several pruned checkpoints", "",
             f"- original: `{b['spec']}`" + (f", {b['parameters']:,} parameters" if b.get("parameters") else "")]
    for p in record["pruned"]:
        text = f"- {p['label']}: `{p['path']}`"
        if p.get("achieved_ratio") is not None:
            text += f" ({p['layout']} layout, {p['method']}, {p['achieved_ratio']:.1%} of FFN channels removed)"
        text += f"; base check: {p['base_check']['verdict']}"
        lines.append(text)
    docs = "all documents" if s["documents"] is None else ", ".join(f"{t} {n}" for t, n in s["documents"].items()) + " documents"
    lines += [(f"- lm-eval {record['versions'].get('lm_eval', '?')}, {s['dtype']} on {s['device']}, batch size "
              f"{s['batch_size']}, context {s['max_length']}; {docs}; {s['paired_iters']:,} bootstrap resamples, "
              f"seed {s['paired_seed']}; per-document results in `{DOCS_FILE}`"), "", table_many(record), "", NOTE_MANY]
    for g in record["gates"]:
        if g:
            lines += ["", (f"**Gate ({g['pruned']}): {'passed' if g['passed'] else 'FAILED'}.** "
                          f"{g['summary'].split(': ', 1)[-1]}.")]
    return "\n".join(lines) + "\n"


def card_section(record: dict) -> str:
    """What the model card shows under "## Evaluation" (the card adds the heading)."""
    parts = [*_settings_lines(record), "", table(record), "", NOTE]
    if (gate := _gate_line(record)) is not None:
        parts += ["", gate]
    parts += ["", "Full results of both models: `eval.json` (written by `fbn-prune eval`)."]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- model card
def model_index(record: dict) -> list[dict]:
    """Hub ``model-index`` entries for the pruned model's results (lm-eval tasks; local-file perplexities
    stay in the table only)."""
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    lm = record["lm_eval"]["pruned"]
    ppl = {name for t in record["tasks"].values() if t.get("source") for name in t["tasks"]}
    results = []
    for r in record["metrics"]:
        if r["pruned"] is None or r["task"] in ppl:
            continue
        cfg = lm.get("configs", {}).get(r["task"]) or {}
        name, hub_id, config = HUB_DATASETS.get(r["task"], (r["task"], r["task"], None))
        shots = lm.get("n-shot", {}).get(r["task"])
        n = lm.get("n-samples", {}).get(r["task"]) or {}
        notes = [f"{shots}-shot"] if shots is not None else []
        if n.get("effective") is not None and n.get("original") and n["effective"] < n["original"]:
            notes.append(f"first {n['effective']} of {n['original']} documents")
        label = r["metric"] + (f" ({', '.join(notes)})" if notes else "")
        results.append(EvalResult(
            task_type="text-generation", dataset_type=hub_id, dataset_name=name, dataset_config=config,
            dataset_split=cfg.get("test_split") or cfg.get("validation_split"),
            metric_type=r["metric"], metric_value=round(r["pruned"], 6), metric_name=label,
        ))
    return eval_results_to_model_index(record["pruned"]["name"], results) if results else []


def summary(record: dict, report_file: Path, folder: Path) -> dict:
    """The ``evaluation`` entry of the checkpoint's fbn_prune.json."""
    try:
        where = str(report_file.resolve().relative_to(folder.resolve()))
    except ValueError:
        where = str(report_file.resolve())
    s = record["settings"]
    return {
        "created": record["created"], "report": where, "base": record["base"]["spec"],
        "lm_eval": record["versions"].get("lm_eval"),
        "settings": {k: s[k] for k in ("tasks", "limit", "task_limits", "documents", "num_fewshot", "batch_size",
                                       "max_length", "dtype", "device")},
        "metrics": [{k: r.get(k) for k in ("task", "metric", "filter", "original", "pruned", "delta", "delta_low",
                                          "delta_high", "retention", "mcnemar_p")}
                    for r in record["metrics"]],
        "gate": None if record["gate"] is None else {k: v for k, v in record["gate"].items() if k != "failures"},
    }


# ----------------------------------------------------------------------------- files
def _report_folder(folder: str | os.PathLike[str]) -> Path:
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"report folder {folder} exists and is not a folder.")
    return folder


def _write_docs(path: Path, lines: list[dict]) -> None:
    _atomic_write(path, "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))


def write(record: dict, folder: str | os.PathLike[str], docs: list[dict] | None = None) -> tuple[Path, Path]:
    """Write eval.json, eval.md and (with ``docs``, see :func:`doc_lines`) eval-docs.jsonl into ``folder``,
    each atomically; return the paths of the first two."""
    folder = _report_folder(folder)
    js, md = folder / "eval.json", folder / "eval.md"
    if docs is not None:
        _write_docs(folder / DOCS_FILE, docs)
    _atomic_write(js, json.dumps(record, indent=1, default=str) + "\n")
    _atomic_write(md, markdown(record))
    return js, md


def write_many(record: dict, folder: str | os.PathLike[str], docs: list[dict]) -> tuple[Path, Path]:
    """Write the comparison's eval.json, eval.md and eval-docs.jsonl (every model) into ``folder``."""
    folder = _report_folder(folder)
    js, md = folder / "eval.json", folder / "eval.md"
    _write_docs(folder / DOCS_FILE, docs)
    _atomic_write(js, json.dumps(record, indent=1, default=str) + "\n")
    _atomic_write(md, markdown_many(record))
    return js, md


def update_checkpoint(folder: Path, record: dict, report_folder: Path) -> None:
    """Regenerate the checkpoint's README.md with the table and Hub model-index, and record the
    evaluation in its fbn_prune.json; each file is replaced atomically."""
    from fbn_prune.ship.card import render_card
    from fbn_prune.ship.hub import card_license
    from fbn_prune.export.provenance import PROVENANCE_FILE, read_provenance

    info = read_provenance(folder)
    info.evaluation = summary(record, Path(report_folder) / "eval.json", folder)
    text = render_card(info, license=card_license(info), eval_table=card_section(record), model_index=model_index(record))
    _atomic_write(folder / PROVENANCE_FILE, info.to_json())
    _atomic_write(folder / "README.md", text)
