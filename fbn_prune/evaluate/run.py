"""Original vs pruned through lm-evaluation-harness: same tasks, same settings, same documents.

    base model ────┐                          ┌─> eval.json + eval.md + eval-docs.jsonl  (fbn_prune.evaluate.report)
                   ├─ lm-eval HFLM, in-process┤
    pruned dir(s) ─┘                          └─> each checkpoint's README.md + fbn_prune.json

The models are loaded in this process, one after the other, and handed to lm-eval's
``HFLM(pretrained=model, tokenizer=tok)`` with identical batch size, dtype, device,
context length, few-shot count, document subset and seeds. lm-eval logs every document's
result (``log_samples``), so the report can pair the models document by document
(:mod:`fbn_prune.evaluate.paired`). Before any model is loaded, the base is checked against the identity
each checkpoint records (:mod:`fbn_prune.models.identity`; a different base is refused unless
``any_base``, and then nothing is written into the checkpoint), the task names are checked
(unknown names, missing data files, unreadable task data) and the tokenizers are compared.

Tasks are lm-eval task, group or tag names, YAML paths, or ``ppl:FILE``: the perplexity of
a local text file, computed by lm-eval itself from a small rolling-loglikelihood task that
is rendered for the file (like lm-eval's ``wikitext``: word perplexity, byte perplexity,
bits per byte). The standard tasks piqa, arc_easy, lambada_openai and wikitext read local
data files (:mod:`fbn_prune.texts.tasks`); further task folders come in with ``include_path``.

Every model's results, per-document ones included, are cached per requested task under
``<fbn_prune cache>/eval/``, keyed by the model's content hash, the task's full
configuration and data-file hashes, the documents evaluated and every setting that can
change a number, so a series of pruning experiments evaluates the base model once, and a
later comparison of checkpoints already evaluated runs no model at all.

Public API: :class:`EvalSettings`, :func:`run` (evaluate + report + update the checkpoints),
:func:`compare` / :func:`compare_many` (evaluate only), :func:`parse_limit`, :func:`ppl_task`,
:func:`tokenizer_differences`, :func:`model_hash`.
"""

from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbn_prune.evaluate import paired
from fbn_prune.config.limits import _limit_value, parse_limit  # noqa: F401  (re-exported)
from fbn_prune._runtime.devices import resolve_device
from fbn_prune._runtime.versions import versions
from fbn_prune.errors import UserError
from fbn_prune.models.identity import BaseCheck, check_base, file_sha256, folder_hash, identify, model_hash
from fbn_prune._io.atomic import atomic_write as _atomic_write

log = logging.getLogger(__name__)

PPL_PREFIX = "ppl:"
"""Task-name prefix for the perplexity of a local text file: ``ppl:/path/file.txt``."""
CACHE_FORMAT = 2
"""Bumped whenever the cached record or its key changes meaning."""
LM_EVAL_SEEDS = {"random_seed": 0, "numpy_random_seed": 1234, "torch_random_seed": 1234, "fewshot_random_seed": 1234}
"""lm-eval's default seeds, passed explicitly so both models see the same few-shot examples."""
RESULT_KEYS = ("results", "versions", "n-shot", "higher_is_better", "n-samples", "group_subtasks", "configs")
"""The parts of lm-eval's result dict that are kept (and cached) per model."""


