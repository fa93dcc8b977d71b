"""The ``fbn-prune`` command line: parses options, builds a Recipe, calls the library.

Exit codes: 0 ok, 2 bad input, 3 evaluation gate failed, 4 verification failed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path

import click

from fbn_prune import __version__
from fbn_prune.cli.gguf import check_before_prune, gguf_options, write_after_prune
from fbn_prune.errors import EXIT_BAD_INPUT, GateFailed, UserError, VerificationError, disk_error_message
from fbn_prune.config.recipe import LAYOUTS, Recipe, locate
from fbn_prune._runtime.dtypes import DTYPE_NAMES
from fbn_prune.select.methods import method_names

log = logging.getLogger("fbn_prune")

# command-line flag -> (recipe key, click option kwargs)
CALIBRATION_OPTIONS = {
    "calib": ("calibration.source", dict(type=str, metavar="SOURCE",
              help="Calibration text: builtin:wikitext2-valid (a WikiText-2 sample shipped with fbn_prune, "
                   "CC BY-SA 3.0), a .txt (one document per paragraph) or .jsonl file (.gz too), data:FILE (in "
                   "--data-dir), hf:DATASET[:CONFIG]:SPLIT[:FIELD] (a Hugging Face dataset), or generated (the "
                   "model writes its own) [builtin:wikitext2-valid].")),
    "calib_task": ("calibration.task", dict(type=str, metavar="NAME",
                   help="Calibrate on an lm-eval task's own documents, rendered with its prompt format "
                        "(task-specific networks), e.g. arc_easy.")),
    "calib_field": ("calibration.field", dict(type=str, metavar="FIELD",
                    help="Text field of a .jsonl file or hf: dataset [text].")),
    "calib_samples": ("calibration.samples", dict(type=int, metavar="N", help="Calibration documents used [128].")),
    "calib_chat": ("calibration.chat", dict(type=click.Choice(["auto", "always", "never"]),
                   help="Wrap each calibration document as an assistant reply in the model's chat template "
                        "(auto: when the tokenizer has one) [auto].")),
    "seq_len": ("calibration.seq_len", dict(type=int, metavar="N", help="Tokens per document, longer ones are truncated [256].")),
    "batch_size": ("calibration.batch_size", dict(type=int, metavar="N", help="Documents per forward pass [8].")),
    "max_ram": ("calibration.max_ram", dict(type=str, metavar="SIZE",
                help="Host RAM the capture may use in all, e.g. 16GB: lowers --batch-size to fit; exit 2 when the "
                     "model and one batch do not fit. Signals always stream to disk.")),
    "data_dir": ("data_dir", dict(type=str, metavar="DIR", help="Data folder for data:FILE names and the local evaluation tasks [$FBN_PRUNE_DATA].")),
}
DECOMPOSITION_OPTIONS = {
    "runs": ("decomposition.runs", dict(type=int, metavar="N", help="Disjoint calibration subsets, one ICA each per layer [4].")),
    "components": ("decomposition.components", dict(type=int, metavar="K", help="ICA components (networks) per layer and run [64].")),
    "ica_engine": ("decomposition.engine", dict(type=click.Choice(["auto", "sklearn", "torch"]),
                   help="ICA engine: scikit-learn FastICA on CPU or the torch port (GPU when present) [auto].")),
    "ica_device": ("decomposition.device", dict(type=str, metavar="DEV",
                   help="Where ICA runs: auto (CUDA when present), cpu, cuda (every GPU with --jobs), cuda:N [auto].")),
    "jobs": ("decomposition.jobs", dict(type=str, metavar="N",
             help="(layer, run) decompositions at once in worker processes: N, or auto (one per GPU; on the CPU "
                  "one per 8 cores). Same result for any N [1].")),
}
SELECTION_OPTIONS = {
    "method": ("selection.method", dict(type=click.Choice(method_names()),
               help="Channel scores: fbn (compensated elimination over functional connectivity with a network-"
                    "membership prior), fbn-act (activation energy x membership), fbn-paper (the authors' pure "
                    "network membership) or a baseline at equal size [fbn].")),
    "ratio": ("selection.ratio", dict(type=float, metavar="R",
              help="Fraction of FFN channels removed across pruned layers, in [0, 1) [0.2].")),
    "ratio_of": ("selection.ratio_of", dict(type=click.Choice(["ffn", "params"]),
                 help="What --ratio is a fraction of: FFN channels, or all model parameters [ffn].")),
    "threshold": ("selection.threshold", dict(type=float, metavar="T",
                  help="Instead of --ratio: keep neurons with |z| > T in any network (the paper's rule).")),
    "protect_first": ("selection.protect_first", dict(type=int, metavar="N", help="Never prune the first N layers [0].")),
    "protect_last": ("selection.protect_last", dict(type=int, metavar="M", help="Never prune the last M layers [0].")),
    "round_to": ("selection.round_to", dict(type=int, metavar="K", help="Kept widths are multiples of K [8].")),
    "min_width": ("selection.min_width", dict(type=int, metavar="N", help="No layer keeps fewer channels [8].")),
    "network_weight": ("selection.network_weight", dict(type=float, metavar="W",
                       help="fbn, fbn-act: weight of the network-membership prior (0: none) [recipe's].")),
    "compensate": ("selection.compensate", dict(type=click.Choice(["lstsq", "bias", "none"]),
                   help="lstsq: fold the removed channels' least-squares prediction from the kept ones into the "
                        "down projection (no new parameters); none: plain deletion [lstsq].")),
}
EXPORT_OPTIONS = {
    "layout": ("export.layout", dict(type=click.Choice(LAYOUTS),
               help="uniform: same width in every layer; padded: per-layer selection zero-padded; "
                    "exact: per-layer widths, needs trust_remote_code [uniform].")),
    "save_dtype": ("export.dtype", dict(type=click.Choice(DTYPE_NAMES),
                   help="dtype of the saved weights [the working --dtype].")),
}
EVALUATION_OPTIONS = {
    "eval_tasks": ("evaluation.tasks", dict(type=str, metavar="LIST",
                   help="After export, evaluate original vs pruned on these lm-eval tasks (comma-separated; "
                        "ppl:FILE for a text file's perplexity), as `fbn-prune eval` does; report in the checkpoint.")),
    "eval_limit": ("evaluation.limit", dict(type=str, metavar="N",
                   help="Documents per task for --eval-tasks: N, a fraction below 1, or TASK=N, comma-separated [all].")),
    "max_drop": ("evaluation.max_drop", dict(type=float, metavar="POINTS",
                 help="Gate for --eval-tasks: exit 3 when an accuracy-type metric falls more than POINTS points.")),
    "min_retention": ("evaluation.min_retention", dict(type=float, metavar="FRACTION",
                      help="Gate for --eval-tasks: exit 3 when a metric keeps less than FRACTION of the original.")),
}
RUN_OPTIONS = {
    "seed": ("seed", dict(type=int, metavar="N", help="Seed for sampling, ICA and random baselines [0].")),
    "device": ("device", dict(type=str, metavar="DEV", help="auto, cpu, cuda, cuda:1 ... [auto].")),
    "dtype": ("dtype", dict(type=click.Choice(DTYPE_NAMES), help="Working dtype [float32].")),
    "device_map": ("device_map", dict(type=str, metavar="MAP",
                   help="Place the model with accelerate instead of --device: auto (all GPUs, then CPU offload), "
                        "balanced, sequential, cpu.")),
    "max_memory": ("max_memory", dict(type=str, metavar="SPEC",
                   help="With --device-map: memory per device, 70GiB (each GPU) or 0=70GiB,1=70GiB,cpu=200GiB.")),
}
PLACEMENT_OPTIONS = {k: RUN_OPTIONS[k] for k in ("device", "device_map", "max_memory")}


def recipe_options(*groups: dict):
    """Decorate a command with the flags of ``groups``; the command receives ``overrides`` (recipe key -> value)."""

    def decorate(fn):
        table = {name: key for g in groups for name, (key, _) in g.items()}

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            overrides = {table[name]: kwargs.pop(name) for name in list(kwargs) if name in table}
            return fn(*args, overrides=overrides, **kwargs)

        for g in reversed(groups):
            for name, (_, opts) in reversed(list(g.items())):
                wrapper = click.option("--" + name.replace("_", "-"), name, default=None, **opts)(wrapper)
        return wrapper

    return decorate


def make_recipe(recipe_file: str | None, overrides: dict, model: str | None = None, out: str | None = None) -> Recipe:
    recipe = Recipe.load(recipe_file) if recipe_file else Recipe()
    if overrides.get("selection.threshold") is not None and overrides.get("selection.ratio") is not None:
        raise UserError("give --ratio or --threshold, not both.")
    if overrides.get("selection.threshold") is not None:
        overrides["selection.ratio"] = None
        recipe.selection.ratio = None
    if overrides.get("calibration.task"):
        recipe.calibration.source = None
    if overrides.get("calibration.source"):
        recipe.calibration.task = None
    overrides = {**overrides, "model": model, "out": out}
    return recipe.override(overrides)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("fbn_prune").setLevel(level)
    try:
        import transformers

        transformers.logging.set_verbosity_error() if verbose < 2 else transformers.logging.set_verbosity_info()
    except ImportError:  # pragma: no cover
        pass


class Interrupted(Exception):
    """Ctrl-C inside a command (click would print its own blank line and "Aborted!")."""


class Group(click.Group):
    """The error boundary of every command: each failure a user can cause (a UserError, a failed gate or
    verification, a full disk or file-size limit, a bad option) becomes ONE line on stderr,
    ``error: ...``, and its exit code; with -vv the traceback comes first. Internal bugs are not
    caught: they keep their traceback and exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0  # click returns the code of ctx.exit(code)
        except Interrupted:
            click.echo("interrupted.", err=True)
            code = 130
        except click.exceptions.Abort:
            click.echo("interrupted.", err=True)
            code = 130
        except BaseException as e:  # noqa: BLE001 - sorted below; what is not a user's failure is re-raised
            line, code = _user_failure(e)
            if line is None:
                raise
            if _verbosity(argv) >= 2:
                traceback.print_exception(e)
            click.echo(f"error: {line}", err=True)
        if not standalone_mode:
            return code
        sys.exit(code)


