"""The Recipe (every option of a pruning run, typed, validated, YAML in and out) and the shipped recipes.

A recipe has sections (calibration, decomposition, selection, export, evaluation, heal) plus a few
top-level keys. Command-line flags override recipe values by dotted key
(``selection.ratio``); the recipe as used is saved next to the checkpoint.

Ready recipes are package data (``fbn_prune/recipes/*.yaml``, found with :mod:`importlib.resources`)
named by their file stem: ``--recipe smollm2-135m`` works from any folder and from an installed
wheel. Folders listed in ``$FBN_PRUNE_RECIPES`` come first (a recipe there shadows a shipped one).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from fbn_prune._runtime.dtypes import COMPUTE_NAMES, DTYPE_NAMES
from fbn_prune._runtime.sizes import parse_max_memory, parse_size
from fbn_prune.config.gate import Gate
from fbn_prune.config.layouts import LAYOUT_NAMES, LAYOUTS, layout_for
from fbn_prune.config.limits import parse_limit
from fbn_prune.data import DEFAULT_SOURCE
from fbn_prune.errors import UserError


@dataclass
class Calibration:
    """Where calibration text comes from and how much of it is used."""

    # dataclasses.field in full here: the `field` attribute below shadows the name in this class body
    source: str | None = dataclasses.field(default=None, metadata={"help": "Calibration text: `builtin:NAME` (shipped with the package; `builtin:wikitext2-valid` is the default when neither `source` nor `task` is set), a .txt file (one document per paragraph), a .jsonl file, `data:REL` (a file in the data folder), `hf:DATASET[:CONFIG]:SPLIT[:FIELD]` (a Hugging Face dataset) or `generated` (the model writes its own)."})
    task: str | None = dataclasses.field(default=None, metadata={"help": "An lm-eval task whose own documents, rendered with its prompt format, are the calibration text (task-specific networks), e.g. `arc_easy`. Replaces `source`."})
    field: str = dataclasses.field(default="text", metadata={"help": "Field of a .jsonl calibration file that holds the text."})
    samples: int = dataclasses.field(default=128, metadata={"help": "Documents used, split into `decomposition.runs` disjoint runs."})
    seq_len: int = dataclasses.field(default=256, metadata={"help": "Tokens per document; longer documents are truncated."})
    batch_size: int = dataclasses.field(default=8, metadata={"help": "Documents per forward pass during the capture."})
    holdout: int = dataclasses.field(default=4, metadata={"help": "Further documents kept aside for verification, never used for selection."})
    chat: Literal["auto", "always", "never"] = dataclasses.field(default="auto", metadata={"help": "Wrap each document as an assistant reply in the model's chat template (`auto`: when the tokenizer has one)."})
    max_ram: str | None = dataclasses.field(default=None, metadata={"help": "Host RAM the capture may use in all (`16GB`, `8GiB`): lowers `batch_size` to fit; exit 2 when the model and one batch do not fit."})


@dataclass
class Decomposition:
    """ICA over each layer's neuron signals, per run."""

    runs: int = field(default=4, metadata={"help": "Disjoint calibration subsets, one ICA each per layer."})
    components: int = field(default=64, metadata={"help": "ICA components (networks) per layer and run."})
    fun: Literal["cube", "logcosh", "exp"] = field(default="cube", metadata={"help": "FastICA nonlinearity."})
    max_iter: int = field(default=300, metadata={"help": "Most FastICA iterations per layer and run."})
    tol: float = field(default=1e-4, metadata={"help": "FastICA convergence tolerance."})
    engine: Literal["auto", "sklearn", "torch"] = field(default="auto", metadata={"help": "`sklearn` (CPU), `torch` (the torch port, CUDA when present) or `auto` (torch where ICA runs on CUDA, else scikit-learn)."})
    device: str = field(default="auto", metadata={"help": "Where ICA and the Gram matrices run: `auto` (CUDA when present), `cpu`, `cuda` (every GPU with `jobs`), `cuda:N`."})
    jobs: int | str = field(default=1, metadata={"help": "(layer, run) decompositions at once in worker processes: N, or `auto` (one per GPU, else per CPU core). The maps are the same for any value."})


