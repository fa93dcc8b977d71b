"""The evaluation report: eval.json (every metric of both models), eval.md (a table), the gate,
and the model card's evaluation section with Hub ``model-index`` metadata.

eval.json (``format: fbn_prune.eval/1``)::

    created, base {spec, path, hub_id, name, sha256, parameters, cached_tasks},
    pruned {path, name, layout, parameters, base_model, method, achieved_ratio},
    settings {tasks, limit, task_limits, documents, num_fewshot, batch_size, max_length, device,
              dtype, include_path, data_dir, bootstrap_iters, seeds, model_class},
    versions {python, fbn_prune, torch, transformers, lm_eval, ...},
    tasks {requested name: {tasks, groups, source, data_sha256}},
    metrics [{task, metric, filter, higher_is_better, points, original, original_stderr, pruned,
              pruned_stderr, delta, retention, n_original, n_pruned, gate}],
    gate null | {rule, threshold, metrics, checked, passed, failures [...], summary},
    lm_eval {original: {...}, pruned: {...}}   (lm-eval's own result dicts, unchanged),
    timings {prepare_s, original_s, pruned_s, total_s}

Conventions. A metric is *accuracy-type* ("points") when higher is better and both values lie
in [0, 1]: eval.md shows it in percent and its delta in percentage points. ``delta`` is
pruned - original in the metric's own units. ``retention`` is pruned/original for
higher-is-better metrics and original/pruned for lower-is-better ones (perplexity, bits per
byte), so retention below 1 always means the pruned model is worse.

The gate (:class:`Gate`) checks each metric on its own: ``max_drop`` (percentage points) applies
to accuracy-type metrics, ``min_retention`` to every metric with a defined retention; ``metrics``
restricts either to the named metrics.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .evaluate import _atomic_write

FORMAT = "fbn_prune.eval/1"
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
@dataclass(frozen=True)
class Gate:
    """Pass/fail rule on the pruned model's metrics; give exactly one of ``max_drop`` and ``min_retention``.

    Attributes:
        max_drop: largest allowed fall of an accuracy-type metric, in percentage points (2 = 0.02 acc).
        min_retention: smallest allowed retention (pruned/original; original/pruned when lower is better).
        metrics: only these metric names are gated (e.g. ("acc_norm",)); None: all that the rule applies to.
    """

    max_drop: float | None = None
    min_retention: float | None = None
    metrics: tuple[str, ...] | None = None

    @classmethod
    def make(cls, max_drop: float | None = None, min_retention: float | None = None,
             metrics: Any = None) -> "Gate | None":
        """A validated gate, or None when neither threshold is given. Raises UserError for bad values."""
        if max_drop is not None and min_retention is not None:
            raise UserError("give one gate: --max-drop or --min-retention, not both.")
        if metrics is not None and max_drop is None and min_retention is None:
            raise UserError("--gate-metrics needs a gate: --max-drop or --min-retention.")
        if max_drop is None and min_retention is None:
            return None
        if max_drop is not None and not (math.isfinite(max_drop) and max_drop >= 0):
            raise UserError(f"--max-drop is in percentage points and must be >= 0, got {max_drop}.")
        if min_retention is not None and not (0 < min_retention <= 1):
            raise UserError(f"--min-retention is a fraction in (0, 1] (0.95 keeps 95%), got {min_retention}.")
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        return cls(max_drop, min_retention, tuple(metrics) if metrics else None)

    @property
    def rule(self) -> str:
        return "max_drop" if self.max_drop is not None else "min_retention"

    @property
    def threshold(self) -> float:
        return self.max_drop if self.max_drop is not None else self.min_retention  # type: ignore[return-value]

    def describe(self) -> str:
        which = f" on {', '.join(self.metrics)}" if self.metrics else ""
        if self.max_drop is not None:
            return f"accuracy-type metrics{which} may fall at most {_num(self.max_drop)} points"
        return f"every metric{which} keeps at least {self.min_retention:.1%} of the original"


def check_row(row: dict, gate: Gate) -> dict | None:
    """This metric's gate verdict ({"value", "limit", "passed"}), or None when the gate does not apply to it."""
    if gate.metrics and row["metric"] not in gate.metrics:
        return None
    if gate.max_drop is not None:
        if not row["points"]:
            return None
        drop = 100 * (row["original"] - row["pruned"])
        return {"value": round(drop, 6), "limit": gate.max_drop, "passed": drop <= gate.max_drop + 1e-9}
    if row["retention"] is None:
        return None
    return {"value": row["retention"], "limit": gate.min_retention, "passed": row["retention"] >= gate.min_retention - 1e-12}


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
    return {"rule": gate.rule, "threshold": gate.threshold, "metrics": list(gate.metrics) if gate.metrics else None,
            "checked": len(checked), "passed": bool(checked) and not failures,
            "failures": [{k: r[k] for k in ("task", "metric", "filter", "original", "pruned", "retention", "gate")}
                         for r in failures],
            "summary": summary}


