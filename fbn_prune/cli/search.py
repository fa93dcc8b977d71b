"""``fbn-prune search``: the largest pruning ratio whose checkpoint holds an evaluation gate.

Exit codes: 0 found (the checkpoint is in --out), 2 bad input, 3 no ratio on the grid holds the gate
(nothing written), or with --heal-steps the healed checkpoint fails it (it is in --out with its report).
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import click

from fbn_prune import pipeline
from fbn_prune import search as searching
from fbn_prune.cli.options import EVAL_RUN_OPTIONS, HEAL_OPTIONS, recipe_options
from fbn_prune.config.gate import Gate
from fbn_prune.config.recipe import Recipe
from fbn_prune.errors import GateFailed, UserError
from fbn_prune.evaluate.settings import EvalSettings
from fbn_prune.heal.run import heal_after, heal_summary
from fbn_prune.select.methods import method_names


@click.command("search")
@click.argument("model", required=False)
@click.option("--out", "-o", "out", type=str, required=True, help="Folder for the checkpoint of the best ratio.")
@click.option("--recipe", "recipe_file", type=str, metavar="FILE",
              help="YAML recipe (model, calibration, method, and its evaluation section: tasks, limit, gate); "
                   "these flags override it.")
@click.option("--tasks", type=str, metavar="LIST", help="lm-eval tasks to gate on (comma-separated; ppl:FILE too).")
@click.option("--ppl", multiple=True, metavar="FILE", help="Also gate on the perplexity of this text file (repeatable).")
@click.option("--limit", multiple=True, metavar="N", help="Documents per task: N, a fraction below 1 or TASK=N [all].")
@click.option("--max-drop", type=float, metavar="POINTS", help="Gate: accuracy-type metrics fall at most POINTS points.")
@click.option("--min-retention", type=float, metavar="FRACTION", help="Gate: every metric keeps at least FRACTION.")
@click.option("--gate-metrics", type=str, metavar="LIST", help="Gate only these metrics [all].")
@click.option("--gate-on", type=click.Choice(["point", "ci"]),
              help="Gate the measured values, or the bound of the 95% paired interval [the recipe's: point].")
@click.option("--method", type=click.Choice(method_names()), help="Channel scores [the recipe's: fbn].")
@click.option("--calib", type=str, metavar="PATH", help="Calibration text (.txt or .jsonl) [generated].")
@click.option("--calib-task", type=str, metavar="NAME", help="Calibrate on an lm-eval task's own documents.")
@click.option("--calib-samples", type=int, metavar="N", help="Calibration documents [128].")
@click.option("--step", type=float, default=0.05, show_default=True, help="Grid step of the ratio.")
@click.option("--max-ratio", type=float, default=0.9, show_default=True, help="Largest ratio tried.")
@click.option("--batch-size", type=int, metavar="B", help="lm-eval requests per pass [the recipe's: 8].")
@click.option("--include-path", multiple=True, metavar="DIR", help="A folder of extra lm-eval task YAMLs.")
@click.option("--data-dir", type=str, metavar="DIR", help="Folder with local task data.")
@click.option("--device", type=str, metavar="DEV", help="auto, cpu, cuda ... [the recipe's: auto].")
@recipe_options(EVAL_RUN_OPTIONS, HEAL_OPTIONS)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def search_command(model, out, recipe_file, tasks, ppl, limit, max_drop, min_retention, gate_metrics, gate_on, method,
                   calib, calib_task, calib_samples, step, max_ratio, batch_size, include_path, data_dir, device,
                   overrides, overwrite, no_progress):
    """Find the largest ratio of FFN channels MODEL can lose while its checkpoint holds the gate.

    One networks artifact, then bisection over the ratio (a grid of --step) through select + eval on
    the same documents, the original evaluated once. The best checkpoint goes to --out with its eval
    report, the search in its fbn_prune.json, and search.json / search.png (ratio vs each metric).
    An interrupted search continues from its finished steps when started again. With --heal-steps
    (or the recipe's heal section) the chosen checkpoint is then healed; --out holds the healed
    model, evaluated again on the same documents (exit 3 if healing broke the gate).

    \b
    Example:
      fbn-prune search smollm2 --tasks arc_easy --limit 200 --max-drop 2 --gate-on ci --out smollm2-searched

    \b
    Exit codes: 0 found, 2 bad input, 3 no ratio on the grid holds the gate
    (nothing written) or the healed checkpoint fails it (written, with its report).
    """
    if calib and calib_task:
        raise UserError("give --calib or --calib-task, not both.")
    recipe = Recipe.load(recipe_file) if recipe_file else Recipe()
    if calib:
        recipe.calibration.task = None
    if calib_task:
        recipe.calibration.source = None
    recipe = recipe.override({"model": model, "selection.method": method, "calibration.source": calib,
                              "calibration.task": calib_task, "calibration.samples": calib_samples,
                              "data_dir": data_dir, "device": device, **overrides})
    if not recipe.model:
        raise UserError("name the model to search (MODEL or `model:` in the recipe).")
    e = recipe.evaluation  # the recipe's evaluation section supplies what the flags leave out
    if max_drop is None and min_retention is None:
        max_drop, min_retention = e.max_drop, e.min_retention
    gate = Gate.make(max_drop, min_retention, gate_metrics, gate_on or e.gate_on)
    if gate is None:
        raise UserError("a search needs a gate: --max-drop or --min-retention.")
    names = [t.strip() for t in (tasks or "").split(",") if t.strip()] + [f"ppl:{p}" for p in ppl]
    settings = EvalSettings.from_recipe(recipe, tasks=names, limit=list(limit), batch_size=batch_size,
                                        include_path=list(include_path))
    run = functools.partial(searching.search, recipe, settings, gate, searching.Grid(step, max_ratio),
                            overwrite=overwrite, progress=not no_progress, echo=lambda text: click.echo(text, err=True))
    if not recipe.heal.steps:
        result = run(out=out)
        searching.raise_if_failed(result)
        _found(result.best, result.checkpoint)
        return

    found: list = []

    def searched(folder: Path) -> tuple[Path, Recipe]:
        result = run(out=folder, history=searching.work_folder(out))
        searching.raise_if_failed(result)  # nothing to heal: out stays as it was
        found.append(result.best)
        return result.checkpoint, recipe.override({"selection.ratio": result.best})

    def evaluated(folder: Path) -> None:  # before the move: the expensive part, then cached
        searching.report_healed(folder, recipe, settings, gate)

    healed = heal_after(recipe.override({"out": out}), searched, what="the search's chosen checkpoint",
                        inputs=pipeline.input_places(recipe, recipe.model), finish=evaluated,
                        overwrite=overwrite, progress=not no_progress)
    record = searching.report_healed(healed, recipe, settings, gate)  # in place: paths in the report are out's
    shutil.rmtree(searching.work_folder(out), ignore_errors=True)  # kept until now: a killed heal resumes the search
    click.echo(heal_summary(healed))
    _found(found[0], healed)
    if not record.passed:
        raise GateFailed(f"the healed checkpoint in {healed} fails the gate the checkpoint before healing held "
                         f"({record.gate['summary'].split(': ', 1)[-1]}); see its eval.md.")


def _found(best: float, folder) -> None:
    click.echo(f"largest ratio that holds the gate: {best:.2f} -> {folder}")
    click.echo(f"curve: {Path(folder) / searching.CURVE_JSON}, {Path(folder) / searching.CURVE_PNG}")