@dataclass
class Selection:
    """Which channels survive: a budget (ratio or threshold) and its constraints."""

    method: str = field(default="fbn", metadata={"help": "Channel score: `fbn` (compensated elimination over functional connectivity with a network-membership prior), `fbn-recur`, `fbn-group`, `fbn-act`, `fbn-paper`, or a baseline at equal size."})
    ratio: float | None = field(default=0.2, metadata={"help": "Fraction of FFN channels removed across pruned layers, in [0, 1)."})
    ratio_of: Literal["ffn", "params"] = field(default="ffn", metadata={"help": "`params`: `ratio` is a fraction of all model parameters instead of FFN channels."})
    threshold: float | None = field(default=None, metadata={"help": "The paper's rule instead of a ratio: keep a channel when its |z| exceeds this in any network (padded or exact layout)."})
    protect_first: int = field(default=0, metadata={"help": "Never prune the first N layers (padded or exact layout)."})
    protect_last: int = field(default=0, metadata={"help": "Never prune the last N layers (padded or exact layout)."})
    round_to: int = field(default=8, metadata={"help": "Kept widths are multiples of this (hardware-friendly)."})
    min_width: int = field(default=8, metadata={"help": "No pruned layer keeps fewer channels than this."})
    network_weight: float = field(default=1.0, metadata={"help": "`fbn`, `fbn-recur`, `fbn-group`, `fbn-act`: weight of the network-membership prior (0: none)."})
    compensate: Literal["none", "lstsq", "bias"] = field(default="lstsq", metadata={"help": "`lstsq`: fold the removed channels' least-squares prediction from the kept ones into the down projection; `bias`: FLAP's bias compensation (models whose down projection has a bias); `none`: plain deletion."})
    ridge: float = field(default=1e-3, metadata={"help": "Relative ridge of the least-squares reconstruction and of the elimination's Gram matrix."})


@dataclass
class Export:
    """How the pruned model is written."""

    layout: str = field(default=LAYOUT_NAMES[0], metadata={"help": "; ".join(f"`{x.name}`: {x.help}" for x in LAYOUTS.values()) + "."})
    dtype: Literal[DTYPE_NAMES] | None = field(default=None, metadata={"help": "dtype of the saved weights (null: the working `dtype`)."})
    max_shard_size: str = field(default="2GB", metadata={"help": "Largest safetensors shard."})
    verify_tokens: int = field(default=256, metadata={"help": "Held-out tokens on which the reloaded checkpoint is compared with the original."})


@dataclass
class Evaluation:
    """lm-eval after export (`prune --eval-tasks`): original vs pruned, same settings, optional gate."""

    tasks: list[str] = field(default_factory=list, metadata={"help": "lm-eval task names, task YAML paths or `ppl:FILE`; empty: no evaluation."})
    limit: str | None = field(default=None, metadata={"help": "Documents per task: N, a fraction below 1, or `N,TASK=M`; null: every document."})
    num_fewshot: int | None = field(default=None, metadata={"help": "Few-shot examples; null: each task's default (0 for the standard tasks)."})
    batch_size: int = field(default=8, metadata={"help": "Requests per forward pass, for both models."})
    dtype: Literal[DTYPE_NAMES] | None = field(default=None, metadata={"help": "dtype both models are evaluated in (null: the working `dtype`); `bfloat16` is about twice as fast on a CPU with AVX512-BF16 and on GPUs."})
    max_length: int | None = field(default=None, metadata={"help": "Context length for lm-eval (perplexity windows, truncation); null: the model's."})
    max_drop: float | None = field(default=None, metadata={"help": "Gate: the largest fall of an accuracy-type metric, in percentage points (exit 3 beyond it)."})
    min_retention: float | None = field(default=None, metadata={"help": "Gate: the smallest pruned/original ratio of any metric (original/pruned for perplexity)."})
    gate_on: Literal["point", "ci"] = field(default="point", metadata={"help": "What the gate checks: the measured values (`point`) or the bound of the 95% paired bootstrap interval (`ci`)."})
    include_path: list[str] = field(default_factory=list, metadata={"help": "Folders of your own lm-eval task YAMLs."})


