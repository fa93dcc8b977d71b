"""``fbn-prune prune``, ``networks`` and ``select``: the pruning run, whole or in its two halves."""

from __future__ import annotations

from pathlib import Path

import click

from fbn_prune import pipeline
from fbn_prune._runtime import world
from fbn_prune.cli.eval import check_after_prune, evaluate_after_prune
from fbn_prune.cli.gguf import check_before_prune, gguf_options, write_after_prune
from fbn_prune.cli.options import (
    CALIBRATION_OPTIONS,
    DECOMPOSITION_OPTIONS,
    EVALUATION_OPTIONS,
    EXPORT_OPTIONS,
    HEAL_OPTIONS,
    PLACEMENT_OPTIONS,
    RUN_OPTIONS,
    SELECTION_OPTIONS,
    make_recipe,
    recipe_options,
)
from fbn_prune.config.recipe import Recipe, locate
from fbn_prune.decompose.networks import Networks, select_recipe
from fbn_prune.errors import UserError
from fbn_prune.export.checkpoint import RECIPE_FILE
from fbn_prune.heal.run import prune_and_heal, select_and_heal
from fbn_prune.inspection.describe import describe_folder
from fbn_prune.plan import make as make_plan
from fbn_prune.select.methods import method_for


def plan_options(command):
    """``--dry-run`` and ``--ranks``: the plan of a run that captures (prune, networks), printed, not run."""
    command = click.option("--ranks", type=click.IntRange(min=1), default=None, metavar="N",
                           help="With --dry-run: plan for N torch.distributed processes on this machine (torchrun "
                                "--nproc-per-node N), per rank [under torchrun: its number of processes].")(command)
    return click.option("--dry-run", is_flag=True,
                        help="Print the plan (layers, tokens, jobs, disk, RAM, time) and exit; nothing is written.")(command)


@click.command("prune")
@click.argument("model", required=False)
@click.option("--out", "-o", "out", type=str, help="Output folder for the pruned checkpoint (required here or in the recipe).")
@click.option("--recipe", "recipe_file", type=str, metavar="NAME|FILE",
              help="A ready recipe (`fbn-prune recipes` lists them) or a YAML file; command-line flags override it.")
@recipe_options(CALIBRATION_OPTIONS, DECOMPOSITION_OPTIONS, SELECTION_OPTIONS, EXPORT_OPTIONS, EVALUATION_OPTIONS, HEAL_OPTIONS,
                RUN_OPTIONS)
@click.option("--save-networks", type=str, metavar="DIR",
              help="Keep the networks artifact here (for `fbn-prune select`) [a cache folder, resumed after a kill, "
                   "removed on success].")
