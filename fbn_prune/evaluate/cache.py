"""Cached results of a model already evaluated: keys from plain data, one JSON file per (model, task).

Choice: fbn_prune keeps its own cache rather than lm-eval's request cache (``use_cache`` /
``CachingLM``). lm-eval's cache stores single loglikelihood requests in an SQLite file per model
name; it still needs the model loaded (an HFLM around it) and still runs the whole evaluation
loop, and it holds no per-document metric values or aggregated results. Ours stores lm-eval's
kept result parts plus the per-document records (what the paired statistics need) per requested
task, so a series of pruning experiments evaluates the base model once, and a comparison of
checkpoints already evaluated loads no model at all.

The key is the sha256 of canonical JSON built from plain data only (never an object's repr, whose
memory address changes from process to process): the model's content hash; per leaf task its
version, its configuration (:func:`plain`: a callable becomes its qualified name plus the sha256 of
its source, another object its type and attributes, with the paths of its local data files and of
its YAML reduced to their names), the sha256 of each data file it reads and the number of
documents; the groups' configurations; every setting that can change a number; lm-eval's
version. :data:`CACHE_FORMAT` is part of the key and of the record: bumped whenever either changes
meaning, so older entries are misses.

Public API: :data:`CACHE_FORMAT`, :func:`plain`, :func:`digest`, :func:`cache_key`, :func:`read`,
:func:`write`, :func:`split`, :func:`merge`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

from fbn_prune._io.atomic import atomic_write
from fbn_prune._runtime.cache import cache_dir
from fbn_prune.evaluate.harness import (
    LM_EVAL_SEEDS,
    RESULT_KEYS,
    TaskSpec,
    data_files,
    group_config,
    lm_eval_version,
    task_config,
)
from fbn_prune.evaluate.settings import EvalSettings
from fbn_prune.models.identity import file_sha256

log = logging.getLogger(__name__)

CACHE_FORMAT = 4
"""Bumped whenever the cached record or its key changes meaning (3: keys from :func:`plain` data; 4: data
files keyed by name and content, not by the folder they were rendered into)."""


def _source_sha256(fn: Any) -> str:
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):  # a builtin or a function made at run time: its name alone
        source = ""
    return hashlib.sha256(source.encode()).hexdigest()


def plain(value: Any, _depth: int = 0) -> Any:
    """``value`` as JSON-ready data that is the same in every process.

    dict, list, tuple, str, numbers, None stay (tuples become lists, keys strings); a set becomes a
    sorted list; a ``functools.partial`` its function, arguments and keywords; another callable
    (function, method, class) ``{"callable": "module.qualname", "source_sha256": ...}``; any other
    object ``{"object": "module.qualname", "state": plain(vars(obj))}`` (without attributes: its type
    alone, as also below 32 levels of nesting). No repr is used, so no memory address reaches a key.
    """
    if _depth > 32:
        return {"object": f"{type(value).__module__}.{type(value).__qualname__}"}
    d = _depth + 1
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v, d) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, d) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v, d) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, functools.partial):
        return {"partial": plain(value.func, d), "args": plain(value.args, d), "keywords": plain(value.keywords, d)}
    kind = type(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return {"callable": f"{getattr(value, '__module__', '')}.{value.__qualname__}",
                "source_sha256": _source_sha256(value)}
    name = f"{kind.__module__}.{kind.__qualname__}"
    try:
        state = vars(value)
    except TypeError:
        return {"object": name}
    return {"object": name, "state": plain(state, d)}


def digest(value: Any) -> str:
    """sha256 of :func:`plain` ``(value)`` as canonical JSON."""
    return hashlib.sha256(json.dumps(plain(value), sort_keys=True).encode()).hexdigest()


def _names_for_paths(value: Any, files: set[str]) -> Any:
    """``value`` (a task config) with every string that is one of ``files`` (or a folder holding
    them) replaced by its last path part. ``files`` are the data files, whose content is keyed by
    sha256 beside it, and the YAML the task came from (``config_source``, in its metadata), whose
    content is the config itself; so a task folder rendered again elsewhere (another cache folder, a re-provisioned
    data folder) keys the same."""
    if isinstance(value, str):
        if value in files or any(f.startswith(value.rstrip("/") + "/") for f in files):
            return Path(value).name
        return value
    if isinstance(value, dict):
        return {k: _names_for_paths(v, files) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_names_for_paths(v, files) for v in value]
    return value


def _config_sources(cfg: dict) -> list[str]:
    """The YAML file(s) a task config names as its source (lm-eval keeps it in ``metadata``)."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    return [v for v in (cfg.get("config_source"), meta.get("config_source")) if isinstance(v, str) and v]