@dataclass
class Heal:
    """Healing after the prune (`prune`, `select` and `search` --heal-steps N): distillation from the original model, widths unchanged."""

    steps: int = field(default=0, metadata={"help": "Optimizer steps of distillation from the original model into the pruned one, run after the prune; the healed model is what `out` holds (0: no healing). See `fbn-prune heal`."})
    texts: str | None = field(default=None, metadata={"help": "Training text, any calibration source; keep it disjoint from your evaluation text (null: `calibration.source`, or the built-in text when the calibration is a task or `generated`)."})
    lora_rank: int | None = field(default=16, metadata={"help": "LoRA rank, merged back after training; null: train every weight."})
    lr: float | None = field(default=None, metadata={"help": "Peak learning rate (null: 5e-4 with LoRA, 2e-5 when every weight trains)."})
    seq_len: int = field(default=256, metadata={"help": "Tokens per training block."})
    batch_size: int = field(default=8, metadata={"help": "Blocks per optimizer step."})
    kl_weight: float = field(default=1.0, metadata={"help": "Weight of KL(original || pruned) in the loss."})
    lm_weight: float = field(default=0.0, metadata={"help": "Weight of the next-token loss."})
    temperature: float = field(default=1.0, metadata={"help": "Distillation temperature."})
    compute: Literal[COMPUTE_NAMES] = field(default="auto", metadata={"help": "What the training multiplies in: `float32`, or `bfloat16` autocast (weights, optimizer and loss stay float32; about twice as fast on a CPU with AVX512-BF16); `auto`: bfloat16 where the device has it in hardware."})


