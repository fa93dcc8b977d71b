"""Original vs pruned through lm-evaluation-harness: same tasks, same settings, same documents.

    base model ────┐                          ┌─> eval.json + eval.md + eval-docs.jsonl  (fbn_prune.evaluate.report)
                   ├─ lm-eval HFLM, in-process┤
    pruned dir(s) ─┘                          └─> each checkpoint's README.md + fbn_prune.json

The models are loaded in this process, one after the other (:mod:`fbn_prune.evaluate.loading`), and
handed to lm-eval (:mod:`fbn_prune.evaluate.harness`) with identical batch size, dtype, device,
context length, few-shot count, document subset and seeds. lm-eval logs every document's result,
so the report can pair the models document by document (:mod:`fbn_prune.evaluate.paired`). Before any
model is loaded, the base is checked against the identity each checkpoint records
(:mod:`fbn_prune.models.identity`; a different base is refused unless ``any_base``, and then nothing
is written into the checkpoint), the task names are checked (unknown names, missing data files,
unreadable task data) and the tokenizers are compared.

Every model's results, per-document ones included, are cached per requested task
(:mod:`fbn_prune.evaluate.cache`), so a series of pruning experiments evaluates the base model once,
and a later comparison of checkpoints already evaluated runs no model at all.

Public API: :func:`run` (evaluate + report + update the checkpoints), :func:`compare` /
:func:`compare_many` (evaluate only), :func:`base_mismatch_message`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fbn_prune._runtime.devices import resolve_device
from fbn_prune._runtime.dtypes import native_bfloat16
from fbn_prune._runtime.versions import versions
from fbn_prune.config.gate import Gate
from fbn_prune.errors import UserError
from fbn_prune.evaluate import cache, harness, loading, report
from fbn_prune.evaluate.harness import TaskSpec
from fbn_prune.evaluate.record import Comparison, ComparisonRecord, EvalRecord, PairComparison
from fbn_prune.evaluate.settings import EvalSettings
from fbn_prune.export.provenance import read_provenance
from fbn_prune.models.identity import BaseCheck, check_base, file_sha256, folder_hash, identify, model_hash
from fbn_prune.models.sources import resolve

log = logging.getLogger(__name__)


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


def _evaluate_cached(what: str, load, sha: str | None, rehash, specs: list[TaskSpec], tm, settings: EvalSettings,
                     samples, device: str) -> _Evaluated:
    """Evaluate the model that ``load()`` returns (``(model, tok)``) on ``specs``, reusing cached results.

    ``sha`` is the model's content hash (None: not known before loading; ``rehash()`` is asked after).
    A cache entry of an older format, or one without per-document results, is a miss.
    """
    found: dict[str, dict] = {}
    keys: dict[str, str] = {}
    if sha:  # keys from the tasks as loaded, before lm-eval sets anything on them
        for s in specs:
            keys[s.requested] = cache.cache_key(s, sha, settings, samples, device)
            if settings.cache and (result := cache.read(keys[s.requested], s)) is not None:
                found[s.requested] = result
    todo = [s for s in specs if s.requested not in found]
    fresh: dict | None = None
    params = seconds = None
    if todo:
        t0 = time.perf_counter()
        log.info("evaluating %s on %s", what, ", ".join(s.requested for s in todo))
        model, tok = load()
        params = model.num_parameters()
        sub = {n: v for n, v in (samples or {}).items() if any(n in s.tasks for s in todo)} if samples else None
        fresh = harness.evaluate_model(model, tok, [o for s in todo for o in s.objects], tm, settings, sub or None,
                                       device)
        del model, tok
        loading.release()
        seconds = round(time.perf_counter() - t0, 2)
        sha = sha or rehash()  # a Hub model is on disk now
        if sha is not None:
            for s in todo:
                key = keys.get(s.requested) or cache.cache_key(s, sha, settings, samples, device)
                cache.write(key, what, s, cache.split(fresh, s))
    parts = [found[s.requested] if s.requested in found else cache.split(fresh or {}, s) for s in specs]
    return _Evaluated(cache.merge(parts), [s.requested for s in specs if s.requested in found], params, seconds)


def _warn_emulated_bfloat16(dtype: str, device: str) -> None:
    """One warning when bfloat16 is asked for on a device that would emulate it (a CPU without
    AVX512-BF16 or AMX): there it is many times slower than float32."""
    if dtype == "bfloat16" and not native_bfloat16(torch.device(device)):
        hardware = "AVX512-BF16 or AMX" if device.startswith("cpu") else "bfloat16 support"
        log.warning("%s has no %s: evaluating in bfloat16 emulates it, many times slower than --dtype float32",
                    device, hardware)


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


def compare_many(base: str | None, pruned: list, settings: EvalSettings, *, any_base: bool = False) -> Comparison:
    """Evaluate the original once and each pruned checkpoint, all with identical settings and documents.

    Nothing is written but the cache. Returns a :class:`fbn_prune.evaluate.record.Comparison`: the base
    and each checkpoint (summaries, which results came from the cache, the base check), the settings,
    versions, tasks (requested name -> leaf tasks, source, data hashes), the aggregations the paired
    statistics need, every model's results (lm-eval's kept parts plus per-document ``docs``) and timings.

    Raises:
        UserError: bad settings, unknown task, missing data, a folder that is not an fbn_prune
            checkpoint, a checkpoint named twice, a base the checkpoint was not pruned from (unless
            ``any_base``), tokenizers that differ, a model that cannot be loaded.
    """
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
    base = base or loading.default_base(folders[0])
    source = resolve(base)
    base_hash = model_hash(source)
    ident = identify(source, base_hash)
    checks = [check_base(info.to_dict(), ident, source.path if source.local else None) for info in infos]
    for f, check in zip(folders, checks):
        if check.verdict == "mismatch" and not any_base:
            raise UserError(base_mismatch_message(base, f, check))
        if check.verdict == "unverified":
            log.warning("cannot verify that %s was pruned from %s: %s", f, base, check.reason)
    device = resolve_device(settings.device)
    _warn_emulated_bfloat16(settings.dtype, device)
    tm, specs = harness.load_specs(settings)
    for f in folders:
        loading.check_tokenizers(source.path, f, base)
    samples = harness.sample_indices(specs, settings)
    timings: dict[str, float] = {"prepare_s": round(time.perf_counter() - t_start, 2)}

    original = _evaluate_cached(f"the original model {base}", lambda: loading.load_base(source, settings.dtype, device),
                                base_hash, lambda: model_hash(source), specs, tm, settings, samples, device)
    if original.seconds is not None:
        timings["original_s"] = original.seconds
    labels = _labels(folders)
    evaluated: list[_Evaluated] = []
    for f, label in zip(folders, labels):
        sha = folder_hash(f)
        ev = _evaluate_cached(f"the pruned model {f}", lambda f=f: loading.load_checkpoint(f, settings.dtype, device),
                              sha, lambda sha=sha: sha, specs, tm, settings, samples, device)
        evaluated.append(ev)
        if ev.seconds is not None:
            timings["pruned_s" if len(folders) == 1 else f"pruned_s[{label}]"] = ev.seconds
    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    first = evaluated[0].results
    return Comparison(
        base={"spec": base, "path": source.path if source.local else None, "hub_id": source.hub_id,
                 "name": source.base_model, "sha256": base_hash or model_hash(source),
                 "identity": ident.to_dict(),
                 "parameters": original.parameters or (infos[0].params or {}).get("before"),
                 "cached_tasks": original.cached},
        pruned=[{"path": str(f.resolve()), "name": f.resolve().name, "label": label, "layout": info.layout,
                    "parameters": ev.parameters or (info.params or {}).get("after"),
                    "base_model": info.base_model,
                    "method": (info.selection or {}).get("method"),
                    "achieved_ratio": (info.selection or {}).get("achieved_ratio"),
                    "cached_tasks": ev.cached, "base_check": check.to_dict()}
                for f, label, info, ev, check in zip(folders, labels, infos, evaluated, checks)],
        labels=["original", *labels],
        any_base=any_base,
        settings={
            "tasks": [s.requested for s in specs], "limit": settings.limit, "task_limits": settings.task_limits,
            "documents": {n: len(v) for n, v in samples.items()} if samples else None,
            "num_fewshot": settings.num_fewshot, "batch_size": settings.batch_size,
            "max_length": first.get("max_length"), "device": device, "dtype": settings.dtype,
            "include_path": [str(Path(p).expanduser().resolve()) for p in settings.include_path],
            "data_dir": str(tm.data_dir) if getattr(tm, "data_dir", None) else None,
            "bootstrap_iters": settings.bootstrap_iters, "seeds": harness.LM_EVAL_SEEDS, "model_class": "lm_eval HFLM",
            "paired_iters": settings.paired_iters, "paired_seed": settings.paired_seed,
        },
        versions=versions(),
        tasks={s.requested: {"tasks": list(s.tasks), "groups": list(s.groups), "source": s.source,
                                "data_sha256": {Path(f).name: file_sha256(f) for t in s.tasks.values()
                                                for f in harness.data_files(harness.task_config(t))}}
               for s in specs},
        aggregations=harness.aggregations(specs),
        original=original.results,
        pruned_results=[ev.results for ev in evaluated],
        timings=timings,
    )


def compare(base: str | None, pruned: str | os.PathLike[str], settings: EvalSettings, *,
            any_base: bool = False) -> PairComparison:
    """Evaluate the original and one pruned model with identical settings; nothing is written but the cache.

    Returns ``compare_many(...).one(0)``, a :class:`fbn_prune.evaluate.record.PairComparison`, which
    :func:`fbn_prune.evaluate.report.build` turns into the report. Raises UserError as :func:`compare_many`.
    """
    return compare_many(base, [pruned], settings, any_base=any_base).one(0)


def run(base: str | None, pruned, settings: EvalSettings, *, gate: Gate | None = None,
        out: str | os.PathLike[str] | None = None, update_card: bool = True,
        any_base: bool = False) -> EvalRecord | ComparisonRecord:
    """Evaluate, then write the report and, where allowed, update the checkpoints.

    ``pruned`` is one checkpoint folder or a list of them.

    One checkpoint: ``eval.json``, ``eval.md`` and ``eval-docs.jsonl`` (per-document results of both
    models) go to ``out`` (default: the checkpoint) and, unless ``update_card`` is False or
    ``any_base`` is set, the table and Hub ``model-index`` go into the checkpoint's README.md and an
    ``evaluation`` summary into its fbn_prune.json. Returns the eval.json record (:class:`EvalRecord`).

    Several checkpoints: the comparison of all of them (each against the original and each pair
    between them) goes to ``out`` (required); each checkpoint also gets its own report and card,
    unless ``update_card`` is False or ``any_base`` is set. Returns the comparison record
    (:class:`ComparisonRecord`), whose ``reports`` hold each checkpoint's record.

    With ``any_base`` nothing is ever written into a checkpoint, so ``out`` is required.
    ``gate`` is a :class:`fbn_prune.config.gate.Gate` (or None); ``record.passed`` says whether it held
    (for several checkpoints: for all of them). Never raises for a
    failed gate (the command line turns that into exit code 3); raises UserError for bad input, and
    for a gate that no evaluated metric falls under.
    """
    many = isinstance(pruned, (list, tuple))
    folders = [Path(p).expanduser() for p in (pruned if many else [pruned])]
    if any_base and out is None:
        raise UserError("--any-base never writes into the checkpoint; give --out REPORT_DIR for the report.")
    if any_base and any(Path(out).expanduser().resolve().is_relative_to(f.resolve()) for f in folders):
        raise UserError(f"--any-base never writes into the checkpoint; give an --out outside it (not {out}).")
    if many and len(folders) > 1 and out is None:
        raise UserError("several --pruned checkpoints need --out REPORT_DIR for the comparison report.")
    comparison = compare_many(base, folders, settings, any_base=any_base)
    records = [report.build(comparison.one(i), gate) for i in range(len(folders))]
    into_checkpoints = update_card and not any_base
    original = comparison.original
    pairs = [report.doc_lines(["original", "pruned"], [original, r]) for r in comparison.pruned_results]
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
                              report.doc_lines(comparison.labels, [original, *comparison.pruned_results]))
            if into_checkpoints:
                for f, r, docs in zip(folders, records, pairs):
                    report.write(r, f, docs)
                    report.update_checkpoint(f, r, f)
    except PermissionError as e:
        raise UserError(f"cannot write the evaluation report: {e}") from e
    for r in records:
        if r.gate and r.gate["checked"] == 0:
            raise UserError(r.gate["summary"])
    return record