def cache_key(spec: TaskSpec, model_sha: str, settings: EvalSettings, samples: dict | None, device: str) -> str:
    """The key of ``spec``'s results for the model of content hash ``model_sha`` (see the module docstring).
    Call it on the tasks as loaded, before lm-eval sets anything on them."""
    tasks = {}
    for name, task in sorted(spec.tasks.items()):
        cfg = task_config(task)
        cfg.pop("num_fewshot", None)  # set by simple_evaluate from the settings below
        files = data_files(cfg)
        tasks[name] = {
            "version": cfg.get("metadata", {}).get("version") if isinstance(cfg.get("metadata"), dict) else None,
            "config": digest(_names_for_paths(cfg, {*files, *_config_sources(cfg)})),
            "data": {Path(f).name + ":" + str(i): file_sha256(f) for i, f in enumerate(files)},
            "documents": len(samples[name]) if samples and name in samples else "all",
        }
    groups = {name: digest(group_config(g)) for name, g in sorted(spec.groups.items())}
    material = {
        "format": CACHE_FORMAT, "model": model_sha, "requested": spec.load if spec.source is None else "ppl",
        "tasks": tasks, "groups": groups, "num_fewshot": settings.num_fewshot, "batch_size": settings.batch_size,
        "max_length": settings.max_length, "dtype": settings.dtype, "device": device.split(":")[0],
        "bootstrap_iters": settings.bootstrap_iters, "seeds": LM_EVAL_SEEDS, "lm_eval": lm_eval_version(),
    }
    return digest(material)


def _path(key: str) -> Path:
    return cache_dir() / "eval" / "results" / f"{key}.json"


def read(key: str, spec: TaskSpec) -> dict | None:
    """The cached result of ``spec`` under ``key``; None for a miss (no entry, another format, an
    entry without the per-document results of every leaf task, an unreadable file)."""
    try:
        record = json.loads(_path(key).read_text())
        if record.get("format") == CACHE_FORMAT and set(spec.tasks) <= set(record["result"].get("docs") or {}):
            return record["result"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    return None


def write(key: str, what: str, spec: TaskSpec, result: dict) -> None:
    """Store ``result`` (:func:`split` of a model's results) under ``key``; a failed write is logged."""
    record = {"format": CACHE_FORMAT, "model": what, "task": spec.requested,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "result": result}
    try:
        atomic_write(_path(key), json.dumps(record))
    except OSError as e:
        log.warning("could not cache the results of %s (%s)", what, e)


def split(result: dict, spec: TaskSpec) -> dict:
    """The part of one model's results (lm-eval's dict, ``docs``, ``max_length``) that belongs to ``spec``."""
    names = set(spec.tasks) | set(spec.groups)
    out = {k: {n: v for n, v in (result.get(k) or {}).items() if n in names} for k in (*RESULT_KEYS, "docs")}
    out["max_length"] = result.get("max_length")
    return out


def merge(parts: list[dict]) -> dict:
    """One model's results from the parts of several requested tasks (:func:`split`'s inverse)."""
    out: dict[str, Any] = {k: {} for k in (*RESULT_KEYS, "docs")}
    for part in parts:
        for k in (*RESULT_KEYS, "docs"):
            out[k].update(part.get(k) or {})
        out["max_length"] = out.get("max_length") or part.get("max_length")
    return out
