"""Writing the evaluation report: eval.json, eval.md, the per-document file, the updated card.

The evaluation report: the records (:mod:`fbn_prune.evaluate.record`) built from a comparison, the
per-document lines, and the files: eval.json, eval.md, eval-docs.jsonl, and the checkpoint's README.md
(table and Hub ``model-index``) and fbn_prune.json (an ``evaluation`` summary).

eval-docs.jsonl: one line per (task, document, filter), see :func:`doc_lines`.

Public API: :func:`build`, :func:`build_many`, :func:`doc_lines`, :func:`read_docs`, :func:`summary`,
:func:`write`, :func:`write_many`, :func:`update_checkpoint`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from fbn_prune._io.atomic import atomic_write
from fbn_prune.config.gate import Gate
from fbn_prune.errors import UserError
from fbn_prune.evaluate import paired, render
from fbn_prune.evaluate.gating import apply_gate
from fbn_prune.evaluate.record import DOCS_FILE, Comparison, ComparisonRecord, EvalRecord, PairComparison
from fbn_prune.evaluate.rows import add_paired, aligned, metric_rows
from fbn_prune.export.provenance import PROVENANCE_FILE, read_provenance
from fbn_prune.ship.card import render_card
from fbn_prune.ship.hub import card_license


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _lm_eval_part(results: dict) -> dict:
    """lm-eval's own result dict of one model (without the per-document records, which go to the jsonl)."""
    return {k: v for k, v in results.items() if k not in ("docs", "max_length")}


def build(comparison: PairComparison, gate: Gate | None = None) -> EvalRecord:
    """The eval.json record from :func:`fbn_prune.evaluate.compare.compare`'s result (one pruned checkpoint)."""
    rows = metric_rows(comparison.original, comparison.pruned_results)
    add_paired(rows, comparison)
    verdict = apply_gate(rows, gate)
    return EvalRecord(
        created=_now(), base=comparison.base, pruned=comparison.pruned, any_base=comparison.any_base,
        settings=comparison.settings, versions=comparison.versions, tasks=comparison.tasks, metrics=rows,
        gate=verdict, lm_eval={"original": _lm_eval_part(comparison.original),
                               "pruned": _lm_eval_part(comparison.pruned_results)},
        timings=comparison.timings,
    )


def build_many(comparison: Comparison, records: list[EvalRecord]) -> ComparisonRecord:
    """The comparison record of several pruned checkpoints (:func:`fbn_prune.evaluate.compare.compare_many`):
    every model's value per metric, and paired intervals for each checkpoint against the original and
    for each pair of checkpoints. ``records`` are the checkpoints' own records (:func:`build`)."""
    labels = comparison.labels
    results = [comparison.original, *comparison.pruned_results]
    docs = [r.get("docs") for r in results]
    aggs = comparison.aggregations or {}
    s = comparison.settings
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
    gates = [{"pruned": lab, **(r.gate or {})} if r.gate else None for lab, r in zip(labels[1:], records)]
    return ComparisonRecord(
        created=_now(), base=comparison.base, pruned=comparison.pruned, labels=labels,
        any_base=comparison.any_base, settings=s, versions=comparison.versions, tasks=comparison.tasks,
        metrics=metrics, pairs=pairs, gates=gates, reports=records, timings=comparison.timings,
    )


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
    :func:`fbn_prune.evaluate.rows.aligned` and :func:`fbn_prune.evaluate.harness.per_doc` use), keyed by model label."""
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


def summary(record: EvalRecord, report_file: Path, folder: Path) -> dict:
    """The ``evaluation`` entry of the checkpoint's fbn_prune.json."""
    try:
        where = str(report_file.resolve().relative_to(folder.resolve()))
    except ValueError:
        where = str(report_file.resolve())
    s = record.settings
    return {
        "created": record.created, "report": where, "base": record.base["spec"],
        "lm_eval": record.versions.get("lm_eval"),
        "settings": {k: s[k] for k in ("tasks", "limit", "task_limits", "documents", "num_fewshot", "batch_size",
                                       "max_length", "dtype", "device")},
        "metrics": [{k: r.get(k) for k in ("task", "metric", "filter", "original", "pruned", "delta", "delta_low",
                                          "delta_high", "retention", "mcnemar_p")}
                    for r in record.metrics],
        "gate": None if record.gate is None else {k: v for k, v in record.gate.items() if k != "failures"},
    }



def _report_folder(folder: str | os.PathLike[str]) -> Path:
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"report folder {folder} exists and is not a folder.")
    return folder


def _write_docs(path: Path, lines: list[dict]) -> None:
    atomic_write(path, "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))


def write(record: EvalRecord, folder: str | os.PathLike[str], docs: list[dict] | None = None) -> tuple[Path, Path]:
    """Write eval.json, eval.md and (with ``docs``, see :func:`doc_lines`) eval-docs.jsonl into ``folder``,
    each atomically; return the paths of the first two."""
    folder = _report_folder(folder)
    js, md = folder / "eval.json", folder / "eval.md"
    if docs is not None:
        _write_docs(folder / DOCS_FILE, docs)
    atomic_write(js, json.dumps(record.to_json(), indent=1, default=str) + "\n")
    atomic_write(md, render.markdown(record))
    return js, md


def write_many(record: ComparisonRecord, folder: str | os.PathLike[str], docs: list[dict]) -> tuple[Path, Path]:
    """Write the comparison's eval.json, eval.md and eval-docs.jsonl (every model) into ``folder``."""
    folder = _report_folder(folder)
    js, md = folder / "eval.json", folder / "eval.md"
    _write_docs(folder / DOCS_FILE, docs)
    atomic_write(js, json.dumps(record.to_json(), indent=1, default=str) + "\n")
    atomic_write(md, render.markdown_many(record))
    return js, md


def update_checkpoint(folder: Path, record: EvalRecord, report_folder: Path) -> None:
    """Regenerate the checkpoint's README.md with the table and Hub model-index, and record the
    evaluation in its fbn_prune.json; each file is replaced atomically."""
    info = read_provenance(folder)
    info.evaluation = summary(record, Path(report_folder) / "eval.json", folder)
    text = render_card(info, license=card_license(info), eval_table=render.card_section(record),
                       model_index=render.model_index(record))
    atomic_write(folder / PROVENANCE_FILE, info.to_json())
    atomic_write(folder / "README.md", text)