# ----------------------------------------------------------------------------- settings
@dataclass
class EvalSettings:
    """Everything that makes the two evaluations identical. The same object drives both models.

    Attributes:
        tasks: lm-eval task/group/tag names, YAML paths, or ``ppl:FILE`` (perplexity of a local
            .txt file, paragraphs separated by blank lines, or a .jsonl file with a "text" field).
        limit: documents per task: a count (int >= 1), a fraction of the task (0 < float < 1), or
            None for all. The first documents are used, as with lm-eval's ``--limit``.
        task_limits: per-task overrides of ``limit`` (task or requested name -> count or fraction).
        num_fewshot: few-shot examples; None keeps each task's default (0 for the standard tasks).
        batch_size: requests per forward pass (an int; the same for both models).
        max_length: context length for lm-eval (rolling windows, truncation); None: the model's.
        device: "auto", "cpu", "cuda", "cuda:1", ...
        dtype: float32, bfloat16 or float16; both models are evaluated in it.
        include_path: extra folders of task YAMLs.
        data_dir: the local data folder (see :func:`fbn_prune.texts.tasks.data_dir`).
        bootstrap_iters: bootstrap draws for the standard error of non-mean metrics (lambada
            perplexity); mean metrics (acc, acc_norm) have a closed-form standard error.
        cache: reuse cached results (per-document ones included) of a model already evaluated with
            these settings (False: evaluate again; the fresh results still replace the cached ones).
        paired_iters: bootstrap resamples of the documents for the paired intervals.
        paired_seed: seed of those resamples (the same documents are drawn for every model).
    """

    tasks: list[str]
    limit: int | float | None = None
    task_limits: dict[str, int | float] = field(default_factory=dict)
    num_fewshot: int | None = None
    batch_size: int = 8
    max_length: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    include_path: list[str] = field(default_factory=list)
    data_dir: str | None = None
    bootstrap_iters: int = 1000
    cache: bool = True
    paired_iters: int = paired.DEFAULT_ITERS
    paired_seed: int = paired.DEFAULT_SEED

    def check(self) -> None:
        """Raise UserError for values lm-eval would reject later (or silently misread)."""
        from fbn_prune._runtime.dtypes import DTYPES

        if not [t for t in self.tasks if str(t).strip()]:
            raise UserError("no task given; name lm-eval tasks with --tasks (e.g. piqa,arc_easy,wikitext).")
        for value in [self.limit, *self.task_limits.values()]:
            if value is not None:
                _limit_value(str(value), str(value))
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise UserError(f"--num-fewshot must be >= 0, got {self.num_fewshot}.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.max_length is not None and self.max_length < 2:
            raise UserError(f"--max-length must be >= 2, got {self.max_length}.")
        if self.dtype not in DTYPES:
            raise UserError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}.")
        if self.bootstrap_iters < 0:
            raise UserError(f"bootstrap iterations must be >= 0, got {self.bootstrap_iters}.")
        if self.paired_iters < 100:
            raise UserError(f"paired bootstrap resamples must be >= 100, got {self.paired_iters}.")



def _data_files(cfg: dict) -> list[str]:
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


