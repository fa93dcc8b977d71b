"""Quality at equal size: every selection method x ratio x calibration on SmolLM2-135M-Instruct,
through the tool's real path (selection, compensation, surgery, export, verification), each
checkpoint evaluated with lm-evaluation-harness against the original (fbn_prune.evaluate.compare).

Calibrations (the default recipe otherwise: chat format, 4 runs x 64 components, lstsq):
- generic: WikiText-2 valid  -> WikiText-2 test word perplexity, PIQA acc, ARC-Easy acc_norm, LAMBADA acc
- task:    ARC-Easy train    -> ARC-Easy test acc_norm (the target task) and WikiText-2 perplexity

Every method removes the same channels per layer count (uniform layout), so rows compare at equal
size. Each cell (calibration, method, ratio) is saved as JSON under --work and reused, so an
interrupted run resumes and a table can be redrawn (--table-only). Writes quality.md,
quality.json and quality.png to --out.

    python benchmarks/quality.py                      # the full grid (about 2 h on 2 cores)
    python benchmarks/quality.py --ratios 0.2 --methods fbn,flap --calibrations task
    python benchmarks/quality.py --table-only
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads on a shared CPU

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fbn_prune import pipeline  # noqa: E402
from fbn_prune.evaluate import compare as evaluate  # noqa: E402
from fbn_prune.evaluate.settings import EvalSettings  # noqa: E402
from fbn_prune.config.recipe import Recipe  # noqa: E402

METHODS = ["fbn", "flap", "wanda-sp", "magnitude", "random"]
CALIBRATIONS = {
    "generic": {"source": "data:wikitext2/valid.txt", "task": None},
    "task": {"source": None, "task": "arc_easy"},
}
TASKS = {"generic": ["wikitext", "piqa", "arc_easy", "lambada_openai"], "task": ["arc_easy", "wikitext"]}
# (lm-eval task, metric, label, higher is better)
METRICS = [
    ("wikitext", "word_perplexity", "WikiText-2 word ppl", False),
    ("piqa", "acc", "PIQA acc", True),
    ("arc_easy", "acc_norm", "ARC-Easy acc_norm", True),
    ("lambada_openai", "acc", "LAMBADA acc", True),
]
DEFAULT_LIMITS = "generic:piqa=150,arc_easy=150,lambada_openai=150,wikitext=2;task:arc_easy=400,wikitext=1"
TARGET_RATIOS = (0.2, 0.3)


def parse_limits(text: str) -> dict[str, dict[str, int]]:
    """"generic:piqa=200,wikitext=2;task:arc_easy=500" -> {"generic": {"piqa": 200, ...}, "task": {...}}."""
    out = {}
    for block in text.split(";"):
        calib, _, spec = block.partition(":")
        out[calib] = {k: int(v) for k, v in (part.split("=") for part in spec.split(",") if part)}
    return out


def cell_path(work: Path, calib: str, method: str, ratio: float) -> Path:
    return work / "cells" / f"{calib}_{method}_{ratio:.2f}.json"


def reusable(path: Path, documents: dict[str, int], max_length: int) -> bool:
    """A saved cell counts only when it was evaluated on the same documents and context length
    (cells made before max_length was recorded used the default, 2048)."""
    if not path.is_file():
        return False
    cell = json.loads(path.read_text())
    return cell.get("documents") == documents and cell.get("max_length", 2048) == max_length


def metrics_of(results: dict, tasks: list[str]) -> dict:
    """{task: {metric: value, metric_stderr: value}} from lm-eval's results dict."""
    out = {}
    for task, metric, _, _ in METRICS:
        if task not in tasks or task not in results:
            continue
        r = results[task]
        out[task] = {metric: r.get(f"{metric},none")}
        if f"{metric}_stderr,none" in r:
            out[task][f"{metric}_stderr"] = r[f"{metric}_stderr,none"]
    return out