def _user_failure(e: BaseException) -> tuple[str | None, int]:
    """(one line, exit code) for a failure the user caused, (None, 1) for anything else."""
    if isinstance(e, (UserError, VerificationError, GateFailed)):
        return _one_line(str(e)), e.exit_code
    if isinstance(e, click.BadParameter):
        return _bad_parameter(e), e.exit_code
    if isinstance(e, click.ClickException):  # usage errors: no such option, missing argument, ...
        return _one_line(e.format_message()), e.exit_code
    if isinstance(e, OSError) and (line := disk_error_message(e)):
        return line, EXIT_BAD_INPUT
    return None, 1


def _bad_parameter(e: click.BadParameter) -> str:
    """``--layout: 'x' is not one of uniform, padded, exact``: the option, then click's reason."""
    param = e.param
    if isinstance(e.param_hint, str):
        name = e.param_hint
    elif param is not None and param.param_type_name == "option":
        name = "/".join(param.opts)
    else:
        name = (param.human_readable_name if param is not None else "argument").upper()
    message = e.message.rstrip(".")
    if param is not None and isinstance(param.type, click.Choice) and " is not one of " in message:
        value = message.split(" is not one of ")[0]
        message = f"{value} is not one of {', '.join(map(str, param.type.choices))}"
    return _one_line(f"{name.strip(chr(39))}: {message}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _verbosity(argv: list[str]) -> int:
    """How many -v the command line gives before the command name (the group's option)."""
    count = 0
    for arg in argv:
        if not arg.startswith("-"):
            break
        if arg == "--verbose":
            count += 1
        elif re.fullmatch(r"-v+", arg):
            count += len(arg) - 1
    return count


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fbn-prune")
@click.option("-v", "--verbose", count=True, help="Log what is happening (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """fbn_prune: keep the functional networks your task needs, cut the rest of the FFN neurons,
    and write a smaller, verified safetensors checkpoint.

    \b
    Exit codes: 0 ok, 2 bad input, 3 evaluation gate failed, 4 verification failed.
    """
    _setup_logging(verbose)
    ctx.obj = {"verbose": verbose}


@cli.command()
@click.argument("model", required=False)
@click.option("--out", "-o", "out", type=str, help="Output folder for the pruned checkpoint (required here or in the recipe).")
@click.option("--recipe", "recipe_file", type=str, metavar="NAME|FILE",
              help="A ready recipe (`fbn-prune recipes` lists them) or a YAML file; command-line flags override it.")
@recipe_options(CALIBRATION_OPTIONS, DECOMPOSITION_OPTIONS, SELECTION_OPTIONS, EXPORT_OPTIONS, EVALUATION_OPTIONS, RUN_OPTIONS)
@click.option("--save-networks", type=str, metavar="DIR",
              help="Keep the networks artifact here (for `fbn-prune select`) [a cache folder, resumed after a kill, "
                   "removed on success].")
@gguf_options
@click.option("--overwrite", is_flag=True, help="Replace an earlier fbn_prune checkpoint at --out.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (layers, tokens, jobs, disk, RAM, time) and exit; nothing is written.")
def prune(model, out, recipe_file, overrides, save_networks, to_gguf, gguf_dtype, overwrite, no_progress, dry_run):
    """Prune MODEL (a Hub id, a local folder, a .gguf file, or `smollm2` for the embedded
    SmolLM2-135M-Instruct) and write a verified checkpoint to --out.

    \b
    Example:
      fbn-prune prune smollm2 --out smollm2-pruned --ratio 0.2
      fbn-prune prune --recipe smollm2-135m --out smollm2-pruned
    """
    from fbn_prune.pipeline import prune as run

    recipe = make_recipe(recipe_file, overrides, model, out)
    if not recipe.out:
        raise UserError("name the output folder with --out (or `out:` in the recipe).")
    if recipe.evaluation.tasks:
        from fbn_prune.cli.eval import check_after_prune

        check_after_prune(recipe)  # task names and data before the weights load, not after the prune
    if dry_run:
        return _plan(recipe, save_networks)
    check_before_prune(to_gguf, gguf_dtype, overwrite)
    _progress(not no_progress)
    path = run(recipe, overwrite=overwrite, progress=not no_progress, networks_dir=save_networks)
    _summary(path)
    write_after_prune(path, to_gguf, gguf_dtype, overwrite)
    if recipe.evaluation.tasks:
        from fbn_prune.cli.eval import evaluate_after_prune

        evaluate_after_prune(recipe, path, click.get_current_context().find_root().obj.get("verbose", 0))


@cli.command()
@click.argument("model", required=False)
@click.option("--out", "-o", "out", type=str, required=True, help="Folder for the networks artifact (resumed if unfinished).")
@click.option("--recipe", "recipe_file", type=str, metavar="NAME|FILE",
              help="A ready recipe (`fbn-prune recipes` lists them) or a YAML file; command-line flags override it.")
@recipe_options(CALIBRATION_OPTIONS, DECOMPOSITION_OPTIONS, RUN_OPTIONS)
@click.option("--keep-capture", is_flag=True, help="Keep the raw float16 neuron signals (capture/) in the artifact.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (layers, tokens, jobs, disk, RAM, time) and exit; nothing is written.")
def networks(model, out, recipe_file, overrides, keep_capture, no_progress, dry_run):
    """Capture and decompose only: find MODEL's functional networks and save them to --out.

    The artifact (ICA maps, activation statistics, held-out tokens, metadata) feeds
    `fbn-prune select`, which tries budgets and layouts without new ICA.
    """
    from fbn_prune.pipeline import networks as run

    recipe = make_recipe(recipe_file, overrides, model, None)
    if dry_run:
        return _plan(recipe, out)
    _progress(not no_progress)
    art = run(recipe, out, progress=not no_progress, keep_capture=keep_capture)
    click.echo(f"networks: {art.folder} ({art.n_layers} layers x {art.meta.runs} runs x {art.meta.components} components, "
               f"{art.meta.calibration['tokens']:,} calibration tokens)")


@cli.command()
@click.argument("networks_dir", metavar="NETWORKS")
@click.option("--out", "-o", "out", type=str, help="Output folder for the pruned checkpoint.")
@click.option("--model", "model", type=str, help="The model the networks were found in [as recorded in the artifact].")
@click.option("--recipe", "recipe_file", type=str, metavar="FILE",
              help="YAML recipe [the artifact's own recipe.yaml]; command-line flags override it.")
@recipe_options(SELECTION_OPTIONS, EXPORT_OPTIONS, PLACEMENT_OPTIONS)
@click.option("--overwrite", is_flag=True, help="Replace an earlier fbn_prune checkpoint at --out.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def select(networks_dir, out, model, recipe_file, overrides, overwrite, no_progress):
    """Turn a networks artifact and a budget into a verified checkpoint (no new ICA)."""
    from fbn_prune.export.checkpoint import RECIPE_FILE
    from fbn_prune.decompose.networks import Networks, select_recipe
    from fbn_prune.pipeline import select as run

    artifact = Networks(networks_dir)
    own = Path(networks_dir) / RECIPE_FILE
    recipe = make_recipe(recipe_file or (str(own) if own.is_file() else None), overrides, model, out)
    recipe = select_recipe(artifact, recipe, str(locate(recipe_file)) if recipe_file else None)
    if not recipe.out:
        raise UserError("name the output folder with --out.")
    _progress(not no_progress)
    if recipe.selection.method in ("fbn", "fbn-paper") and artifact.meta.runs == 0:
        raise UserError(f"{networks_dir} holds no ICA maps; choose a baseline --method or rerun `fbn-prune networks`.")
    path = run(recipe, artifact, overwrite=overwrite)
    _summary(path)


@cli.command()
@click.argument("path", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON.")
@click.option("--plot", "plot_file", type=str, metavar="FILE",
              help="Also draw where the networks live / what was kept (layer x channel map, widths per layer) "
                   "to FILE (.png, .svg or .pdf).")
def inspect(path, as_json, plot_file):
    """Summarise a pruned checkpoint, a networks artifact, or any model folder."""
    from fbn_prune.inspection.describe import describe

    if plot_file and Path(plot_file).expanduser().is_dir():
        raise UserError(f"--plot {plot_file} is a folder; name the picture file (.png, .svg or .pdf).")
    text, record = describe(path)
    click.echo(json.dumps(record, indent=1) if as_json else text)
    if plot_file:
        from fbn_prune.inspection.plot import plot

        click.echo(f"plot written to {plot(path, plot_file)}", err=as_json)


def _plan(recipe: Recipe, networks_dir: str | None) -> None:
    """--dry-run: print what the run would do and need (see plan.py)."""
    from fbn_prune.plan import make

    click.echo(make(recipe, networks_dir).text())


def _progress(enabled: bool) -> None:
    """transformers' own bars (loading and writing shards) follow --no-progress too."""
    import transformers

    (transformers.utils.logging.enable_progress_bar if enabled else transformers.utils.logging.disable_progress_bar)()


def _summary(path: Path) -> None:
    from fbn_prune.inspection.describe import describe

    click.echo(describe(str(path))[0])


PASSIVE_WAIT = ("OMP_WAIT_POLICY", "PASSIVE")
"""Idle OpenMP threads sleep instead of spinning. Measured with benchmarks/ica.py (3,000 tokens x 1,536
neurons, 64 components) on a 2-core machine shared with other busy processes: the reduction step took
1.0-1.2 s with PASSIVE and 3.1-16 s without. Set by the command (unless the user set it) before torch
loads, since OpenMP reads it once; importing fbn_prune as a library changes no environment."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    os.environ.setdefault(*PASSIVE_WAIT)
    cli.main(args=argv, prog_name="fbn-prune")


from fbn_prune.cli.eval import eval_command  # noqa: E402

cli.add_command(eval_command, "eval")
from fbn_prune.cli.search import search_command  # noqa: E402
cli.add_command(search_command, "search")

from fbn_prune.cli.ship import push_command, recipes_command  # noqa: E402

cli.add_command(push_command, "push")
cli.add_command(recipes_command, "recipes")

from fbn_prune.cli.gguf import export_gguf_command  # noqa: E402

cli.add_command(export_gguf_command, "export-gguf")

from fbn_prune.cli.heal import heal_command  # noqa: E402

cli.add_command(heal_command, "heal")

from fbn_prune.cli.tasks import tasks_command  # noqa: E402

cli.add_command(tasks_command, "tasks")

if __name__ == "__main__":  # pragma: no cover
    main()