def _json_digest(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON; what JSON cannot hold goes through ``_stable_text``."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=_stable_text).encode()).hexdigest()


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _stable_text(value: Any) -> str:
    """A text for a non-JSON value that is the same in every process: a function (lm-eval task
    configs hold some, e.g. wikitext's detokenizer) is its module, name and source hash, not its
    repr, whose memory address changes from run to run; other objects lose addresses too."""
    import inspect

    if callable(value) and hasattr(value, "__qualname__"):
        try:
            source = inspect.getsource(value)
        except (OSError, TypeError):
            source = ""
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}:{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    return _ADDRESS.sub("", str(value))


# ----------------------------------------------------------------------------- ppl:FILE
def _ppl_documents(path: Path) -> list[str]:
    """A text file's documents: .jsonl -> the "text" field of each line; else blocks between blank lines."""
    from fbn_prune.texts.files import text_documents

    docs = text_documents(path, "text", "perplexity file", hint="")
    if not docs:
        raise UserError(f"perplexity file {path} holds no text.")
    return docs


PPL_YAML = """\
# Rendered by fbn_prune for `ppl:{source}` (sha256 {digest}).
# Rolling loglikelihood over each document, like lm-eval's wikitext task: word perplexity,
# byte perplexity and bits per byte, aggregated over all documents (weighted by words/bytes).
task: {name}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    test: "{data}"
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
should_decontaminate: true
doc_to_decontamination_query: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
metadata:
  version: 1.0
  source: "{source}"
  sha256: "{digest}"
"""


def ppl_task(spec: str, data_dir: str | None = None) -> tuple[str, Path]:
    """Render the rolling-perplexity task of ``ppl:FILE``; return (task name, YAML path).

    FILE may be ``data:REL`` (a file in the data folder). Documents: the "text" field of each
    line of a .jsonl file, or the blocks of a text file separated by blank lines (each block
    is scored on its own, as lm-eval scores each WikiText article). The task is named
    ``ppl_<file stem>`` and rendered once per file content under ``<cache>/eval/ppl/``.

    Raises UserError for a missing, unreadable or empty file.
    """
    from fbn_prune.texts.calibration import resolve_data_path
    from fbn_prune.models.sources import cache_dir

    raw = spec[len(PPL_PREFIX):] if spec.startswith(PPL_PREFIX) else spec
    if not raw.strip():
        raise UserError("ppl: needs a file, e.g. ppl:notes.txt.")
    path = Path(resolve_data_path(raw.strip(), data_dir)).expanduser()
    if not path.is_file():
        raise UserError(f"missing data file {raw} for task {PPL_PREFIX}{raw}.")
    path = path.resolve()
    docs = _ppl_documents(path)
    digest = file_sha256(path)
    name = "ppl_" + (re.sub(r"[^0-9a-zA-Z]+", "_", path.stem).strip("_").lower() or "file")
    root = cache_dir() / "eval" / "ppl"
    final = root / f"{name}-{digest[:16]}"
    yaml_path = final / f"{name}.yaml"
    if yaml_path.is_file():
        return name, yaml_path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ppl-", dir=root))
    try:
        with (tmp / "data.jsonl").open("w", encoding="utf-8") as fh:
            for doc in docs:
                fh.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
        esc = lambda s: json.dumps(str(s))[1:-1]  # noqa: E731  (inside a double-quoted YAML scalar)
        (tmp / f"{name}.yaml").write_text(
            PPL_YAML.format(name=name, source=esc(path), digest=digest, data=esc(final / "data.jsonl")), encoding="utf-8"
        )
        try:
            tmp.rename(final)
        except OSError:  # rendered meanwhile by another process
            if not yaml_path.is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return name, yaml_path


# ----------------------------------------------------------------------------- tasks
_TM_MEMO: dict[tuple, Any] = {}


def _task_manager(include_path: list[str], data_dir: str | None):
    """fbn_prune's task manager (local tasks + include paths), built once per process and inputs:
    indexing lm-eval's ~10k built-in YAMLs takes seconds."""
    from fbn_prune.models.sources import cache_dir
    from fbn_prune.texts.tasks import LOCAL_TASKS, _find_data_dir, task_manager

    data = _find_data_dir(data_dir)
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
        _TM_MEMO[key] = task_manager(include_path=list(include_path) or None, data=data_dir)
    return _TM_MEMO[key]


@dataclass
class _Spec:
    """One requested task: what the user typed, what lm-eval loads, and what that loaded."""

    requested: str
    load: str
    source: str | None = None  # the text file of a ppl: task
    objects: list = field(default_factory=list)  # top-level Task/Group objects
    tasks: dict = field(default_factory=dict)  # leaf name -> Task
    groups: dict = field(default_factory=dict)  # group name -> Group
    key: str | None = None  # base-result cache key


def _load_specs(settings: EvalSettings) -> tuple[Any, list[_Spec]]:
    """Resolve and load every requested task (datasets included) before any model is loaded."""
    from fbn_prune.texts.tasks import resolve_tasks

    specs: list[_Spec] = []
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
            specs.append(_Spec(raw, str(yaml_path), source=source))
        else:
            specs.append(_Spec(raw, raw))
    tm = _task_manager(settings.include_path, settings.data_dir)
    resolved = resolve_tasks([s.load for s in specs], tm)
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


def _samples(specs: list[_Spec], settings: EvalSettings) -> dict[str, list[int]] | None:
    """Document indices per leaf task (the first N, as lm-eval's --limit takes them); None: all, everywhere."""
    from lm_eval.evaluator_utils import get_sample_size

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


def _cache_key(spec: _Spec, model_sha: str, settings: EvalSettings, samples: dict | None, device: str) -> str:
    from importlib import metadata

    tasks = {}
    for name, task in sorted(spec.tasks.items()):
        cfg = task.dump_config()
        cfg.pop("num_fewshot", None)  # set by simple_evaluate from the settings below
        tasks[name] = {
            "version": cfg.get("metadata", {}).get("version") if isinstance(cfg.get("metadata"), dict) else None,
            "config": _json_digest(cfg),
            "data": {Path(f).name + ":" + str(i): file_sha256(f) for i, f in enumerate(_data_files(cfg))},
            "documents": len(samples[name]) if samples and name in samples else "all",
        }
    groups = {name: _json_digest(g.to_dict()) for name, g in sorted(spec.groups.items())}
    material = {
        "format": CACHE_FORMAT, "model": model_sha, "requested": spec.load if spec.source is None else "ppl",
        "tasks": tasks, "groups": groups, "num_fewshot": settings.num_fewshot, "batch_size": settings.batch_size,
        "max_length": settings.max_length, "dtype": settings.dtype, "device": device.split(":")[0],
        "bootstrap_iters": settings.bootstrap_iters, "seeds": LM_EVAL_SEEDS, "lm_eval": metadata.version("lm_eval"),
    }
    return _json_digest(material)


def _cache_path(key: str) -> Path:
    from fbn_prune.models.sources import cache_dir

    return cache_dir() / "eval" / "results" / f"{key}.json"


def _split(result: dict, spec: _Spec) -> dict:
    """The part of one model's results (lm-eval's dict, ``docs``, ``max_length``) that belongs to ``spec``."""
    names = set(spec.tasks) | set(spec.groups)
    out = {k: {n: v for n, v in (result.get(k) or {}).items() if n in names} for k in (*RESULT_KEYS, "docs")}
    out["max_length"] = result.get("max_length")
    return out


def _merge(parts: list[dict]) -> dict:
    out: dict[str, Any] = {k: {} for k in (*RESULT_KEYS, "docs")}
    for part in parts:
        for k in (*RESULT_KEYS, "docs"):
            out[k].update(part.get(k) or {})
        out["max_length"] = out.get("max_length") or part.get("max_length")
    return out


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


def aggregations(specs: list[_Spec]) -> dict[str, dict[str, str]]:
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


# ----------------------------------------------------------------------------- tokenizers and models
PROBE = "Pruning keeps 80% of the FFN: naïve café, 1234 tokens, <tags> & emojis 🙂.\n\tEnd."


def tokenizer_differences(a, b) -> list[str]:
    """Ways two tokenizers differ (vocabulary, special tokens, how a probe text is encoded); [] if none.

    A missing pad token counts as the eos token, as :func:`fbn_prune.models.sources.load_model` sets it.
    """
    problems: list[str] = []
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        differ = len(set(va.items()) ^ set(vb.items()))
        problems.append(f"vocabularies of {len(va):,} and {len(vb):,} tokens, {differ:,} entries differ")
    for attr in ("bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token"):
        x, y = getattr(a, attr, None), getattr(b, attr, None)
        if str(x) != str(y):
            problems.append(f"{attr} {x!r} vs {y!r}")
    pa, pb = (t.pad_token or t.eos_token for t in (a, b))
    if str(pa) != str(pb):
        problems.append(f"pad_token {pa!r} vs {pb!r}")
    sa = set(map(str, getattr(a, "all_special_tokens", []))) - {str(pa)}
    sb = set(map(str, getattr(b, "all_special_tokens", []))) - {str(pb)}
    if sa != sb:
        problems.append(f"special tokens {sorted(sa ^ sb)} in one only")
    if not problems and a(PROBE)["input_ids"] != b(PROBE)["input_ids"]:
        problems.append("the same text is encoded to different token ids")
    return problems


def _check_tokenizers(base_path: str, pruned: Path, base_spec: str) -> None:
    from transformers import AutoTokenizer

    toks = []
    for path, what in ((base_path, f"base model {base_spec!r}"), (str(pruned), f"pruned checkpoint {pruned}")):
        try:
            toks.append(AutoTokenizer.from_pretrained(path))
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"could not load the tokenizer of the {what}: {first}") from e
    problems = tokenizer_differences(*toks)
    if problems:
        raise UserError(
            f"the tokenizers of the base model and the pruned checkpoint differ ({'; '.join(problems[:2])}); "
            "compare a pruned model with the model it was pruned from."
        )