@gguf_options
@click.option("--overwrite", is_flag=True, help="Replace an earlier fbn_prune checkpoint at --out.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@plan_options
def prune_command(model, out, recipe_file, overrides, save_networks, to_gguf, gguf_dtype, overwrite, no_progress, dry_run,
                  ranks):
    """Prune MODEL (a Hub id, a local folder, a .gguf file, or `smollm2` for the embedded
    SmolLM2-135M-Instruct) and write a verified checkpoint to --out.

    \b
    Example:
      fbn-prune prune smollm2 --out smollm2-pruned --ratio 0.2
      fbn-prune prune --recipe smollm2-135m --out smollm2-pruned
    """
    recipe = make_recipe(recipe_file, overrides, model, out)
    if not recipe.out:
        raise UserError("name the output folder with --out (or `out:` in the recipe).")
    if recipe.evaluation.tasks:
        check_after_prune(recipe)  # task names and data before the weights load, not after the prune
    if dry_run:
        return _plan(recipe, save_networks, ranks)
    _no_ranks(ranks)
    check_before_prune(to_gguf, gguf_dtype, overwrite)
    if recipe.heal.steps and world.launched():
        raise UserError("--heal-steps runs in one process: prune under torchrun, then `fbn-prune heal` the checkpoint "
                        "(in one process, or under accelerate launch).")
    _progress(not no_progress)
    run = prune_and_heal if recipe.heal.steps else pipeline.prune
    path = run(recipe, overwrite=overwrite, progress=not no_progress, networks_dir=save_networks)
    if path is None:  # a rank other than 0 of a torch.distributed run: rank 0 writes, reports and evaluates
        return
    _summary(path)
    write_after_prune(path, to_gguf, gguf_dtype, overwrite)
    if recipe.evaluation.tasks:
        evaluate_after_prune(recipe, path, click.get_current_context().find_root().obj.get("verbose", 0))


@click.command("networks")
@click.argument("model", required=False)
@click.option("--out", "-o", "out", type=str, required=True, help="Folder for the networks artifact (resumed if unfinished).")
@click.option("--recipe", "recipe_file", type=str, metavar="NAME|FILE",
              help="A ready recipe (`fbn-prune recipes` lists them) or a YAML file; command-line flags override it.")
@recipe_options(CALIBRATION_OPTIONS, DECOMPOSITION_OPTIONS, RUN_OPTIONS)
@click.option("--keep-capture", is_flag=True, help="Keep the raw float16 neuron signals (capture/) in the artifact.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@plan_options
def networks_command(model, out, recipe_file, overrides, keep_capture, no_progress, dry_run, ranks):
    """Capture and decompose only: find MODEL's functional networks and save them to --out.

    The artifact (ICA maps, activation statistics, held-out tokens, metadata) feeds
    `fbn-prune select`, which tries budgets and layouts without new ICA.
    """
    recipe = make_recipe(recipe_file, overrides, model, None)
    if dry_run:
        return _plan(recipe, out, ranks)
    _no_ranks(ranks)
    _progress(not no_progress)
    art = pipeline.networks(recipe, out, progress=not no_progress, keep_capture=keep_capture)
    if not world.current().main:  # under torch.distributed rank 0 reports
        return
    click.echo(f"networks: {art.folder} ({art.n_layers} layers x {art.meta.runs} runs x {art.meta.components} components, "
               f"{art.meta.calibration['tokens']:,} calibration tokens)")


@click.command("select")
@click.argument("networks_dir", metavar="NETWORKS")
@click.option("--out", "-o", "out", type=str, help="Output folder for the pruned checkpoint.")
@click.option("--model", "model", type=str, help="The model the networks were found in [as recorded in the artifact].")
@click.option("--recipe", "recipe_file", type=str, metavar="FILE",
              help="YAML recipe [the artifact's own recipe.yaml]; command-line flags override it.")
@recipe_options(SELECTION_OPTIONS, EXPORT_OPTIONS, HEAL_OPTIONS, PLACEMENT_OPTIONS)
@click.option("--overwrite", is_flag=True, help="Replace an earlier fbn_prune checkpoint at --out.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def select_command(networks_dir, out, model, recipe_file, overrides, overwrite, no_progress):
    """Turn a networks artifact and a budget into a verified checkpoint (no new ICA)."""
    artifact = Networks(networks_dir)
    own = Path(networks_dir) / RECIPE_FILE
    recipe = make_recipe(recipe_file or (str(own) if own.is_file() else None), overrides, model, out)
    recipe = select_recipe(artifact, recipe, str(locate(recipe_file)) if recipe_file else None)
    if not recipe.out:
        raise UserError("name the output folder with --out.")
    _progress(not no_progress)
    if method_for(recipe.selection.method).needs.maps and artifact.meta.runs == 0:
        raise UserError(f"{networks_dir} holds no ICA maps; choose a baseline --method or rerun `fbn-prune networks`.")
    if recipe.heal.steps:
        path = select_and_heal(recipe, artifact, overwrite=overwrite, progress=not no_progress)
    else:
        path = pipeline.select(recipe, artifact, overwrite=overwrite)
    _summary(path)


def _plan(recipe: Recipe, networks_dir: str | None, ranks: int | None) -> None:
    """--dry-run: print what the run would do and need (see fbn_prune/plan.py); under torchrun, rank 0 prints
    the plan for the launched number of processes."""
    plan = make_plan(recipe, networks_dir, ranks or world.launched_size())
    if world.echoes_shared_errors():
        click.echo(plan.text())


def _no_ranks(ranks: int | None) -> None:
    if ranks is not None:
        raise UserError("--ranks plans a distributed run with --dry-run; to run one, launch it: "
                        "torchrun --nproc-per-node N -m fbn_prune prune ... (see docs/scale-out.md).")


def _progress(enabled: bool) -> None:
    """transformers' own bars (loading and writing shards) follow --no-progress too."""
    import transformers  # heavy: loaded by the command that shows its bars

    (transformers.utils.logging.enable_progress_bar if enabled else transformers.utils.logging.disable_progress_bar)()


def _summary(path: Path) -> None:
    click.echo(describe_folder(str(path))[0])
