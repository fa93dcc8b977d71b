"""The healing job: a pruned checkpoint + its original model -> a distilled, verified checkpoint.

    checkpoint (student) + base (teacher) + text --distill--> healed model --write_checkpoint--> DIR

The healed folder has the checkpoint's layout and widths, its provenance plus a ``healing``
record (data hash, steps, tokens, held-out KL before/after, loss curve), and is reloaded
from disk and compared with the in-memory healed model before it is moved into place.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from fbn_prune import pipeline
from fbn_prune._io.targets import Place, TargetLock, check_disjoint, sweep_leftovers, temp_prefix
from fbn_prune._runtime.devices import resolve_device
from fbn_prune._runtime.dtypes import DTYPES
from fbn_prune.config.layouts import LAYOUT_NAMES, layout_for
from fbn_prune.config.recipe import Recipe
from fbn_prune.data import DEFAULT_SOURCE
from fbn_prune.decompose.networks import Networks
from fbn_prune.errors import UserError
from fbn_prune.export.checkpoint import RECIPE_FILE, check_target, move_into_place, write_checkpoint
from fbn_prune.export.provenance import Provenance, read_provenance
from fbn_prune.export.surgery import MODELING_FILE
from fbn_prune.export.verify import compare_logits, logits, rounded_copy
from fbn_prune.heal.distill import HealSettings, default_lr, distill, token_blocks
from fbn_prune.heal.state import StateStore, remove_state, state_folder, state_key
from fbn_prune.models.identity import check_base, folder_hash, identify, model_hash
from fbn_prune.models.sources import input_location, load_model, resolve
from fbn_prune.ship.card import render_card
from fbn_prune.ship.hub import card_license
from fbn_prune.texts import calibration as calib
from fbn_prune.texts.generated import GENERATED
from fbn_prune.texts.records import CalibrationText

log = logging.getLogger(__name__)

VERIFY_TOKENS = 256


def base_spec(checkpoint: Path, info: Provenance) -> str:
    """The model a checkpoint was pruned from, as the user named it (its recipe), else its local path or Hub id."""
    recipe = checkpoint / RECIPE_FILE
    if recipe.is_file():
        try:
            model = (yaml.safe_load(recipe.read_text()) or {}).get("model")
        except yaml.YAMLError:
            model = None
        if isinstance(model, str) and model:
            return model
    spec = info.base_model_path or info.base_model_hub_id or info.base_model
    if not spec:
        raise UserError(f"{checkpoint} does not say which model it was pruned from; name it with --base.")
    return spec


def heal(checkpoint: str | Path, out: str | Path, texts_source: str, settings: HealSettings, *,
         base: str | None = None, field: str = "text", data_dir: str | None = None, overwrite: bool = False,
         progress: bool = True, device: str = "cpu", from_checkpoint: str | None = None,
         state_dir: Path | None = None) -> Path:
    """Distill ``base`` into the pruned ``checkpoint`` on the documents of ``texts_source`` and write DIR.

    Everything that needs no weights is checked first: the checkpoint's provenance, the output
    folder, the text source. Raises UserError for bad input (exit 2) and VerificationError when
    the reloaded folder does not reproduce the healed model (exit 4; nothing is written).
    ``from_checkpoint``: what the provenance names as the healed checkpoint (default: its path).
    The training state is kept in ``state_dir`` (default: ``.NAME.heal-state`` beside ``out``, removed
    once ``out`` is written; a caller that names it removes it) so that a stopped run resumes
    (:mod:`fbn_prune.heal.state`).
    """
    checkpoint = Path(checkpoint)
    info = read_provenance(checkpoint)
    spec = base or base_spec(checkpoint, info)
    inputs = [Place(checkpoint, "the checkpoint being healed")]
    if loc := input_location(spec):
        inputs.append(Place(loc[0], loc[1], nest_ok=loc[2]))
    check_disjoint([Place(out, "--out")], inputs)
    target = check_target(out, overwrite)
    source = resolve(spec)
    base_hash = model_hash(source)
    check = check_base(info.to_dict(), identify(source, base_hash), source.path if source.local else None)
    if check.verdict == "mismatch":
        raise UserError(f"--base {spec} is not the model {checkpoint} was pruned from: {check.reason}; "
                        "name that model with --base.")
    with TargetLock(target, "--out"):
        check_target(out, overwrite)  # again: a run that held the lock until now may have written it
        sweep_leftovers(target)
        store_dir = state_dir or state_folder(target)
        _heal_into(target, checkpoint, info, spec, texts_source, settings, field=field, data_dir=data_dir,
                   progress=progress, device=device, from_checkpoint=from_checkpoint or str(checkpoint.resolve()),
                   state_dir=store_dir, base_id=base_hash or spec)
        if state_dir is None:
            remove_state(store_dir)
        return target


def training_text(texts_source: str, field: str, data_dir: str | None) -> CalibrationText:
    """The documents healing trains on, read as calibration text is; UserError for a bad or generated source."""
    text = calib.prepare(Recipe.from_dict({"calibration": {"source": texts_source, "field": field}, "data_dir": data_dir}))
    if text.texts is None:
        raise UserError("heal needs real text (a file, data:, builtin: or hf: source), not 'generated'.")
    return text


def _heal_into(target: Path, checkpoint: Path, info: Provenance, spec: str, texts_source: str, settings: HealSettings, *,
               field: str, data_dir: str | None, progress: bool, device: str, from_checkpoint: str,
               state_dir: Path, base_id: str) -> Path:
    """heal() once ``target`` is checked and locked; the training state lives in ``state_dir``, keyed by the
    checkpoint's content hash, ``base_id`` (the original's content hash, else its name), the text and settings."""
    text = training_text(texts_source, field, data_dir)
    texts = text.texts
    layout = layout_for(info.layout if info.has("layout") else LAYOUT_NAMES[0])
    dtype = info.dtype or "float32"

    teacher, _ = load_model(resolve(spec), "float32", device)
    try:
        student = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32,
                                                       trust_remote_code=layout.remote_code).to(device)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load checkpoint {checkpoint}: {str(e).strip().splitlines()[0]}") from e
    if student.config.vocab_size != teacher.config.vocab_size:
        raise UserError(f"--base {spec} has a vocabulary of {teacher.config.vocab_size} tokens, the checkpoint "
                        f"{student.config.vocab_size}: name the model it was pruned from with --base.")
    try:
        blocks = token_blocks(tokenizer, texts, settings)
    except ValueError as e:
        raise UserError(f"{texts_source}: {e}.") from e
    t0 = time.perf_counter()
    store = StateStore(state_dir, state_key(checkpoint=folder_hash(checkpoint), base=base_id,
                                            text_sha256=blocks.sha256, settings=settings))
    healed, result = distill(student, teacher, blocks, settings, progress=progress, state=store)
    del teacher
    info = info.copy()
    info.healing = {**asdict(result), "base_model": spec, "text_source": text.source, "text_license": text.license,
                    "from_checkpoint": from_checkpoint}
    info.params = {**info.params, "after": healed.num_parameters()}  # type: ignore[dict-item]
    info.evaluation = None  # measured on the model before healing
    if info.timings is None:
        info.timings = {}
    info.timings["heal_s"] = round(time.perf_counter() - t0, 2)

    docs = blocks.heldout.reshape(-1)[:VERIFY_TOKENS].view(1, -1).tolist()
    saved = DTYPES[dtype]

    def check(folder: str) -> dict:
        reference = logits(rounded_copy(healed, saved), docs)
        loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                      trust_remote_code=layout.remote_code).to(device).eval()
        return compare_logits(reference, logits(loaded, docs), torch.float32)

    files = {name: (checkpoint / name).read_text() for name in (RECIPE_FILE, MODELING_FILE)
             if (checkpoint / name).is_file()}
    write_checkpoint(healed, tokenizer, target, files=files, info=info, max_shard_size="2GB", verify=check,
                     card=lambda i: render_card(i, license=card_license(i)), dtype=saved)
    log.info("healed checkpoint written to %s (held-out KL %.4f -> %.4f)", target, result.heldout_kl_before,
             result.heldout_kl_after)
    return target


def heal_summary(folder: Path) -> str:
    """Two lines for the terminal: what healing did."""
    h = read_provenance(folder).healing
    reads = h["tokens"] / (h["data"]["train_blocks"] * h["settings"]["seq_len"])  # passes over the training text
    return (f"{folder}: healed {h['steps']} steps ({h['tokens']:,} tokens, {h['tokens_per_s']:.0f} tokens/s; "
            f"the training text read {reads:.1f} times)\n"
            f"  held-out KL to the original {h['heldout_kl_before']:.4f} -> {h['heldout_kl_after']:.4f}")


def settings_for(recipe: Recipe) -> HealSettings:
    """The recipe's ``heal`` section as HealSettings (LoRA unless ``lora_rank`` is null; the learning
    rate defaults to the mode's, :func:`~fbn_prune.heal.distill.default_lr`)."""
    h = recipe.heal
    return HealSettings(steps=h.steps, seq_len=h.seq_len, batch_size=h.batch_size,
                        lr=h.lr or default_lr(h.lora_rank), lora_rank=h.lora_rank,
                        kl_weight=h.kl_weight, lm_weight=h.lm_weight, temperature=h.temperature, seed=recipe.seed,
                        compute=h.compute)


