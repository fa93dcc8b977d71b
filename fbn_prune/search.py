"""The smallest checkpoint that holds the gate: bisection over the pruning ratio through select + eval.

    model ─> networks artifact (once) ─> per probed ratio: select ─> checkpoint ─> eval vs original
                                          (no new ICA)                         (same documents, the
                                                                                original from the cache)
    ─> out/: the checkpoint of the largest ratio that held the gate, its eval report, the search in
       its fbn_prune.json, and search.json + search.png (ratio vs each metric, with paired intervals)

The ratios tried lie on a grid (``step``, ``2 step``, ... up to ``max_ratio``); bisection assumes the
gate, once failed at a ratio, fails at every larger one. Every finished step is recorded in
``<out>.search/history.json`` (beside ``out``) together with a fingerprint of everything that
shapes a step (recipe, evaluation settings, gate, grid): a search interrupted and started again
with the same inputs continues from its finished steps; other inputs start afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fbn_prune import pipeline
from fbn_prune._io.atomic import atomic_write
from fbn_prune._io.targets import Place, check_disjoint
from fbn_prune.config.gate import Gate
from fbn_prune.config.recipe import Recipe
from fbn_prune.decompose.networks import Networks
from fbn_prune.errors import GateFailed, UserError
from fbn_prune.evaluate import compare as evaluate
from fbn_prune.evaluate import report
from fbn_prune.evaluate.record import EvalRecord
from fbn_prune.evaluate.settings import EvalSettings
from fbn_prune.export.checkpoint import check_target, move_into_place
from fbn_prune.export.provenance import PROVENANCE_FILE, read_provenance
from fbn_prune.models.sources import load_model, resolve

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
CURVE_JSON = "search.json"
CURVE_PNG = "search.png"
ROW_KEYS = ("task", "metric", "filter", "points", "higher_is_better", "original", "pruned", "delta", "delta_low",
            "delta_high", "retention", "retention_low", "retention_high", "mcnemar_p", "gate")


@dataclass(frozen=True)
class Grid:
    """The ratios a search may return: ``step``, ``2 step``, ... up to ``max_ratio`` (FFN channels removed)."""

    step: float = 0.05
    max_ratio: float = 0.9

    def ratios(self) -> list[float]:
        """The grid, ascending. Raises UserError for a step or maximum outside (0, 1)."""
        if not 0 < self.step < 1:
            raise UserError(f"--step must lie in (0, 1), got {self.step}.")
        if not self.step <= self.max_ratio < 1:
            raise UserError(f"--max-ratio must lie in [--step, 1), got {self.max_ratio}.")
        n = int(round(self.max_ratio / self.step, 9) + 1e-9)
        return [round(self.step * k, 6) for k in range(1, n + 1)]


@dataclass
class Step:
    """One probed ratio: did its checkpoint hold the gate, and with what numbers (report rows)."""

    ratio: float
    passed: bool
    achieved_ratio: float | None
    parameters: int | None
    metrics: list[dict]
    gate: dict
    seconds: float


@dataclass
class SearchResult:
    """``best``: the largest grid ratio that held (None: none did); ``checkpoint``: where it was written."""

    best: float | None
    checkpoint: Path | None
    steps: list[Step] = field(default_factory=list)
    grid: list[float] = field(default_factory=list)


def _fingerprint(recipe: Recipe, settings: EvalSettings, gate: Gate, grid: list[float]) -> str:
    r = recipe.to_dict()
    r.pop("out", None)
    r.pop("heal", None)  # healing comes after the search: it shapes no probe
    r["selection"].pop("ratio", None)
    s = asdict(settings)
    s.pop("cache", None)
    text = json.dumps({"recipe": r, "settings": s, "gate": asdict(gate), "grid": grid}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _load_history(path: Path, fingerprint: str) -> dict[float, Step]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("fingerprint") != fingerprint:
        log.info("the search history in %s was made with other inputs; starting afresh", path)
        return {}
    try:
        return {float(s["ratio"]): Step(**s) for s in data.get("steps", [])}
    except (TypeError, KeyError):
        return {}


def _save_history(path: Path, fingerprint: str, steps: dict[float, Step]) -> None:
    data = {"fingerprint": fingerprint, "steps": [asdict(steps[r]) for r in sorted(steps)]}
    atomic_write(path, json.dumps(data, indent=1))


def work_folder(out: str | os.PathLike) -> Path:
    """Where a search for ``out`` keeps its networks, steps and history: ``.<name>.search`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.search"


def _step_folder(work: Path, ratio: float) -> Path:
    return work / "steps" / f"ratio-{ratio:.4f}"


def _probe(recipe: Recipe, artifact: Networks, bundle, settings: EvalSettings, gate: Gate,
           ratio: float, work: Path) -> tuple[Step, EvalRecord]:
    """Prune at ``ratio`` (select, verified export into the work folder), evaluate against the original."""
    t0 = time.perf_counter()
    r = recipe.override({"selection.ratio": ratio, "out": str(_step_folder(work, ratio))})
    folder = pipeline.select(r, artifact, overwrite=True, model_bundle=bundle)
    record = report.build(evaluate.compare(recipe.model, folder, settings), gate)
    if record.gate["checked"] == 0:
        raise UserError(record.gate["summary"])
    info = read_provenance(folder)
    step = Step(ratio=ratio, passed=record.passed,
                achieved_ratio=(info.selection or {}).get("achieved_ratio"),
                parameters=(info.params or {}).get("after"),
                metrics=[{k: row.get(k) for k in ROW_KEYS} for row in record.metrics],
                gate=record.gate, seconds=round(time.perf_counter() - t0, 2))
    return step, record


def search(recipe: Recipe, settings: EvalSettings, gate: Gate, grid: Grid, *, out: str | os.PathLike,
           overwrite: bool = False, progress: bool = True, echo=None, history: str | os.PathLike | None = None
           ) -> SearchResult:
    """Find the largest grid ratio whose checkpoint holds ``gate`` and write that checkpoint to ``out``.

    One networks artifact (``recipe``'s calibration and method), then bisection over ``grid`` through
    :func:`fbn_prune.pipeline.select` and :func:`fbn_prune.evaluate.compare.compare` (the original's results
    come from the evaluation cache after the first step). ``echo(text)`` reports each step.

    Returns the :class:`SearchResult`; when no ratio holds, ``best`` is None and nothing is written to
    ``out`` (the history stays for a later run). ``history``: the folder for the search's networks,
    steps and history [``.<out name>.search`` beside ``out``]; a caller that writes ``out`` somewhere
    temporary (``search`` then heal) names the final one's, so an interrupted search still resumes,
    and removes it itself (a search removes only its own default folder).
    Raises UserError for bad input (before any work where possible), including a gate that no
    evaluated metric falls under.
    """
    if gate is None:
        raise UserError("a search needs a gate: --max-drop or --min-retention.")
    if recipe.selection.threshold is not None:
        raise UserError("a search varies --ratio; remove --threshold.")
    ratios = grid.ratios()
    settings.check()
    check_disjoint([Place(out, "--out")], pipeline.input_places(recipe, recipe.model))
    target = check_target(out, overwrite)
    work = Path(history) if history is not None else work_folder(target)
    work.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(recipe, settings, gate, ratios)
    steps = _load_history(work / HISTORY_FILE, fingerprint)
    say = echo or (lambda text: None)

    source = resolve(recipe.model)
    model, tok = load_model(source, recipe.dtype, pipeline.resolve_device(recipe.device), recipe.device_map,
                            recipe.max_memory)
    bundle = (source, model, tok)
    artifact = pipeline.networks(recipe, work / "networks", model_bundle=bundle, progress=progress)

    lo, hi = -1, len(ratios)  # ratio 0 (the original) holds; beyond the grid counts as failing
    best_record = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ratio = ratios[mid]
        step = steps.get(ratio)
        if step is None:
            step, record = _probe(recipe, artifact, bundle, settings, gate, ratio, work)
            steps[ratio] = step
            _save_history(work / HISTORY_FILE, fingerprint, steps)
            if step.passed:
                best_record = record
            say(f"ratio {ratio:.2f}: {'holds' if step.passed else 'fails'} ({step.gate['summary'].split(': ', 1)[-1]})")
        else:
            say(f"ratio {ratio:.2f}: {'holds' if step.passed else 'fails'} (from the search history)")
        if step.passed:
            lo = mid
        else:
            hi = mid
        for r, s in steps.items():  # keep only the checkpoint that may become the answer
            if not (s.passed and r == (ratios[lo] if lo >= 0 else None)):
                shutil.rmtree(_step_folder(work, r), ignore_errors=True)
    ordered = [steps[r] for r in sorted(steps)]
    if lo < 0:
        return SearchResult(None, None, ordered, ratios)

    best = ratios[lo]
    folder = _step_folder(work, best)
    if not (folder / PROVENANCE_FILE).is_file() or best_record is None:  # resumed: rebuild (deterministic) and re-read
        if not (folder / PROVENANCE_FILE).is_file():
            _probe(recipe, artifact, bundle, settings, gate, best, work)
        best_record = report.build(evaluate.compare(recipe.model, folder, settings), gate)
    del model, tok, bundle
    curve = _curve(ratios, ordered, best, recipe, gate)
    info = read_provenance(folder)
    info.search = {k: curve[k] for k in ("grid", "best", "gate", "steps")}
    atomic_write(folder / PROVENANCE_FILE, info.to_json())
    view = evaluate.compare(recipe.model, folder, settings)  # cached: no model runs
    report.write(best_record, folder, report.doc_lines(["original", "pruned"], [view.original, view.pruned_results]))
    report.update_checkpoint(folder, best_record, folder)
    _write_curve(curve, folder)
    move_into_place(folder, target)
    if history is None:  # a caller that named the folder removes it when its own job is done
        shutil.rmtree(work, ignore_errors=True)
    return SearchResult(best, target, ordered, ratios)


def _curve(ratios: list[float], steps: list[Step], best: float | None, recipe: Recipe, gate: Gate) -> dict:
    return {
        "model": recipe.model, "method": recipe.selection.method, "grid": ratios, "best": best,
        "gate": {"rule": gate.rule, "threshold": gate.threshold, "on": gate.on,
                 "metrics": list(gate.metrics) if gate.metrics else None},
        "steps": [asdict(s) for s in steps],
    }


def _write_curve(curve: dict, folder: Path) -> None:
    atomic_write(folder / CURVE_JSON, json.dumps(curve, indent=1))
    _plot(curve, folder / CURVE_PNG)


def report_healed(folder: str | os.PathLike, recipe: Recipe, settings: EvalSettings, gate: Gate) -> EvalRecord:
    """After ``search`` then heal: evaluate the healed checkpoint in ``folder`` against the original on the
    search's documents (the original from the cache), write its eval report into the folder, and the
    curve (search.json / search.png) with the healed model's rows under ``healed``. The search itself
    (``search`` in fbn_prune.json) gated the checkpoint before healing; the returned record says whether
    the healed one holds the gate too."""
    folder = Path(folder)
    comparison = evaluate.compare(recipe.model, folder, settings)
    record = report.build(comparison, gate)
    report.write(record, folder, report.doc_lines(["original", "pruned"], [comparison.original, comparison.pruned_results]))
    report.update_checkpoint(folder, record, folder)
    info = read_provenance(folder)
    curve = {"model": recipe.model, "method": recipe.selection.method, **(info.search or {}),
             "healed": {"steps": (info.healing or {}).get("steps"), "passed": record.passed,
                        "metrics": [{k: row.get(k) for k in ROW_KEYS} for row in record.metrics]}}
    _write_curve(curve, folder)
    return record


def _plot(curve: dict, path: Path) -> None:
    """Ratio vs each metric of the pruned model (points with their 95% paired interval), the original dashed,
    the healed checkpoint (``search`` then heal) as a star at the chosen ratio."""
    import matplotlib  # heavy; only the search's picture needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str], list] = {}
    for s in curve["steps"]:
        for row in s["metrics"]:
            if row["pruned"] is None or row["original"] is None:
                continue
            series.setdefault((row["task"], row["metric"]), []).append((s["ratio"], row, s["passed"]))
    n = max(1, len(series))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, ((task, metric), points) in zip(axes[0], sorted(series.items())):
        points.sort(key=lambda p: p[0])
        scale = 100 if points[0][1]["points"] else 1
        xs = [p[0] for p in points]
        ys = [scale * p[1]["pruned"] for p in points]
        low = [scale * (p[1]["original"] + p[1]["delta_low"]) if p[1]["delta_low"] is not None else None for p in points]
        high = [scale * (p[1]["original"] + p[1]["delta_high"]) if p[1]["delta_high"] is not None else None for p in points]
        err = [[y - lo if lo is not None else 0 for y, lo in zip(ys, low)],
               [hi - y if hi is not None else 0 for y, hi in zip(ys, high)]]
        ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, color="tab:blue", label="pruned (95% paired CI)")
        for x, y, p in zip(xs, ys, points):
            ax.plot([x], [y], "o", color="tab:green" if p[2] else "tab:red")
        healed = next((row for row in (curve.get("healed") or {}).get("metrics", [])
                       if (row["task"], row["metric"]) == (task, metric) and row["pruned"] is not None), None)
        if healed is not None and curve["best"] is not None:
            ax.plot([curve["best"]], [scale * healed["pruned"]], "*", ms=11, color="tab:purple",
                    label=f"healed ({curve['healed']['steps']} steps)")
        ax.axhline(scale * points[0][1]["original"], ls="--", color="gray", label="original")
        if curve["best"] is not None:
            ax.axvline(curve["best"], ls=":", color="tab:green")
        ax.set_xlabel("FFN channels removed")
        ax.set_title(f"{task} {metric}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe_failure(result: SearchResult) -> str:
    first = result.steps[0] if result.steps else None
    what = f" (smallest tried {first.ratio:.2f}: {first.gate['summary'].split(': ', 1)[-1]})" if first else ""
    return f"no ratio on the grid holds the gate{what}; try a smaller --step or a looser gate."


def raise_if_failed(result: SearchResult) -> None:
    """GateFailed (exit 3) when no ratio held."""
    if result.best is None:
        raise GateFailed(describe_failure(result))


__all__ = ["CURVE_JSON", "CURVE_PNG", "Grid", "SearchResult", "Step", "describe_failure", "raise_if_failed", "report_healed",
           "search", "work_folder"]