@dataclass
class Recipe:
    """A whole pruning run. ``Recipe.load(path)`` / ``recipe.save(path)`` round-trip through YAML."""

    model: str | None = field(default=None, metadata={"help": "The model: a Hub id, a local folder, a .gguf file, or `smollm2` (the embedded SmolLM2-135M-Instruct)."})
    out: str | None = field(default=None, metadata={"help": "Output folder of the pruned checkpoint."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling, ICA and the random baseline."})
    device: str = field(default="auto", metadata={"help": "`auto`, `cpu`, `cuda`, `cuda:N`."})
    dtype: Literal[DTYPE_NAMES] = field(default="float32", metadata={"help": "Working dtype."})
    device_map: str | None = field(default=None, metadata={"help": "Load with accelerate instead of `device`: `auto` (all GPUs, then CPU RAM), `balanced`, `sequential`, `cpu`."})
    max_memory: str | None = field(default=None, metadata={"help": "With `device_map`: `70GiB` (each GPU) or per device, `0=70GiB,1=70GiB,cpu=200GiB`."})
    data_dir: str | None = field(default=None, metadata={"help": "Local data folder for `data:` paths and the offline tasks (else `$FBN_PRUNE_DATA`)."})
    calibration: Calibration = field(default_factory=Calibration, metadata={"help": "Where calibration text comes from and how much of it is used."})
    decomposition: Decomposition = field(default_factory=Decomposition, metadata={"help": "ICA over each layer's neuron signals, per run."})
    selection: Selection = field(default_factory=Selection, metadata={"help": "Which channels survive: a budget and its constraints."})
    export: Export = field(default_factory=Export, metadata={"help": "How the pruned model is written."})
    evaluation: Evaluation = field(default_factory=Evaluation, metadata={"help": "Original vs pruned with lm-eval after export, with an optional gate."})
    heal: Heal = field(default_factory=Heal, metadata={"help": "Healing after the prune: distillation from the original model (off unless `steps` > 0)."})

    # ---- construction -----------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict | None, where: str = "recipe") -> "Recipe":
        recipe = _build(cls, data or {}, where).canonical()
        recipe.validate(where)
        return recipe

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recipe":
        """A recipe file, or a ready recipe by name (``smollm2-135m``; see :func:`locate`)."""
        p = locate(path)
        if not p.is_file():
            raise UserError(f"recipe {path} is not a file.")
        try:
            data = yaml.safe_load(p.read_text())
        except UnicodeDecodeError:
            raise UserError(f"recipe {path} is not UTF-8 text.") from None
        except OSError as e:
            raise UserError(f"recipe {path} cannot be read: {e.strerror or e}.") from None
        except yaml.YAMLError as e:
            raise UserError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from e
        if data is not None and not isinstance(data, dict):
            raise UserError(f"recipe {path} must be a mapping of keys to values.")
        data = dict(data or {})
        data.pop("description", None)
        data.pop("hardware", None)
        return cls.from_dict(data, where=str(path))

    def override(self, updates: dict[str, Any]) -> "Recipe":
        """A new recipe with dotted keys replaced (None values are ignored)."""
        data = self.to_dict()
        for key, value in updates.items():
            if value is None:
                continue
            node = data
            *head, last = key.split(".")
            for h in head:
                node = node[h]
            node[last] = value
        return Recipe.from_dict(data, where="command line")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    # ---- canonical form and validation -------------------------------------
    def canonical(self) -> "Recipe":
        """A new recipe with the shorthand forms spelled out; ``self`` is unchanged.

        A threshold replaces the default ratio; no calibration source or task means the built-in
        default; ``jobs: "4"`` is the number 4; a comma-separated task list becomes a list.
        """
        s, c, d, e = self.selection, self.calibration, self.decomposition, self.evaluation
        return dataclasses.replace(
            self,
            selection=dataclasses.replace(s, ratio=None) if s.threshold is not None else s,
            calibration=dataclasses.replace(c, source=DEFAULT_SOURCE) if not c.source and not c.task else c,
            decomposition=dataclasses.replace(d, jobs=int(d.jobs))
            if isinstance(d.jobs, str) and d.jobs.strip().isdigit() else d,
            evaluation=dataclasses.replace(e, **{name: [v.strip() for v in value.split(",") if v.strip()]
                                                 for name in ("tasks", "include_path")
                                                 if isinstance(value := getattr(e, name), str)}),
        )

    def validate(self, where: str | None = None) -> None:
        """Raise UserError for the first value out of range or inconsistent; changes nothing.

        ``where``: the recipe's origin (a file name, "command line"), named in errors about a key's value."""
        layout = layout_for(self.export.layout, f"{where}: export: layout" if where else "export.layout")
        s, c, d = self.selection, self.calibration, self.decomposition
        if s.threshold is None and s.ratio is None:
            raise UserError("give a budget: selection.ratio (--ratio) or selection.threshold (--threshold).")
        if s.ratio is not None and not (0.0 <= s.ratio < 1.0):
            raise UserError(f"ratio must be in [0, 1), got {s.ratio}.")
        if s.threshold is not None and s.threshold < 0:
            raise UserError(f"threshold must be >= 0, got {s.threshold}.")
        if s.threshold is not None and not layout.per_layer:
            raise UserError("--threshold gives each layer its own width; use --layout "
                            f"{_per_layer_names()}, or --ratio.")
        for name, value, low in (
            ("calibration.samples", c.samples, 1),
            ("calibration.seq_len", c.seq_len, 2),
            ("calibration.batch_size", c.batch_size, 1),
            ("calibration.holdout", c.holdout, 0),
            ("decomposition.runs", d.runs, 1),
            ("decomposition.components", d.components, 1),
            ("decomposition.max_iter", d.max_iter, 1),
            ("selection.round_to", s.round_to, 1),
            ("selection.min_width", s.min_width, 1),
            ("selection.protect_first", s.protect_first, 0),
            ("selection.protect_last", s.protect_last, 0),
            ("export.verify_tokens", self.export.verify_tokens, 2),
            ("evaluation.max_length (--eval-max-length)", 2 if self.evaluation.max_length is None else self.evaluation.max_length, 2),
        ):
            if value < low:
                raise UserError(f"{name} must be >= {low}, got {value}.")
        if d.runs > c.samples:
            raise UserError(f"{d.runs} runs need at least as many calibration samples, got {c.samples}.")
        if not layout.per_layer and (s.protect_first or s.protect_last):
            raise UserError("the uniform layout keeps the same width in every layer, so layers cannot be protected; "
                            f"use --layout {_per_layer_names()} with --protect-first/--protect-last.")
        layout.check_rounding(s.round_to, s.min_width)
        if c.source and c.task:
            raise UserError("give one calibration source: --calib or --calib-task, not both.")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise UserError(f"device (--device) must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}.")
        self._validate_scale()
        self._validate_evaluation()
        self._validate_heal()

    def _validate_scale(self) -> None:
        """Memory budget, ICA device and jobs, model placement (see resources.py, jobs.py, placement.py)."""
        d = self.decomposition
        if self.calibration.max_ram is not None:
            parse_size(self.calibration.max_ram, "calibration.max_ram (--max-ram)")
        if isinstance(d.jobs, str):
            if d.jobs != "auto":
                raise UserError(f"decomposition.jobs (--jobs) must be a positive integer or auto, got {d.jobs!r}.")
        if isinstance(d.jobs, int) and d.jobs < 1:
            raise UserError(f"decomposition.jobs (--jobs) must be >= 1, got {d.jobs}.")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", d.device):
            raise UserError(f"decomposition.device (--ica-device) must be auto, cpu, cuda or cuda:N, got {d.device!r}.")
        if self.max_memory is not None:
            if not self.device_map:
                raise UserError("max_memory (--max-memory) caps the devices of a device_map; give --device-map auto too.")
            parse_max_memory(self.max_memory)

    def _validate_heal(self) -> None:
        h = self.heal
        for name, value, low in (("heal.steps", h.steps, 0), ("heal.seq_len", h.seq_len, 2),
                                 ("heal.batch_size", h.batch_size, 1)):
            if value < low:
                raise UserError(f"{name} must be >= {low}, got {value}.")
        if h.lora_rank is not None and h.lora_rank < 1:
            raise UserError(f"heal.lora_rank must be >= 1 (or null to train every weight), got {h.lora_rank}.")
        for name, value in (("heal.lr", h.lr), ("heal.temperature", h.temperature)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"{name} must be a positive number, got {value}.")
        for name, value in (("heal.kl_weight", h.kl_weight), ("heal.lm_weight", h.lm_weight)):
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"{name} must be >= 0, got {value}.")
        if h.kl_weight == 0 and h.lm_weight == 0:
            raise UserError("heal.kl_weight and heal.lm_weight are both 0: nothing to train on.")

    def _validate_evaluation(self) -> None:
        e = self.evaluation
        for name in ("tasks", "include_path"):
            value = getattr(e, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserError(f"evaluation.{name} must be a list of strings, got {value!r}.")
        if e.batch_size < 1:
            raise UserError(f"evaluation.batch_size must be >= 1, got {e.batch_size}.")
        if e.num_fewshot is not None and e.num_fewshot < 0:
            raise UserError(f"evaluation.num_fewshot must be >= 0, got {e.num_fewshot}.")

        parse_limit(e.limit)
        Gate.make(e.max_drop, e.min_retention, on=e.gate_on)


# ---- typed construction from plain data ------------------------------------
def _per_layer_names() -> str:
    return " or ".join(x.name for x in LAYOUTS.values() if x.per_layer)


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping for {cls.__name__.lower()}.")
    names = {f.name: f for f in fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(names), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(names)}."
        raise UserError(f"{where}: unknown key {unknown[0]!r}{hint}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}: {key}")
    return cls(**kwargs)


def _coerce(tp, value, where: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, where)
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise UserError(f"{where} must not be empty.")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0])
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise UserError(f"{where} must be one of {', '.join(map(str, allowed))}, got {value!r}.")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where} must be true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {value!r}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}.")
        if not math.isfinite(value):
            raise UserError(f"{where} must be a finite number, got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{where} must be a string, got {value!r}.")
        return str(value)
    return value


