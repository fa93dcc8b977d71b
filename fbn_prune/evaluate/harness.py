"""Every lm-evaluation-harness internal fbn_prune touches, in one module.

The task manager (with the local tasks of :mod:`fbn_prune.texts.tasks`), loading the requested
tasks before any model, the document subset (``--limit``), a task's configuration and
aggregations, the ``simple_evaluate`` call with ``log_samples`` and fixed seeds, and the logged
samples turned into per-document records. A change of lm-eval's API should only touch this file.

Public API: :data:`LM_EVAL_SEEDS`, :data:`RESULT_KEYS`, :class:`TaskSpec`, :func:`task_manager`,
:func:`load_specs`, :func:`sample_indices`, :func:`task_config`, :func:`group_config`,
:func:`data_files`, :func:`aggregations`, :func:`evaluate_model`, :func:`per_doc`, :func:`lm_eval_version`.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fbn_prune._runtime.cache import cache_dir
from fbn_prune.config import datadir
from fbn_prune.errors import UserError
from fbn_prune.evaluate import paired
from fbn_prune.evaluate.ppl import PPL_PREFIX, ppl_task
from fbn_prune.evaluate.settings import EvalSettings
from fbn_prune.texts.tasks import manager
from fbn_prune.texts.tasks.registry import LOCAL_TASKS

LM_EVAL_SEEDS = {"random_seed": 0, "numpy_random_seed": 1234, "torch_random_seed": 1234, "fewshot_random_seed": 1234}
"""lm-eval's default seeds, passed explicitly so both models see the same few-shot examples."""
RESULT_KEYS = ("results", "versions", "n-shot", "higher_is_better", "n-samples", "group_subtasks", "configs")
"""The parts of lm-eval's result dict that are kept (and cached) per model."""


def lm_eval_version() -> str:
    return metadata.version("lm_eval")


# ----------------------------------------------------------------------------- tasks
_TM_MEMO: dict[tuple, Any] = {}


