"""The typed evaluation records: what eval.json holds for one checkpoint or several.

The evaluation records: :class:`EvalRecord` (eval.json of one pruned checkpoint) and
:class:`ComparisonRecord` (eval.json of several), typed, with ``to_json()`` / ``from_json()``.

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

eval.json of several checkpoints (``format: fbn_prune.eval-compare/1``)::

    created, base, pruned [...], labels ["original", name, ...], any_base, settings, versions, tasks,
    metrics [{task, metric, filter, higher_is_better, points, values {label: v}, stderr {label: se}}],
    pairs [{task, metric, filter, points, higher_is_better, a, b, value_a, value_b, n, delta, delta_low,
            delta_high, retention, retention_low, retention_high, mcnemar_p, a_only, b_only, significant,
            iters, seed}],
    gates [per checkpoint: null | {pruned, ...gate}], passed, documents_file, reports [each checkpoint's
    own eval.json record], timings

The metric rows, gate verdicts and the parts that come from lm-eval stay plain JSON dicts inside
the records (their fields are listed above and in :mod:`fbn_prune.evaluate.rows`).

What the evaluation measured, before a report is built from it: :class:`Comparison` (the original and
several checkpoints, :func:`fbn_prune.evaluate.compare.compare_many`) and :class:`PairComparison` (the
original and one checkpoint, :func:`fbn_prune.evaluate.compare.compare`).

Public API: :data:`FORMAT`, :data:`FORMAT_MANY`, :data:`DOCS_FILE`, :class:`PairComparison`,
:class:`Comparison`, :class:`EvalRecord`, :class:`ComparisonRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

FORMAT = "fbn_prune.eval/2"
FORMAT_MANY = "fbn_prune.eval-compare/1"
DOCS_FILE = "eval-docs.jsonl"


@dataclass
class PairComparison:
    """The original and one pruned checkpoint evaluated on the same documents (no report yet).

    Attributes:
        base: the original: {spec, path, hub_id, name, sha256, identity, parameters, cached_tasks}.
        pruned: the checkpoint: {path, name, label, layout, parameters, base_model, method,
            achieved_ratio, cached_tasks, base_check}.
        settings, versions, tasks: as eval.json holds them.
        original: the original's results: lm-eval's kept parts (results, versions, n-shot,
            higher_is_better, n-samples, group_subtasks, configs), ``docs`` (task -> per-document
            records, :func:`fbn_prune.evaluate.harness.per_doc`) and ``max_length``.
        pruned_results: the checkpoint's results, the same shape.
        timings: seconds {prepare_s, original_s, pruned_s, total_s}.
        aggregations: task -> metric -> lm-eval aggregation (what the paired statistics resample).
        any_base: the base is not the model the checkpoint records (``--any-base``).
    """

    base: dict
    pruned: dict
    settings: dict
    versions: dict
    tasks: dict
    original: dict
    pruned_results: dict
    timings: dict
    aggregations: dict = field(default_factory=dict)
    any_base: bool = False


@dataclass
class Comparison:
    """The original and several pruned checkpoints evaluated on the same documents (no report yet).

    As :class:`PairComparison`, but ``pruned`` and ``pruned_results`` hold one entry per checkpoint and
    ``labels`` names the models (``["original", label, ...]``).
    """

    base: dict
    pruned: list[dict]
    labels: list[str]
    settings: dict
    versions: dict
    tasks: dict
    original: dict
    pruned_results: list[dict]
    timings: dict
    aggregations: dict = field(default_factory=dict)
    any_base: bool = False

    def one(self, i: int) -> PairComparison:
        """The original against checkpoint ``i`` alone."""
        return PairComparison(base=self.base, pruned=self.pruned[i], settings=self.settings, versions=self.versions,
                              tasks=self.tasks, original=self.original, pruned_results=self.pruned_results[i],
                              timings=self.timings, aggregations=self.aggregations, any_base=self.any_base)


def _check_format(data: dict, want: str) -> None:
    if data.get("format") != want:
        raise ValueError(f"not an evaluation record of format {want} (format {data.get('format')!r})")


@dataclass
class EvalRecord:
    """eval.json of one pruned checkpoint: both models' metrics with paired intervals, the gate, the settings.

    ``metrics`` rows are dicts (see :func:`fbn_prune.evaluate.rows.metric_rows`); ``gate`` is None or the
    verdict of :func:`fbn_prune.evaluate.gating.apply_gate`; ``lm_eval`` holds lm-eval's own result dicts.
    """

    created: str
    base: dict
    pruned: dict
    settings: dict
    versions: dict
    tasks: dict
    metrics: list[dict]
    gate: dict | None
    lm_eval: dict
    timings: dict
    any_base: bool = False
    documents_file: str = DOCS_FILE
    format: str = FORMAT

    @property
    def passed(self) -> bool:
        """True when there is no gate or it held."""
        return self.gate is None or bool(self.gate["passed"])

    def to_json(self) -> dict:
        """The eval.json object (keys in the documented order)."""
        return {"format": self.format, "created": self.created, "base": self.base, "pruned": self.pruned,
                "any_base": self.any_base, "settings": self.settings, "versions": self.versions,
                "tasks": self.tasks, "metrics": self.metrics, "gate": self.gate,
                "documents_file": self.documents_file, "lm_eval": self.lm_eval, "timings": self.timings}

    @classmethod
    def from_json(cls, data: dict) -> EvalRecord:
        """An eval.json object back into a record; ValueError for another format."""
        _check_format(data, FORMAT)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class ComparisonRecord:
    """eval.json of several pruned checkpoints: every model's value per metric and paired intervals for
    each checkpoint against the original and for each pair of checkpoints; ``reports`` holds each
    checkpoint's own :class:`EvalRecord`."""

    created: str
    base: dict
    pruned: list[dict]
    labels: list[str]
    settings: dict
    versions: dict
    tasks: dict
    metrics: list[dict]
    pairs: list[dict]
    gates: list[dict | None]
    reports: list[EvalRecord]
    timings: dict
    any_base: bool = False
    documents_file: str = DOCS_FILE
    format: str = FORMAT_MANY
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = all(g is None or g["passed"] for g in self.gates)

    def to_json(self) -> dict:
        """The comparison's eval.json object (keys in the documented order)."""
        return {"format": self.format, "created": self.created, "base": self.base, "pruned": self.pruned,
                "labels": self.labels, "any_base": self.any_base, "settings": self.settings,
                "versions": self.versions, "tasks": self.tasks, "metrics": self.metrics, "pairs": self.pairs,
                "gates": self.gates, "passed": self.passed, "documents_file": self.documents_file,
                "reports": [r.to_json() for r in self.reports], "timings": self.timings}

    @classmethod
    def from_json(cls, data: dict) -> ComparisonRecord:
        """A comparison's eval.json object back into a record; ValueError for another format."""
        _check_format(data, FORMAT_MANY)
        names = {f.name for f in fields(cls) if f.init}
        values = {k: v for k, v in data.items() if k in names}
        values["reports"] = [EvalRecord.from_json(r) for r in data.get("reports", [])]
        return cls(**values)