def load_checkpoint(folder: str | os.PathLike[str], dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) of an fbn_prune checkpoint, in eval mode; the exact layout loads its own
    modeling file (``trust_remote_code``), as the model card says."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fbn_prune.export.provenance import read_provenance
    from fbn_prune._runtime.dtypes import DTYPES

    info = read_provenance(folder)
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=DTYPES[dtype], trust_remote_code=info.layout == "exact"
        )
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"could not load the checkpoint {folder}: {first}") from e
    model.to(device).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _load_base(source, dtype: str, device: str):
    from fbn_prune.export.provenance import PROVENANCE_FILE
    from fbn_prune.models.sources import load_model

    if source.local and (Path(source.path) / PROVENANCE_FILE).is_file():  # an fbn_prune checkpoint as the base
        return load_checkpoint(source.path, dtype, device)
    return load_model(source, dtype, device)


def _release() -> None:
    """Give the memory of a model the caller has just dropped back (before the next one loads)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _evaluate(model, tok, objects: list, tm, settings: EvalSettings, samples, device: str) -> dict:
    """One model through lm-eval's Python API; returns the kept parts of its result dict, its
    per-document results (``docs``, see :func:`per_doc`) and the context length used."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=settings.batch_size, max_length=settings.max_length,
              device=device)
    res = lm_eval.simple_evaluate(
        model=lm, tasks=list(objects), task_manager=tm, num_fewshot=settings.num_fewshot, samples=samples,
        bootstrap_iters=settings.bootstrap_iters, log_samples=True, **LM_EVAL_SEEDS,
    )
    out = {k: res.get(k) or {} for k in RESULT_KEYS}
    out = json.loads(json.dumps(out, default=str))  # numpy scalars, dtypes -> plain JSON
    out["docs"] = per_doc(res.get("samples"))
    out["max_length"] = lm.max_length
    return out