def task_manager(include_path: list[str], data_dir: str | None):
    """fbn_prune's task manager (local tasks + include paths), built once per process and inputs:
    indexing lm-eval's ~10k built-in YAMLs takes seconds."""
    data = datadir.find(data_dir)
    stamp: list[Any] = [str(cache_dir()), str(data)]
    if data is not None:
        for t in LOCAL_TASKS.values():
            for rel in t.files:
                f = data / rel
                stamp.append((rel, f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else (rel, None))
    for p in include_path:
        root = Path(p).expanduser()
        files = sorted(root.rglob("*.yaml")) if root.is_dir() else [root]
        stamp.append((str(root), tuple((str(f), f.stat().st_mtime_ns) for f in files if f.exists())))
    key = tuple(map(str, stamp))
    if key not in _TM_MEMO:
        while len(_TM_MEMO) >= 4:
            _TM_MEMO.pop(next(iter(_TM_MEMO)))
        _TM_MEMO[key] = manager.task_manager(include_path=list(include_path) or None, data=data_dir)
    return _TM_MEMO[key]


@dataclass
class TaskSpec:
    """One requested task: what the user typed, what lm-eval loads, and what that loaded."""

    requested: str
    load: str
    source: str | None = None  # the text file of a ppl: task
    objects: list = field(default_factory=list)  # top-level Task/Group objects
    tasks: dict = field(default_factory=dict)  # leaf name -> Task
    groups: dict = field(default_factory=dict)  # group name -> Group


def load_specs(settings: EvalSettings) -> tuple[Any, list[TaskSpec]]:
    """Resolve and load every requested task (datasets included) before any model is loaded."""
    specs: list[TaskSpec] = []
    names: dict[str, str] = {}
    for raw in settings.tasks:
        raw = str(raw).strip()
        if not raw:
            continue
        if any(ch in raw for ch in "*?[") and not raw.startswith(PPL_PREFIX):
            raise UserError(f"task pattern {raw!r}: name the tasks one by one (patterns are not expanded here).")
        if raw.startswith(PPL_PREFIX):
            name, yaml_path = ppl_task(raw, settings.data_dir)
            if name in names and names[name] != str(yaml_path):
                raise UserError(f"two perplexity files give the task name {name}; rename one of them.")
            names[name] = str(yaml_path)
            source = raw[len(PPL_PREFIX):]
            specs.append(TaskSpec(raw, str(yaml_path), source=source))
        else:
            specs.append(TaskSpec(raw, raw))
    tm = task_manager(settings.include_path, settings.data_dir)
    resolved = manager.resolve_tasks([s.load for s in specs], tm)
    seen: set[str] = set()
    unique = []
    for s in specs:
        if s.load in resolved and s.load not in seen:
            seen.add(s.load)
            unique.append(s)
    for s in unique:
        try:
            loaded = tm.load([s.load])
        except (OSError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(
                f"task {s.requested} could not load its data ({first}); offline, give it local files "
                f"(--include-path, or a standard task: piqa, arc_easy, lambada_openai, wikitext)."
            ) from e
        children = {c for kids in loaded.get("group_map", {}).values() for c in kids}
        s.tasks, s.groups = dict(loaded["tasks"]), dict(loaded.get("groups", {}))
        s.objects = [o for n, o in {**s.groups, **s.tasks}.items() if n not in children]
    leaves = [t for s in unique for t in s.tasks]
    if len(set(leaves)) != len(leaves):
        dup = next(t for t in leaves if leaves.count(t) > 1)
        raise UserError(f"task {dup} is asked for twice (directly and inside a group or tag); name it once.")
    known = set(leaves) | {s.requested for s in unique} | {g for s in unique for g in s.groups}
    for name in settings.task_limits:
        if name not in known:
            raise UserError(f"--limit names {name}, which is not among the tasks evaluated ({', '.join(leaves)}).")
    return tm, unique


def sample_indices(specs: list[TaskSpec], settings: EvalSettings) -> dict[str, list[int]] | None:
    """Document indices per leaf task (the first N, as lm-eval's --limit takes them); None: all, everywhere."""
    from lm_eval.evaluator_utils import get_sample_size  # lm-eval's evaluator: heavy, only with a limit

    if settings.limit is None and not settings.task_limits:
        return None
    out: dict[str, list[int]] = {}
    for s in specs:
        group_limit = next((settings.task_limits[g] for g in s.groups if g in settings.task_limits), None)
        for name, task in s.tasks.items():
            limit = settings.task_limits.get(name, settings.task_limits.get(s.requested, group_limit))
            limit = settings.limit if limit is None else limit
            total = len(task.eval_docs)
            n = total if limit is None else min(total, get_sample_size(task, limit))
            out[name] = list(range(n))
    return out


def task_config(task: Any) -> dict:
    """A loaded task's configuration as lm-eval dumps it, but with its callables (e.g. wikitext's
    detokenizer) kept as Python objects rather than rendered as source or repr."""
    return task.config.to_dict(keep_callable=True)


def group_config(group: Any) -> dict:
    """A loaded group's configuration, callables kept as objects (see :func:`task_config`)."""
    return group.to_dict(keep_callable=True)


def data_files(cfg: dict) -> list[str]:
    """Local files a task config reads (``dataset_kwargs.data_files``, a local ``dataset_path``)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk((cfg.get("dataset_kwargs") or {}).get("data_files"))
    path = cfg.get("dataset_path")
    if isinstance(path, str) and Path(path).expanduser().exists():
        p = Path(path).expanduser()
        found += [str(f) for f in sorted(p.rglob("*")) if f.is_file()] if p.is_dir() else [str(p)]
    return [f for f in dict.fromkeys(found) if Path(f).expanduser().is_file()]


def aggregations(specs: list[TaskSpec]) -> dict[str, dict[str, str]]:
    """task -> metric -> lm-eval aggregation name, for the metrics :mod:`fbn_prune.evaluate.paired` can resample."""
    out: dict[str, dict[str, str]] = {}
    for s in specs:
        for name, task in s.tasks.items():
            try:
                aggs = task.aggregation() or {}
            except (AttributeError, NotImplementedError, TypeError):  # no aggregations: no paired statistics
                aggs = {}
            out[name] = {m: fn.__name__ for m, fn in aggs.items() if getattr(fn, "__name__", None) in paired.KINDS}
    return out


# ----------------------------------------------------------------------------- evaluation
def evaluate_model(model, tok, objects: list, tm, settings: EvalSettings, samples, device: str) -> dict:
    """One model through lm-eval's Python API; returns the kept parts of its result dict, its
    per-document results (``docs``, see :func:`per_doc`) and the context length used."""
    import lm_eval  # heavy (models, evaluator): only when a model is evaluated
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=settings.batch_size, max_length=settings.max_length,
              device=device)
    with _without_environment_probes():
        res = lm_eval.simple_evaluate(
            model=lm, tasks=list(objects), task_manager=tm, num_fewshot=settings.num_fewshot, samples=samples,
            bootstrap_iters=settings.bootstrap_iters, log_samples=True, **LM_EVAL_SEEDS,
        )
    out = {k: res.get(k) or {} for k in RESULT_KEYS}
    out = json.loads(json.dumps(out, default=str))  # numpy scalars, dtypes -> plain JSON
    out["docs"] = per_doc(res.get("samples"))
    out["max_length"] = lm.max_length
    return out


@contextmanager
def _without_environment_probes():
    """lm-eval's ``simple_evaluate`` without its two environment probes, whose results are not kept
    (see RESULT_KEYS; our report records versions itself): ``git describe`` in the working folder, which
    prints "fatal: not a git repository" to the terminal outside one, and torch's collect_env
    (subprocesses, about 3 s per model). A probe that a later lm-eval no longer has is left alone."""
    import lm_eval.evaluator as evaluator  # heavy: only around an evaluation

    quiet = {"get_git_commit_hash": lambda: None, "add_env_info": lambda storage: None}
    originals = {name: getattr(evaluator, name) for name in quiet if hasattr(evaluator, name)}
    try:
        for name in originals:
            setattr(evaluator, name, quiet[name])
        yield
    finally:
        for name, original in originals.items():
            setattr(evaluator, name, original)


def _doc_value(v: Any) -> float | list[float] | None:
    """A per-document metric value as JSON: a number, or [log-likelihood, weight] for weighted metrics."""
    if isinstance(v, (bool, int, float)) or type(v).__module__ == "numpy":
        try:
            return float(v)
        except (TypeError, ValueError):
            return None
    if isinstance(v, (list, tuple)) and len(v) == 2:
        try:
            return [float(v[0]), float(v[1])]
        except (TypeError, ValueError):
            return None
    return None


def per_doc(samples: dict | None) -> dict[str, list[dict]]:
    """lm-eval's logged samples -> task -> one record per (document, filter), sorted by filter and doc id:
    ``{"doc_id", "doc_hash", "filter", "values": {metric: number | [ll, weight]}}`` (no document text)."""
    out: dict[str, list[dict]] = {}
    for task, examples in (samples or {}).items():
        rows = []
        for ex in examples:
            values = {m: v for m in ex.get("metrics", []) if (v := _doc_value(ex.get(m))) is not None}
            rows.append({"doc_id": int(ex["doc_id"]), "doc_hash": ex.get("doc_hash"),
                         "filter": ex.get("filter", "none"), "values": values})
        out[task] = sorted(rows, key=lambda r: (r["filter"], r["doc_id"]))
    return out