def heal_texts(recipe: Recipe) -> tuple[str, str]:
    """(source, jsonl field) of the healing text: ``heal.texts``, else the calibration source, else the
    built-in text (a task calibration or ``generated`` text is not a training corpus)."""
    if recipe.heal.texts:
        return recipe.heal.texts, "text"
    c = recipe.calibration
    if c.source and not c.task and c.source != GENERATED:
        return c.source, c.field
    return DEFAULT_SOURCE, "text"


def heal_after(recipe: Recipe, produce: Callable[[Path], tuple[Path, Recipe]], *, what: str, inputs: list[Place],
               overwrite: bool = False, progress: bool = True, finish: Callable[[Path], object] | None = None) -> Path:
    """Make a pruned checkpoint with ``produce(folder)``, heal it with the recipe's ``heal`` section, and
    move the healed checkpoint to ``recipe.out``.

    ``produce`` receives a folder to write (it does not exist yet, and lies in a temporary folder beside
    ``out``) and returns the checkpoint it wrote with the recipe that reproduces it (its ``recipe.yaml``).
    ``inputs``: what the run reads (``pipeline.input_places``); ``out`` is checked against them and the
    healing text before any work, and locked for the run. ``finish(folder)`` runs on the healed
    checkpoint before it is moved into place (``search`` evaluates it there). ``out`` only ever holds
    the whole healed model; a failure leaves it as it was. ``what`` names the healed step for the
    provenance (``from_checkpoint``).
    """
    if not recipe.out:
        raise UserError("name the output folder with --out (or `out:` in the recipe).")
    out = Path(recipe.out)
    texts, field = heal_texts(recipe)
    check_disjoint([Place(out, "--out")], [*inputs, *pipeline.text_places(texts, recipe.data_dir, "the healing text")])
    target = check_target(out, overwrite)  # before the prune, not after it
    training_text(texts, field, recipe.data_dir)  # a bad --heal-calib fails now, not after the prune
    target.parent.mkdir(parents=True, exist_ok=True)
    with TargetLock(target, "--out"):
        check_target(out, overwrite)  # again: a run that held the lock until now may have written it
        sweep_leftovers(target)
        work = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
        try:
            pruned, used = produce(work / "pruned")
            (pruned / RECIPE_FILE).write_text(pipeline.recipe_text(used))  # the recipe as the user gave it
            state = state_folder(target)
            healed = heal(pruned, work / "healed", texts, settings_for(recipe), base=recipe.model, field=field,
                          data_dir=recipe.data_dir, progress=progress, device=resolve_device(recipe.device),
                          from_checkpoint=f"{what} (not kept)", state_dir=state)
            if finish is not None:
                finish(healed)
            move_into_place(healed, target)
            remove_state(state)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def prune_and_heal(recipe: Recipe, *, overwrite: bool = False, progress: bool = True,
                   networks_dir: str | None = None) -> Path:
    """``prune --heal-steps N``: :func:`heal_after` around :func:`fbn_prune.pipeline.prune`."""
    def produce(folder: Path) -> tuple[Path, Recipe]:
        return pipeline.prune(dataclasses.replace(recipe, out=str(folder)), progress=progress,
                              networks_dir=networks_dir), recipe

    inputs = pipeline.input_places(recipe, recipe.model)
    if networks_dir:
        inputs.append(Place(Path(networks_dir), "the --save-networks folder"))
    return heal_after(recipe, produce, what="this run's prune", inputs=inputs, overwrite=overwrite, progress=progress)


def select_and_heal(recipe: Recipe, artifact: Networks, *, overwrite: bool = False, progress: bool = True) -> Path:
    """``select --heal-steps N``: :func:`heal_after` around :func:`fbn_prune.pipeline.select`."""
    def produce(folder: Path) -> tuple[Path, Recipe]:
        return pipeline.select(dataclasses.replace(recipe, out=str(folder)), artifact), recipe

    inputs = pipeline.input_places(recipe, recipe.model or artifact.meta.model, artifact.folder)
    return heal_after(recipe, produce, what="this run's select", inputs=inputs, overwrite=overwrite, progress=progress)