# ----------------------------------------------------------------------------- the comparison
def _resolve_device(device: str) -> str:

    return resolve_device(device)


def default_base(pruned: str | os.PathLike[str]) -> str:
    """The model a checkpoint was pruned from, as its fbn_prune.json records it (local path first)."""
    from fbn_prune.export.provenance import read_provenance

    info = read_provenance(pruned)
    path = info.base_model_path
    if path and Path(path).is_dir():
        return str(path)
    return info.base_model_hub_id or info.base_model


@dataclass
class _Evaluated:
    """One model's results for every requested task: from the cache where possible, else evaluated.

    ``results``: lm-eval's kept result parts plus ``docs`` (task -> per-document records) and
    ``max_length``; ``cached``: requested task names whose results came from the cache.
    """

    results: dict
    cached: list[str]
    parameters: int | None
    seconds: float | None


def _evaluate_cached(what: str, load, sha: str | None, rehash, specs: list[_Spec], tm, settings: EvalSettings,
                     samples, device: str) -> _Evaluated:
    """Evaluate the model that ``load()`` returns (``(model, tok)``) on ``specs``, reusing cached results.

    ``sha`` is the model's content hash (None: not known before loading; ``rehash()`` is asked after).
    A cache entry of an older format, or one without per-document results, is a miss.
    """
    cached: dict[str, dict] = {}
    keys: dict[str, str] = {}
    if sha:  # keys from the tasks as loaded, before lm-eval sets anything on them
        for s in specs:
            keys[s.requested] = _cache_key(s, sha, settings, samples, device)
            if not settings.cache:
                continue
            try:
                record = json.loads(_cache_path(keys[s.requested]).read_text())
                if record.get("format") == CACHE_FORMAT and set(s.tasks) <= set(record["result"].get("docs") or {}):
                    cached[s.requested] = record["result"]
            except (OSError, ValueError, KeyError, AttributeError):
                pass
    todo = [s for s in specs if s.requested not in cached]
    fresh: dict | None = None
    params = seconds = None
    if todo:
        t0 = time.perf_counter()
        log.info("evaluating %s on %s", what, ", ".join(s.requested for s in todo))
        model, tok = load()
        params = model.num_parameters()
        sub = {n: v for n, v in (samples or {}).items() if any(n in s.tasks for s in todo)} if samples else None
        fresh = _evaluate(model, tok, [o for s in todo for o in s.objects], tm, settings, sub or None, device)
        del model, tok
        _release()
        seconds = round(time.perf_counter() - t0, 2)
        sha = sha or rehash()  # a Hub model is on disk now
        if sha is not None:
            for s in todo:
                key = keys.get(s.requested) or _cache_key(s, sha, settings, samples, device)
                record = {"format": CACHE_FORMAT, "model": what, "task": s.requested, "created": _now(),
                          "result": _split(fresh, s)}
                try:
                    _atomic_write(_cache_path(key), json.dumps(record))
                except OSError as e:
                    log.warning("could not cache the results of %s (%s)", what, e)
    parts = [cached[s.requested] if s.requested in cached else _split(fresh or {}, s) for s in specs]
    return _Evaluated(_merge(parts), [s.requested for s in specs if s.requested in cached], params, seconds)