def run_cell(recipe: Recipe, artifact, bundle, calib: str, method: str, ratio: float, work: Path,
             settings: EvalSettings) -> dict:
    """Prune with ``method`` at ``ratio`` through pipeline.select (export + verification), evaluate, clean up."""
    r = recipe.override({})  # a copy
    r.selection.method, r.selection.ratio = method, ratio
    r.out = str(work / "checkpoint")
    t0 = time.perf_counter()
    folder = pipeline.select(r, artifact, overwrite=True, model_bundle=bundle)
    t_prune = time.perf_counter() - t0
    info = json.loads((folder / "fbn_prune.json").read_text())
    t1 = time.perf_counter()
    comparison = evaluate.compare("smollm2", folder, settings)
    t_eval = time.perf_counter() - t1
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "calibration": calib, "method": method, "ratio": ratio,
        "achieved_ratio": info["selection"]["achieved_ratio"], "params": info["params"],
        "verified": info.get("verified"), "widths": info["widths"],
        "pruned": metrics_of(comparison.pruned_results["results"], settings.tasks),
        "original": metrics_of(comparison.original["results"], settings.tasks),
        "documents": comparison.settings["documents"],
        "max_length": settings.max_length,
        "seconds": {"prune": round(t_prune, 1), "eval": round(t_eval, 1)},
    }


def calibrated(base: Recipe, calib: str, data: str) -> Recipe:
    r = base.override({"data_dir": data})
    r.calibration.source = CALIBRATIONS[calib]["source"]
    r.calibration.task = CALIBRATIONS[calib]["task"]
    return r


def fmt(v: float | None, stderr: float | None, ppl: bool) -> str:
    if v is None:
        return ""
    if ppl:
        return f"{v:.2f}"
    return f"{100 * v:.1f}" + (f" ± {100 * stderr:.1f}" if stderr else "")