# ---- the ready recipes ------------------------------------------------------
RECIPES_ENV = "FBN_PRUNE_RECIPES"
"""Folders of the user's own ready recipes (separated by ``:``), searched before the shipped ones."""


def shipped_recipes() -> Path:
    """The package's own recipe folder (``fbn_prune/recipes``), found with :mod:`importlib.resources`."""
    return Path(str(resources.files("fbn_prune").joinpath("recipes")))


def recipe_dirs() -> list[Path]:
    """Folders searched for ready recipes, in order: ``$FBN_PRUNE_RECIPES``, then the package's own."""
    candidates = [Path(d).expanduser() for d in os.environ.get(RECIPES_ENV, "").split(os.pathsep) if d]
    seen: list[Path] = []
    for c in [*candidates, shipped_recipes()]:
        if c.is_dir() and c.resolve() not in seen:
            seen.append(c.resolve())
    return seen


@dataclass
class ReadyRecipe:
    """One ready recipe, as ``fbn-prune recipes`` lists it (``error``: why it does not parse)."""

    name: str
    path: Path
    model: str | None
    description: str
    hardware: str
    calibration: str
    error: str | None = None


def ready_recipes() -> list[ReadyRecipe]:
    """Every ``*.yaml`` in :func:`recipe_dirs`, by name (the file stem; the first folder wins), sorted."""
    found: dict[str, ReadyRecipe] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.yaml")):
            if path.stem in found:
                continue
            try:
                data = yaml.safe_load(path.read_text()) or {}
                cal = data.get("calibration") or {}
                source = f"task {cal['task']}" if cal.get("task") else (cal.get("source") or DEFAULT_SOURCE)
                found[path.stem] = ReadyRecipe(path.stem, path, data.get("model"), str(data.get("description") or ""),
                                               str(data.get("hardware") or ""), source)
            except Exception as e:  # listed, with what is wrong
                found[path.stem] = ReadyRecipe(path.stem, path, None, "", "", "", error=f"{type(e).__name__}: {e}")
    return sorted(found.values(), key=lambda r: r.name)