def _labels(folders: list[Path]) -> list[str]:
    """A unique short name per pruned checkpoint (its folder name; ``name#2`` for a repeated name)."""
    out: list[str] = []
    for f in folders:
        name = f.resolve().name
        label, i = name, 1
        while label in out or label == "original":
            i += 1
            label = f"{name}#{i}"
        out.append(label)
    return out


def base_mismatch_message(base: str, folder: Path, check: BaseCheck) -> str:
    return (f"--base {base} is not the model {folder} was pruned from ({check.reason}); evaluate against its "
            "base (omit --base), or pass --any-base to compare anyway (then nothing is written into the checkpoint).")


def compare_many(base: str | None, pruned: list, settings: EvalSettings, *, any_base: bool = False) -> dict:
    """Evaluate the original once and each pruned checkpoint, all with identical settings and documents.

    Nothing is written but the cache. Returns a dict: ``base`` (spec, path, hub_id, name, sha256,
    identity, parameters, cached_tasks), ``pruned`` (one summary per checkpoint: path, name, label,
    layout, parameters, base_model, method, achieved_ratio, cached_tasks, base_check), ``labels``,
    ``any_base``, ``settings``, ``versions``, ``tasks`` (requested name -> leaf tasks, source, data
    hashes), ``aggregations`` (task -> metric -> lm-eval aggregation, for the paired statistics),
    ``original`` and ``pruned_results`` (a list; each: lm-eval's results, versions, n-shot,
    higher_is_better, n-samples, group_subtasks, configs, plus ``docs``: task -> per-document
    records, see :func:`per_doc`), ``timings``.

    Raises:
        UserError: bad settings, unknown task, missing data, a folder that is not an fbn_prune
            checkpoint, a checkpoint named twice, a base the checkpoint was not pruned from (unless
            ``any_base``), tokenizers that differ, a model that cannot be loaded.
    """
    from fbn_prune.export.provenance import read_provenance
    from fbn_prune.models.sources import resolve

    t_start = time.perf_counter()
    settings.check()
    if not pruned:
        raise UserError("name a pruned checkpoint with --pruned.")
    folders = [Path(p).expanduser() for p in pruned]
    for f in folders:
        if not f.exists():
            raise UserError(f"pruned checkpoint {f} does not exist.")
    if len({f.resolve() for f in folders}) != len(folders):
        raise UserError("a pruned checkpoint is named twice; name each one once.")
    infos = [read_provenance(f) for f in folders]
    base = base or default_base(folders[0])
    source = resolve(base)
    base_hash = model_hash(source)
    ident = identify(source, base_hash)
    checks = [check_base(info.to_dict(), ident, source.path if source.local else None) for info in infos]
    for f, check in zip(folders, checks):
        if check.verdict == "mismatch" and not any_base:
            raise UserError(base_mismatch_message(base, f, check))
        if check.verdict == "unverified":
            log.warning("cannot verify that %s was pruned from %s: %s", f, base, check.reason)
    device = _resolve_device(settings.device)
    tm, specs = _load_specs(settings)
    for f in folders:
        _check_tokenizers(source.path, f, base)
    samples = _samples(specs, settings)
    timings: dict[str, float] = {"prepare_s": round(time.perf_counter() - t_start, 2)}

    original = _evaluate_cached(f"the original model {base}", lambda: _load_base(source, settings.dtype, device),
                                base_hash, lambda: model_hash(source), specs, tm, settings, samples, device)
    if original.seconds is not None:
        timings["original_s"] = original.seconds
    labels = _labels(folders)
    evaluated: list[_Evaluated] = []
    for f, label in zip(folders, labels):
        sha = folder_hash(f)
        ev = _evaluate_cached(f"the pruned model {f}", lambda f=f: load_checkpoint(f, settings.dtype, device),
                              sha, lambda sha=sha: sha, specs, tm, settings, samples, device)
        evaluated.append(ev)
        if ev.seconds is not None:
            timings["pruned_s" if len(folders) == 1 else f"pruned_s[{label}]"] = ev.seconds
    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    first = evaluated[0].results
    return {
        "base": {"spec": base, "path": source.path if source.local else None, "hub_id": source.hub_id,
                 "name": source.base_model, "sha256": base_hash or model_hash(source),
                 "identity": ident.to_dict(),
                 "parameters": original.parameters or (infos[0].params or {}).get("before"),
                 "cached_tasks": original.cached},
        "pruned": [{"path": str(f.resolve()), "name": f.resolve().name, "label": label, "layout": info.layout,
                    "parameters": ev.parameters or (info.params or {}).get("after"),
                    "base_model": info.base_model,
                    "method": (info.selection or {}).get("method"),
                    "achieved_ratio": (info.selection or {}).get("achieved_ratio"),
                    "cached_tasks": ev.cached, "base_check": check.to_dict()}
                   for f, label, info, ev, check in zip(folders, labels, infos, evaluated, checks)],
        "labels": ["original", *labels],
        "any_base": any_base,
        "settings": {
            "tasks": [s.requested for s in specs], "limit": settings.limit, "task_limits": settings.task_limits,
            "documents": {n: len(v) for n, v in samples.items()} if samples else None,
            "num_fewshot": settings.num_fewshot, "batch_size": settings.batch_size,
            "max_length": first.get("max_length"), "device": device, "dtype": settings.dtype,
            "include_path": [str(Path(p).expanduser().resolve()) for p in settings.include_path],
            "data_dir": str(tm.data_dir) if getattr(tm, "data_dir", None) else None,
            "bootstrap_iters": settings.bootstrap_iters, "seeds": LM_EVAL_SEEDS, "model_class": "lm_eval HFLM",
            "paired_iters": settings.paired_iters, "paired_seed": settings.paired_seed,
        },
        "versions": versions(),
        "tasks": {s.requested: {"tasks": list(s.tasks), "groups": list(s.groups), "source": s.source,
                                "data_sha256": {Path(f).name: file_sha256(f) for t in s.tasks.values()
                                                for f in _data_files(t.dump_config())}}
                  for s in specs},
        "aggregations": aggregations(specs),
        "original": original.results,
        "pruned_results": [ev.results for ev in evaluated],
        "timings": timings,
    }