def table(cells: list[dict], calib: str, ratios: list[float], methods: list[str]) -> str:
    """One Markdown table per calibration: rows method x ratio, columns the metrics; best per ratio in bold."""
    tasks = TASKS[calib]
    cols = [m for m in METRICS if m[0] in tasks]
    by = {(c["method"], c["ratio"]): c for c in cells if c["calibration"] == calib}
    if not by:
        return ""
    any_cell = next(iter(by.values()))
    head = "| removed | method | " + " | ".join(label for _, _, label, _ in cols) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    base = "| 0% | original | " + " | ".join(
        fmt(any_cell["original"].get(t, {}).get(m), any_cell["original"].get(t, {}).get(m + "_stderr"), not hib)
        for t, m, _, hib in cols) + " |"
    lines.append(base)
    for ratio in ratios:
        row_cells = [by.get((meth, ratio)) for meth in methods]
        best = {}
        for t, m, _, hib in cols:
            vals = [c["pruned"].get(t, {}).get(m) for c in row_cells if c]
            vals = [v for v in vals if v is not None]
            if vals:
                best[t] = max(vals) if hib else min(vals)
        for meth, c in zip(methods, row_cells):
            if not c:
                continue
            parts = []
            for t, m, _, hib in cols:
                v = c["pruned"].get(t, {}).get(m)
                s = fmt(v, c["pruned"].get(t, {}).get(m + "_stderr"), not hib)
                parts.append(f"**{s}**" if v is not None and v == best.get(t) else s)
            lines.append(f"| {100 * c['achieved_ratio']:.1f}% | {meth} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def _value(cells, calib, method, ratio, task, metric):
    for c in cells:
        if (c["calibration"], c["method"], c["ratio"]) == (calib, method, ratio):
            return c["pruned"].get(task, {}).get(metric)
    return None


def targets(cells: list[dict], methods: list[str]) -> list[str]:
    """fbn's point estimate against the best baseline's at 20% and 30% (ARC-Easy with ARC-Easy
    calibration, WikiText-2 perplexity with generic calibration). A lead inside the standard
    errors is not a win, and the page says so."""
    lines = ["## fbn against the best baseline (point estimates)", "",
             "A lead smaller than the standard errors above is not significant.", "",
             "| ratio | metric | fbn | best baseline | fbn ahead |", "|---|---|---|---|---|"]
    baselines = [m for m in methods if m != "fbn"]
    for ratio in TARGET_RATIOS:
        for calib, task, metric, hib, what in (("task", "arc_easy", "acc_norm", True, "ARC-Easy acc_norm, ARC calibration"),
                                                ("generic", "wikitext", "word_perplexity", False, "WikiText-2 ppl, generic")):
            ours = _value(cells, calib, "fbn", ratio, task, metric)
            others = [(m, _value(cells, calib, m, ratio, task, metric)) for m in baselines]
            others = [(m, v) for m, v in others if v is not None]
            if ours is None or not others:
                continue
            best = max(others, key=lambda x: x[1]) if hib else min(others, key=lambda x: x[1])
            met = ours > best[1] if hib else ours <= best[1]
            f = (lambda v: f"{100 * v:.1f}") if hib else (lambda v: f"{v:.2f}")
            lines.append(f"| {ratio:.0%} | {what} | {f(ours)} | {best[0]} {f(best[1])} | {'yes' if met else 'no'} |")
    return lines + [""] if len(lines) > 6 else []


def harm(cells: list[dict], ratios: list[float]) -> list[str]:
    """Cross-task effect of the calibration: fbn pruned for ARC-Easy vs for generic text, on both tasks."""
    lines = ["## Cross-task effect of the calibration (fbn)", "",
             "| ratio | calibration | ARC-Easy acc_norm | WikiText-2 word ppl |", "|---|---|---|---|"]
    for ratio in ratios:
        for calib in CALIBRATIONS:
            arc = _value(cells, calib, "fbn", ratio, "arc_easy", "acc_norm")
            ppl = _value(cells, calib, "fbn", ratio, "wikitext", "word_perplexity")
            if arc is not None and ppl is not None:
                lines.append(f"| {ratio:.0%} | {calib} | {100 * arc:.1f} | {ppl:.2f} |")
    return lines + [""] if len(lines) > 4 else []


def plot(cells: list[dict], ratios: list[float], methods: list[str], path: Path) -> None:
    """metric vs ratio, one line per method; one panel per (calibration, metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(calib, m) for calib in CALIBRATIONS for m in METRICS if m[0] in TASKS[calib]]
    panels = [p for p in panels if any(c["calibration"] == p[0] for c in cells)]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (calib, (task, metric, label, hib)) in zip(axes.flat, panels):
        sub = [c for c in cells if c["calibration"] == calib]
        base = sub[0]["original"].get(task, {}).get(metric) if sub else None
        for meth in methods:
            pts = sorted((c["achieved_ratio"], c["pruned"].get(task, {}).get(metric)) for c in sub
                         if c["method"] == meth and c["pruned"].get(task, {}).get(metric) is not None)
            if pts:
                ax.plot([0] + [100 * p[0] for p in pts], [base] + [p[1] for p in pts], marker="o",
                        label=meth, linewidth=2.2 if meth == "fbn" else 1.2)
        ax.set_title(f"{label}\n({calib} calibration)", fontsize=9)
        ax.set_xlabel("FFN channels removed (%)", fontsize=8)
        if not hib:
            ax.set_yscale("log")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("SmolLM2-135M-Instruct: equal-size structured FFN pruning (uniform layout, lstsq compensation)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(work: Path, out: Path, ratios: list[float], methods: list[str]) -> None:
    cells = [json.loads(p.read_text()) for p in sorted((work / "cells").glob("*.json"))]
    cells = [c for c in cells if c["method"] in methods and c["ratio"] in ratios]
    out.mkdir(parents=True, exist_ok=True)
    md = ["# Quality at equal size: SmolLM2-135M-Instruct", "",
          "Made by `python benchmarks/quality.py` (see its docstring). Uniform layout, least-squares "
          "compensation for every method, the default recipe otherwise. Accuracies in %, ± the standard error; "
          "the first documents of each task, the same for every method (counts per section); WikiText-2 test "
          "word perplexity from lm-eval's rolling windows. The best point estimate per ratio is in bold; "
          "with 150-400 documents per task one standard error is 2.5-4 points, so most differences between "
          "fbn, flap and wanda-sp on this page are not significant.", ""]
    for calib, title in (("generic", "Generic calibration (WikiText-2 valid)"),
                         ("task", "Task-specific calibration (ARC-Easy train; target: ARC-Easy test)")):
        t = table(cells, calib, ratios, methods)
        if t:
            docs = next(c.get("documents") for c in cells if c["calibration"] == calib)
            md += [f"## {title}", "", f"Documents: {json.dumps(docs)}.", "", t, ""]
    md += targets(cells, methods) + harm(cells, ratios)
    secs = [c["seconds"]["prune"] + c["seconds"]["eval"] for c in cells]
    if secs:
        md += [f"Each cell (prune + export + verify + evaluate) took {min(secs):.0f}-{max(secs):.0f} s "
               f"(median {sorted(secs)[len(secs) // 2]:.0f} s) on the [benchmark machine](index.md#benchmarks-hardware).", ""]
    (out / "quality.md").write_text("\n".join(md))
    (out / "quality.json").write_text(json.dumps(cells, indent=1))
    if cells:
        plot(cells, ratios, methods, out / "quality.png")
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="smollm2-135m")
    ap.add_argument("--data", default=os.environ.get("FBN_PRUNE_DATA"),
                    help="the evaluation data folder [$FBN_PRUNE_DATA]")
    ap.add_argument("--work", default="/tmp/fbn-quality", help="networks artifacts and per-cell results (resumable)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--ratios", default="0.1,0.2,0.3,0.4")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--calibrations", default="generic,task")
    ap.add_argument("--limits", default=DEFAULT_LIMITS, help="documents per task per calibration")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=2048, help="lm-eval context (WikiText-2 rolling windows)")
    ap.add_argument("--table-only", action="store_true", help="redraw the table and plot from saved cells")
    args = ap.parse_args()
    if not args.data and not args.table_only:
        ap.error("give the evaluation data folder: --data or FBN_PRUNE_DATA")
    ratios = [float(r) for r in args.ratios.split(",")]
    methods = args.methods.split(",")
    limits = parse_limits(args.limits)
    work, out = Path(args.work), Path(args.out)
    if not args.table_only:
        base = Recipe.load(args.recipe)
        bundle = pipeline._load(base)
        setup = {}
        for calib in args.calibrations.split(","):
            recipe = calibrated(base, calib, args.data)
            artifact = pipeline.networks(recipe, work / f"networks-{calib}", model_bundle=bundle, progress=False)
            settings = EvalSettings(tasks=TASKS[calib], task_limits=limits[calib], max_length=args.max_length,
                                    batch_size=args.batch_size, device="cpu", data_dir=args.data)
            setup[calib] = (recipe, artifact, settings)
        # the target ratios first (both calibrations), so an interrupted run has the cells that matter most
        for ratio in sorted(ratios, key=lambda r: (r not in TARGET_RATIOS, -r)):
            for calib, (recipe, artifact, settings) in setup.items():
                for method in methods:
                    path = cell_path(work, calib, method, ratio)
                    if reusable(path, limits[calib], args.max_length):
                        continue
                    cell = run_cell(recipe, artifact, bundle, calib, method, ratio, work, settings)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(cell, indent=1))
                    print(json.dumps({k: cell[k] for k in ("calibration", "method", "ratio", "pruned", "seconds")}),
                          flush=True)
    render(work, out, ratios, methods)


if __name__ == "__main__":
    main()