def _failure_text(row: dict, gate: Gate) -> str:
    name = f"{row['task']} {row['metric']}" + ("" if row["filter"] == "none" else f" [{row['filter']}]")
    if gate.max_drop is not None:
        return f"{name} fell {row['gate']['value']:.2f} points (at most {_num(gate.max_drop)} allowed)"
    return f"{name} kept {row['retention']:.1%} (at least {gate.min_retention:.1%} required)"


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


def build(comparison: dict, gate: Gate | None = None) -> dict:
    """The eval.json record from :func:`fbn_prune.evaluate.compare`'s result."""
    rows = metric_rows(comparison["original"], comparison["pruned_results"])
    verdict = apply_gate(rows, gate)
    return {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base": comparison["base"],
        "pruned": comparison["pruned"],
        "settings": comparison["settings"],
        "versions": comparison["versions"],
        "tasks": comparison["tasks"],
        "metrics": rows,
        "gate": verdict,
        "lm_eval": {"original": comparison["original"], "pruned": comparison["pruned_results"]},
        "timings": comparison["timings"],
    }


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


def table(record: dict) -> str:
    """The Markdown table: task, metric, original, pruned, delta, retention (and gate with a gate)."""
    gated = record.get("gate") is not None
    head = "| task | metric | original | pruned | delta | retention |" + (" gate |" if gated else "")
    rule = "|---|---|---:|---:|---:|---:|" + ("---|" if gated else "")
    lines = [head, rule]
    for r in record["metrics"]:
        cells = [r["task"], _metric_label(r)]
        for which in ("original", "pruned"):
            text = _value(r[which], r["points"])
            err = r[f"{which}_stderr"]
            cells.append(text + (f" ± {_value(err, r['points'])}" if err is not None else ""))
        cells.append(_signed(r["delta"], r["points"]))
        cells.append(f"{r['retention']:.1%}" if r["retention"] is not None else "n/a")
        if gated:
            g = r["gate"]
            cells.append("–" if g is None else "pass" if g["passed"] else "**FAIL**")
        lines.append("| " + " | ".join(cells) + " |")
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
    lines = [
        f"- original: {orig}",
        f"- pruned: {pruned}",
        f"- lm-eval {v.get('lm_eval', '?')} (HFLM, in-process), {s['dtype']} on {s['device']}, batch size "
        f"{s['batch_size']}, context {s['max_length']}, {shots}; {docs}",
    ]
    if b.get("cached_tasks"):
        lines.append(f"- original results reused from the cache for: {', '.join(b['cached_tasks'])}")
    return lines


NOTE = ("Accuracy-type metrics (higher is better, 0-1) are in percent and their delta in points; ± is lm-eval's "
        "standard error. Retention is pruned/original, or original/pruned for lower-is-better metrics (↓), "
        "so below 100% always means worse.")


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
        "metrics": [{k: r[k] for k in ("task", "metric", "filter", "original", "pruned", "delta", "retention")}
                    for r in record["metrics"]],
        "gate": None if record["gate"] is None else {k: v for k, v in record["gate"].items() if k != "failures"},
    }


# ----------------------------------------------------------------------------- files
def write(record: dict, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write eval.json and eval.md into ``folder`` (each atomically); return their paths."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"report folder {folder} exists and is not a folder.")
    js, md = folder / "eval.json", folder / "eval.md"
    _atomic_write(js, json.dumps(record, indent=1, default=str) + "\n")
    _atomic_write(md, markdown(record))
    return js, md


def update_checkpoint(folder: Path, record: dict, report_folder: Path) -> None:
    """Regenerate the checkpoint's README.md with the table and Hub model-index, and record the
    evaluation in its fbn_prune.json; each file is replaced atomically."""
    from .card import render
    from .export import PROVENANCE_FILE, read_provenance

    info = read_provenance(folder)
    info["evaluation"] = summary(record, Path(report_folder) / "eval.json", folder)
    text = render(info, license=info.get("license"), eval_table=card_section(record), model_index=model_index(record))
    _atomic_write(folder / PROVENANCE_FILE, json.dumps(info, indent=1))
    _atomic_write(folder / "README.md", text)
