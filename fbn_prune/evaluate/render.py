"""The evaluation report as text: eval.md's tables, the model card's section, the Hub model-index.

The evaluation report as text: eval.md's tables (one checkpoint, or several), the model card's
evaluation section, and the Hub ``model-index`` entries of the pruned model's results.

Public API: :func:`table`, :func:`table_many`, :func:`markdown`, :func:`markdown_many`,
:func:`card_section`, :func:`model_index`.
"""

from __future__ import annotations

from fbn_prune.evaluate.record import DOCS_FILE, ComparisonRecord, EvalRecord

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

def base_name(record: EvalRecord | ComparisonRecord) -> str:
    """What the reports call the base model: "original", or "base" when ``--any-base`` compared a checkpoint
    with a model it was not pruned from (another pruned or healed checkpoint, say). Only the text changes; the
    JSON keys stay ``original``."""
    pruned = record.pruned if isinstance(record.pruned, list) else [record.pruned]
    mismatch = any((p.get("base_check") or {}).get("verdict") == "mismatch" for p in pruned)
    return "base" if record.any_base and mismatch else "original"


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


def table(record: EvalRecord) -> str:
    """The Markdown table: task, metric, original, pruned, delta with its 95% paired interval, retention,
    McNemar's p (and the gate with a gate)."""
    gated = record.gate is not None
    head = (f"| task | metric | {base_name(record)} | pruned | delta | 95% CI | retention | McNemar p |"
            + (" gate |" if gated else ""))
    rule = "|---|---|---:|---:|---:|---:|---:|---:|" + ("---|" if gated else "")
    lines = [head, rule]
    for r in record.metrics:
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


def table_many(record: ComparisonRecord) -> str:
    """Two Markdown tables: every model's value per metric; then the paired differences (b - a) with
    their 95% intervals and McNemar's p, each checkpoint against the original and each pair of checkpoints."""
    labels = record.labels
    shown = [base_name(record), *labels[1:]]
    lines = ["| task | metric | " + " | ".join(shown) + " |", "|---|---|" + "---:|" * len(labels)]
    for r in record.metrics:
        cells = [r["task"], _metric_label(r)]
        for lab in labels:
            v, e = r["values"].get(lab), r["stderr"].get(lab)
            cells.append(_value(v, r["points"]) + (f" ± {_value(e, r['points'])}" if e is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| task | metric | comparison (b - a) | delta | 95% CI | McNemar p | a only / b only |",
              "|---|---|---|---:|---:|---:|---:|"]
    for p in record.pairs:
        delta = _signed(p["delta"], p["points"])
        counts = "–" if p["a_only"] is None else f"{p['a_only']} / {p['b_only']}"
        a = shown[0] if p["a"] == labels[0] else p["a"]
        lines.append(f"| {p['task']} | {_metric_label(p)} | {p['b']} - {a} | "
                     f"{f'**{delta}**' if p['significant'] else delta} | "
                     f"{_interval(p['delta_low'], p['delta_high'], p['points'])} | {_p(p['mcnemar_p'])} | {counts} |")
    return "\n".join(lines)


def _settings_lines(record: EvalRecord) -> list[str]:
    s, b, p, v = record.settings, record.base, record.pruned, record.versions
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
        f"- {base_name(record)}: {orig}" + (f" (base check: {check['verdict']}, {check['reason']})" if check else ""),
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


def _gate_line(record: EvalRecord) -> str | None:
    g = record.gate
    if g is None:
        return None
    if g["checked"] == 0:
        return f"**Gate: not applicable.** {g['summary']}"
    return f"**Gate: {'passed' if g['passed'] else 'FAILED'}.** {g['summary'].split(': ', 1)[-1]}."


def markdown(record: EvalRecord) -> str:
    """The text of eval.md."""
    parts = [f"# Evaluation: {base_name(record)} vs pruned", "", *_settings_lines(record), "", table(record), "", NOTE]
    if (gate := _gate_line(record)) is not None:
        parts += ["", gate]
    return "\n".join(parts) + "\n"


def markdown_many(record: ComparisonRecord) -> str:
    """The text of the comparison's eval.md (several pruned checkpoints)."""
    s, b = record.settings, record.base
    lines = [f"# Evaluation: {base_name(record)} vs several pruned checkpoints", "",
             f"- {base_name(record)}: `{b['spec']}`" + (f", {b['parameters']:,} parameters" if b.get("parameters") else "")]
    for p in record.pruned:
        text = f"- {p['label']}: `{p['path']}`"
        if p.get("achieved_ratio") is not None:
            text += f" ({p['layout']} layout, {p['method']}, {p['achieved_ratio']:.1%} of FFN channels removed)"
        text += f"; base check: {p['base_check']['verdict']}"
        lines.append(text)
    docs = "all documents" if s["documents"] is None else ", ".join(f"{t} {n}" for t, n in s["documents"].items()) + " documents"
    lines += [(f"- lm-eval {record.versions.get('lm_eval', '?')}, {s['dtype']} on {s['device']}, batch size "
              f"{s['batch_size']}, context {s['max_length']}; {docs}; {s['paired_iters']:,} bootstrap resamples, "
              f"seed {s['paired_seed']}; per-document results in `{DOCS_FILE}`"), "", table_many(record), "", NOTE_MANY]
    for g in record.gates:
        if g:
            lines += ["", (f"**Gate ({g['pruned']}): {'passed' if g['passed'] else 'FAILED'}.** "
                          f"{g['summary'].split(': ', 1)[-1]}.")]
    return "\n".join(lines) + "\n"


def card_section(record: EvalRecord) -> str:
    """What the model card shows under "## Evaluation" (the card adds the heading)."""
    parts = [*_settings_lines(record), "", table(record), "", NOTE]
    if (gate := _gate_line(record)) is not None:
        parts += ["", gate]
    parts += ["", "Full results of both models: `eval.json` (written by `fbn-prune eval`)."]
    return "\n".join(parts)


def model_index(record: EvalRecord) -> list[dict]:
    """Hub ``model-index`` entries for the pruned model's results (lm-eval tasks; local-file perplexities
    stay in the table only)."""
    from huggingface_hub import EvalResult  # the Hub client: only when a card is written
    from huggingface_hub.repocard_data import eval_results_to_model_index

    lm = record.lm_eval["pruned"]
    ppl = {name for t in record.tasks.values() if t.get("source") for name in t["tasks"]}
    results = []
    for r in record.metrics:
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
    return eval_results_to_model_index(record.pruned["name"], results) if results else []