def one_of(comparison: dict, i: int) -> dict:
    """The original-vs-one-pruned view of :func:`compare_many`'s result (``pruned`` and ``pruned_results``
    of checkpoint ``i`` alone), which :func:`fbn_prune.evaluate.report.build` turns into that checkpoint's report."""
    view = {k: v for k, v in comparison.items() if k not in ("pruned", "pruned_results", "labels")}
    view["pruned"] = comparison["pruned"][i]
    view["pruned_results"] = comparison["pruned_results"][i]
    return view


def compare(base: str | None, pruned: str | os.PathLike[str], settings: EvalSettings, *,
            any_base: bool = False) -> dict:
    """Evaluate the original and one pruned model with identical settings; nothing is written but the cache.

    Returns :func:`one_of` ``(compare_many(...), 0)``: ``base``, ``pruned`` (one summary), ``settings``,
    ``versions``, ``tasks``, ``aggregations``, ``original`` and ``pruned_results`` (lm-eval's kept
    results plus per-document ``docs``), ``timings``. Raises UserError as :func:`compare_many`.
    """
    return one_of(compare_many(base, [pruned], settings, any_base=any_base), 0)


def run(base: str | None, pruned, settings: EvalSettings, *, gate=None, out: str | os.PathLike[str] | None = None,
        update_card: bool = True, any_base: bool = False) -> dict:
    """Evaluate, then write the report and, where allowed, update the checkpoints.

    ``pruned`` is one checkpoint folder or a list of them.

    One checkpoint: ``eval.json``, ``eval.md`` and ``eval-docs.jsonl`` (per-document results of both
    models) go to ``out`` (default: the checkpoint) and, unless ``update_card`` is False or
    ``any_base`` is set, the table and Hub ``model-index`` go into the checkpoint's README.md and an
    ``evaluation`` summary into its fbn_prune.json. Returns the eval.json record.

    Several checkpoints: the comparison of all of them (each against the original and each pair
    between them) goes to ``out`` (required); each checkpoint also gets its own report and card,
    unless ``update_card`` is False or ``any_base`` is set. Returns the comparison record, whose
    ``reports`` hold each checkpoint's record.

    With ``any_base`` nothing is ever written into a checkpoint, so ``out`` is required.
    ``gate`` is a :class:`fbn_prune.evaluate.report.Gate` (or None); ``record["gate"]["passed"]`` (one
    checkpoint) or ``record["passed"]`` (several) says whether it held for all. Never raises for a
    failed gate (the command line turns that into exit code 3); raises UserError for bad input, and
    for a gate that no evaluated metric falls under.
    """
    from fbn_prune.evaluate import report

    many = isinstance(pruned, (list, tuple))
    folders = [Path(p).expanduser() for p in (pruned if many else [pruned])]
    if any_base and out is None:
        raise UserError("--any-base never writes into the checkpoint; give --out REPORT_DIR for the report.")
    if any_base and any(Path(out).expanduser().resolve().is_relative_to(f.resolve()) for f in folders):
        raise UserError(f"--any-base never writes into the checkpoint; give an --out outside it (not {out}).")
    if many and len(folders) > 1 and out is None:
        raise UserError("several --pruned checkpoints need --out REPORT_DIR for the comparison report.")
    comparison = compare_many(base, folders, settings, any_base=any_base)
    records = [report.build(one_of(comparison, i), gate) for i in range(len(folders))]
    into_checkpoints = update_card and not any_base
    original = comparison["original"]
    pairs = [report.doc_lines(["original", "pruned"], [original, r]) for r in comparison["pruned_results"]]
    try:
        if len(folders) == 1:
            record = records[0]
            folder = Path(out).expanduser() if out else folders[0]
            report.write(record, folder, pairs[0])
            if into_checkpoints:
                report.update_checkpoint(folders[0], record, folder)
        else:
            record = report.build_many(comparison, records)
            report.write_many(record, Path(out).expanduser(),
                              report.doc_lines(comparison["labels"], [original, *comparison["pruned_results"]]))
            if into_checkpoints:
                for f, r, docs in zip(folders, records, pairs):
                    report.write(r, f, docs)
                    report.update_checkpoint(f, r, f)
    except PermissionError as e:
        raise UserError(f"cannot write the evaluation report: {e}") from e
    for r in records:
        if r["gate"] and r["gate"]["checked"] == 0:
            raise UserError(r["gate"]["summary"])
    return record


# ----------------------------------------------------------------------------- small helpers
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


__all__ = [
    "PPL_PREFIX",
    "EvalSettings",
    "aggregations",
    "compare",
    "compare_many",
    "default_base",
    "file_sha256",
    "load_checkpoint",
    "model_hash",
    "one_of",
    "parse_limit",
    "per_doc",
    "ppl_task",
    "run",
    "tokenizer_differences",
]
