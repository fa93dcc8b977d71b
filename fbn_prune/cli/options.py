"""The recipe's command-line flags, each overriding one Recipe key, and the Recipe they build.

The recipe's command-line flags: each flag names the Recipe key it overrides (``--ratio`` ->
``selection.ratio``); commands take them in groups and build their Recipe with :func:`make_recipe`."""

from __future__ import annotations

import dataclasses
import functools

import click

from fbn_prune._runtime.dtypes import DTYPE_NAMES
from fbn_prune.config.layouts import LAYOUT_NAMES, LAYOUTS
from fbn_prune.config.recipe import Recipe
from fbn_prune.data import DEFAULT_SOURCE
from fbn_prune.errors import UserError
from fbn_prune.select.methods import method_names

# command-line flag -> (recipe key, click option kwargs)
CALIBRATION_OPTIONS = {
    "calib": ("calibration.source", dict(type=str, metavar="SOURCE",
              help="Calibration text: builtin:wikitext2-valid (a WikiText-2 sample shipped with fbn_prune, "
                   "CC BY-SA 3.0), a .txt (one document per paragraph) or .jsonl file (.gz too), data:FILE (in "
                   "--data-dir), hf:DATASET[:CONFIG]:SPLIT[:FIELD] (a Hugging Face dataset), or generated (the "
                   f"model writes its own) [{DEFAULT_SOURCE}].")),
    "calib_task": ("calibration.task", dict(type=str, metavar="NAME",
                   help="Calibrate on an lm-eval task's own documents, rendered with its prompt format "
                        "(task-specific networks), e.g. arc_easy.")),
    "calib_field": ("calibration.field", dict(type=str, metavar="FIELD",
                    help="Text field of a .jsonl file or hf: dataset.")),
    "calib_samples": ("calibration.samples", dict(type=int, metavar="N", help="Calibration documents used.")),
    "calib_chat": ("calibration.chat", dict(type=click.Choice(["auto", "always", "never"]),
                   help="Wrap each calibration document as an assistant reply in the model's chat template "
                        "(auto: when the tokenizer has one).")),
    "seq_len": ("calibration.seq_len", dict(type=int, metavar="N", help="Tokens per document, longer ones are truncated.")),
    "batch_size": ("calibration.batch_size", dict(type=int, metavar="N", help="Documents per forward pass.")),
    "max_ram": ("calibration.max_ram", dict(type=str, metavar="SIZE",
                help="Host RAM the capture may use in all, e.g. 16GB: lowers --batch-size to fit; exit 2 when the "
                     "model and one batch do not fit. Signals always stream to disk.")),
    "data_dir": ("data_dir", dict(type=str, metavar="DIR", help="Data folder for data:FILE names and the local evaluation tasks [$FBN_PRUNE_DATA].")),
}
DECOMPOSITION_OPTIONS = {
    "runs": ("decomposition.runs", dict(type=int, metavar="N", help="Disjoint calibration subsets, one ICA each per layer.")),
    "components": ("decomposition.components", dict(type=int, metavar="K", help="ICA components (networks) per layer and run.")),
    "ica_engine": ("decomposition.engine", dict(type=click.Choice(["auto", "sklearn", "torch"]),
                   help="ICA engine: scikit-learn FastICA on CPU or the torch port (GPU when present).")),
    "ica_device": ("decomposition.device", dict(type=str, metavar="DEV",
                   help="Where ICA runs: auto (CUDA when present), cpu, cuda (every GPU with --jobs), cuda:N.")),
    "jobs": ("decomposition.jobs", dict(type=str, metavar="N",
             help="(layer, run) decompositions at once in worker processes: N, or auto (one per GPU; on the CPU "
                  "one per 8 cores). Same result for any N.")),
}
SELECTION_OPTIONS = {
    "method": ("selection.method", dict(type=click.Choice(method_names()),
               help="Channel scores: fbn (compensated elimination over functional connectivity with a network-"
                    "membership prior), fbn-recur (its prior from membership recurring across runs), fbn-group (fbn "
                    "ranked within functional groups), fbn-act (activation energy x membership), fbn-paper (the authors' pure "
                    "network membership) or a baseline at equal size.")),
    "ratio": ("selection.ratio", dict(type=float, metavar="R",
              help="Fraction of FFN channels removed across pruned layers, in [0, 1).")),
    "ratio_of": ("selection.ratio_of", dict(type=click.Choice(["ffn", "params"]),
                 help="What --ratio is a fraction of: FFN channels, or all model parameters.")),
    "threshold": ("selection.threshold", dict(type=float, metavar="T",
                  help="Instead of --ratio: keep neurons with |z| > T in any network (the paper's rule).")),
    "protect_first": ("selection.protect_first", dict(type=int, metavar="N", help="Never prune the first N layers.")),
    "protect_last": ("selection.protect_last", dict(type=int, metavar="M", help="Never prune the last M layers.")),
    "round_to": ("selection.round_to", dict(type=int, metavar="K", help="Kept widths are multiples of K.")),
    "min_width": ("selection.min_width", dict(type=int, metavar="N", help="No layer keeps fewer channels.")),
    "network_weight": ("selection.network_weight", dict(type=float, metavar="W",
                       help="fbn, fbn-recur, fbn-group, fbn-act: weight of the network-membership prior (0: none) [recipe's].")),
    "compensate": ("selection.compensate", dict(type=click.Choice(["lstsq", "bias", "none"]),
                   help="lstsq: fold the removed channels' least-squares prediction from the kept ones into the "
                        "down projection (no new parameters); none: plain deletion.")),
}
EXPORT_OPTIONS = {
    "layout": ("export.layout", dict(type=click.Choice(LAYOUT_NAMES),
               help="; ".join(f"{x.name}: {x.help}".replace("`", "") for x in LAYOUTS.values()) + ".")),
    "save_dtype": ("export.dtype", dict(type=click.Choice(DTYPE_NAMES),
                   help="dtype of the saved weights [the working --dtype].")),
}
EVAL_RUN_OPTIONS = {
    "eval_dtype": ("evaluation.dtype", dict(type=click.Choice(DTYPE_NAMES),
                   help="Evaluate both models in this dtype [the working --dtype].")),
    "eval_max_length": ("evaluation.max_length", dict(type=int, metavar="N",
                        help="Context length for lm-eval (perplexity windows) [the model's].")),
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
    **EVAL_RUN_OPTIONS,
}
HEAL_OPTIONS = {
    "heal_steps": ("heal.steps", dict(type=int, metavar="N",
                   help="Then heal the checkpoint for N steps of distillation from the original model "
                        "(as `fbn-prune heal` does; the recipe's heal section sets the rest) and write the healed "
                        "model to --out.")),
    "heal_calib": ("heal.texts", dict(type=str, metavar="SOURCE",
                   help="Training text for --heal-steps, any calibration source, disjoint from your evaluation text "
                        "[--calib, or the built-in text].")),
}
RUN_OPTIONS = {
    "seed": ("seed", dict(type=int, metavar="N", help="Seed for sampling, ICA and random baselines.")),
    "device": ("device", dict(type=str, metavar="DEV", help="auto, cpu, cuda, cuda:1 ....")),
    "dtype": ("dtype", dict(type=click.Choice(DTYPE_NAMES), help="Working dtype.")),
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
            for name, (key, opts) in reversed(list(g.items())):
                opts = {**opts, "help": with_default(opts["help"], key)}
                wrapper = click.option("--" + name.replace("_", "-"), name, default=None, **opts)(wrapper)
        return wrapper

    return decorate


def recipe_default(key: str):
    """The Recipe's default for a dotted key (``selection.ratio`` -> 0.2), read from its dataclass field."""
    cls, *path, last = [Recipe, *key.split(".")]
    for part in path:
        cls = {f.name: f for f in dataclasses.fields(cls)}[part].default_factory
    f = {f.name: f for f in dataclasses.fields(cls)}[last]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def with_default(help_text: str, key: str) -> str:
    """``help_text`` ending in the Recipe's default for ``key``, ``[0.2]``, unless it names its own
    default in brackets already or the default is None/empty; so help and recipe cannot disagree."""
    default = recipe_default(key)
    if help_text.rstrip(".").endswith("]") or default in (None, [], ""):
        return help_text
    return f"{help_text.rstrip('.')} [{default}]."


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