def find_ready(name: str) -> ReadyRecipe:
    """A ready recipe by name (``llama-3.1-8b-arc``, with or without ``.yaml``); UserError with the names otherwise."""
    stem = name[:-5] if name.endswith(".yaml") else name
    entries = ready_recipes()
    for r in entries:
        if r.name == stem:
            return r
    close = difflib.get_close_matches(stem, [r.name for r in entries], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; ready recipes: {', '.join(r.name for r in entries) or 'none'}."
    raise UserError(f"no recipe file or ready recipe named {name!r}{hint}")


def locate(spec: str | os.PathLike) -> Path:
    """The recipe file ``spec`` names: an existing file, else the ready recipe of that name (a folder
    that happens to carry a recipe's name, such as an earlier --out, does not hide the recipe).

    Raises UserError for a missing path (with the ready recipe's name when the file name is one)
    and for an unknown name.
    """
    p = Path(spec).expanduser()
    text = str(spec)
    if p.is_file() or (p.exists() and not any(r.name == p.stem for r in ready_recipes())):
        return p
    if "/" in text or os.sep in text:
        ready = {r.name for r in ready_recipes()}
        hint = f"; the ready recipe is named without a folder: --recipe {p.stem}" if p.stem in ready else ""
        raise UserError(f"recipe {spec} does not exist{hint}.")
    return find_ready(text).path
