"""The library entry points behind the command line: networks, select, prune.

    model + calibration --networks()--> networks artifact --select()--> verified checkpoint
                        `------------------- prune() = both -------------------'
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import yaml

from fbn_prune import __version__
from fbn_prune._io.targets import Place, TargetLock, check_disjoint, check_replaceable, real, sweep_leftovers
from fbn_prune._runtime import world
from fbn_prune._runtime.cache import cache_dir
from fbn_prune._runtime.devices import resolve_device, selection_device
from fbn_prune._runtime.dtypes import DTYPES
from fbn_prune.config.layouts import layout_for
from fbn_prune.config.recipe import Recipe
from fbn_prune.decompose import cache as netcache
from fbn_prune.decompose.networks import (
    ARTIFACT_FILE,
    HOLDOUT_FILE,
    Networks,
)
from fbn_prune.errors import UserError, writing
from fbn_prune.export.checkpoint import RECIPE_FILE, check_target, write_checkpoint
from fbn_prune.export.provenance import add_total_time, build_provenance
from fbn_prune.export.surgery import MODELING_FILE, build_pruned, modeling_source
from fbn_prune.export.verify import held_out_tokens, verify
from fbn_prune.find_networks import build as build_networks
from fbn_prune.find_networks import load_calibration, needs
from fbn_prune.models.arch import adapter_for
from fbn_prune.models.identity import model_hash
from fbn_prune.models.placement import load_kwargs, onloaded
from fbn_prune.models.sources import input_location, load_model, resolve
from fbn_prune.select.budget import Budget, channel_ratio_for_params
from fbn_prune.select.budget import select as select_channels
from fbn_prune.select.compensate import compensate
from fbn_prune.select.methods import THRESHOLD_RANKING, ScoreInputs, check_selection, layer_scores, method_for
from fbn_prune.ship.card import render_card
from fbn_prune.ship.hub import card_license
from fbn_prune.texts import calibration as calib
from fbn_prune.texts.generated import GENERATED
from fbn_prune.texts.records import CalibrationText

log = logging.getLogger(__name__)


def _load(recipe: Recipe, model_spec: str | None = None):
    spec = model_spec or recipe.model
    if not spec:
        raise UserError("name a model: fbn-prune prune MODEL, or `model:` in the recipe.")
    source = resolve(spec)
    layout = layout_for(recipe.export.layout)
    model, tok = load_model(source, recipe.dtype, resolve_device(recipe.device), recipe.device_map, recipe.max_memory,
                            check_config=lambda config: layout.check_model_type(config.model_type))
    return source, model, tok


def _check_layout_fits(recipe: Recipe, model, adapter) -> None:
    """UserError (one line) when the recipe's layout cannot write this model: its type (also checked from the
    config before the weights load) or an original FFN width off the layout's step. Runs before any capture."""
    layout = layout_for(recipe.export.layout)
    layout.check_model_type(model.config.model_type)
    layout.check_original_widths(adapter.channel_widths(model))


def networks(recipe: Recipe, folder: str | Path, *, model_bundle=None, progress: bool = True,
             keep_capture: bool = False, option: str = "--out",
             text: CalibrationText | None = None) -> Networks:
    """Capture + decompose: write a networks artifact into ``folder`` (resumes an unfinished one).

    For methods that need no maps the artifact holds statistics only. A folder that already holds
    an artifact is resumed or extended only when it was made with the same settings (see
    networks.check_reuse; ``option`` names the flag that gave ``folder``, for the message). Before any work,
    ``folder`` is checked against the inputs (targets.check_disjoint) and locked for this run.
    ``text``: the calibration text already read by :func:`fbn_prune.texts.calibration.prepare` (read here,
    before the weights load, when None).
    """
    folder = Path(folder)
    spec = model_bundle[0].spec if model_bundle else recipe.model
    check_disjoint([Place(folder, "the networks folder (--out)")], input_places(recipe, spec))
    check_replaceable(real(folder), "the networks folder (--out)", (ARTIFACT_FILE, HOLDOUT_FILE))
    check_selection(recipe.selection)  # an unknown method fails before the weights load
    text = text or calib.prepare(recipe)  # a bad calibration source fails before the weights load
    w = world.join(resolve_device(recipe.device))  # after the checks every rank makes alike: rank 0 reports them
    with ExitStack() as held:
        if w.main:  # rank 0 holds the lock for every rank of the run
            held.enter_context(TargetLock(folder, "networks --out"))
        world.on_main(lambda: None)  # the others wait for it (and stop when rank 0 could not take it)
        held.enter_context(writing(folder))
        return build_networks(recipe, folder, model_bundle or _load(recipe), progress=progress,
                              keep_capture=keep_capture, option=option, text=text)


def text_places(source: str | None, data_dir: str | None, role: str) -> list[Place]:
    """The file a text source (calibration or healing text) reads, as a Place; none for generated,
    builtin:, hf: or a source that does not name an existing file (refused when the text is read)."""
    if not source or source == GENERATED:
        return []
    try:
        path = Path(calib.resolve_data_path(source, data_dir)).expanduser()
    except UserError:  # reported when the text is read
        return []
    return [Place(path, role, is_file=True)] if path.is_file() else []


def input_places(recipe: Recipe, model_spec: str | None, networks_folder: Path | None = None) -> list[Place]:
    """What a run reads, and so must not write over: the model's folder, the networks folder, the
    calibration file, the data folder and fbn_prune's cache (outputs may lie inside the last two)."""
    places = []
    if model_spec and (loc := input_location(model_spec)):
        places.append(Place(loc[0], loc[1], nest_ok=loc[2]))
    if networks_folder is not None:
        places.append(Place(networks_folder, "the networks folder"))
    c = recipe.calibration
    if not c.task:
        places += text_places(c.source, recipe.data_dir, "the calibration file")
    for data in (recipe.data_dir, os.environ.get("FBN_PRUNE_DATA")):  # tasks.DATA_ENV (that module imports lm_eval)
        if data and Path(data).expanduser().is_dir():
            places.append(Place(Path(data), "the data folder", nest_ok=True))
    places.append(Place(cache_dir(), "fbn_prune's cache folder", nest_ok=True))
    return places


def select(recipe: Recipe, artifact: Networks, *, overwrite: bool = False, model_bundle=None,
           timings: dict | None = None) -> Path:
    """Networks artifact + budget -> a verified checkpoint at ``recipe.out`` (no new ICA).

    Before any work the output folder is checked against the inputs and locked for this run."""
    if not recipe.out:
        raise UserError("name the output folder with --out.")
    check_selection(recipe.selection)  # an unknown method fails before the weights load
    spec = model_bundle[0].spec if model_bundle else recipe.model or artifact.meta.model
    inputs = input_places(recipe, spec, artifact.folder)
    if recipe.model and recipe.model != spec and (loc := input_location(recipe.model)):
        inputs.append(Place(loc[0], loc[1], nest_ok=loc[2]))
    check_disjoint([Place(recipe.out, "--out")], inputs)
    target = check_target(recipe.out, overwrite)
    with TargetLock(target, "--out"):
        check_target(recipe.out, overwrite)  # again: a run that held the lock until now may have written it
        sweep_leftovers(target)
        return _select_into(target, recipe, artifact, model_bundle=model_bundle, timings=timings)


def _select_into(target: Path, recipe: Recipe, artifact: Networks, *, model_bundle=None,
                 timings: dict | None = None) -> Path:
    """select() once ``target`` is checked and locked."""
    source, model, tok = model_bundle or _load(recipe, recipe.model or artifact.meta.model)  # --model, else recorded
    adapter = adapter_for(model.config)
    _check_layout_fits(recipe, model, adapter)  # before the scoring
    artifact.check_model(adapter.channel_widths(model), model_hash(source), source.spec)  # never a foreign artifact
    s = recipe.selection
    t0 = time.perf_counter()
    if s.compensate == "bias":
        _require_down_bias(model, adapter)  # before the scoring, not after it
    method = method_for(s.method)
    if method.needs.maps and artifact.meta.runs == 0:
        raise UserError(f"networks artifact {artifact.folder} holds no ICA maps; create it with --method fbn.")
    stats = artifact.stats() if method.needs.stats else None
    with onloaded(model):  # offloaded weights (device_map with CPU offload) are read on the CPU
        scores = layer_scores(method, model, adapter, stats=stats, maps_fn=artifact.maps if method.needs.maps else None,
                              gram_fn=artifact.gram, seed=recipe.seed, network_weight=s.network_weight,
                              ridge=s.ridge, cache=artifact.folder / "scores",
                              device=selection_device(recipe.decomposition.device))
    if s.threshold is not None:  # the paper's |z| rule ranks by membership, whichever fbn score was asked for
        scores = layer_scores(THRESHOLD_RANKING, model, adapter, maps_fn=artifact.maps)
    widths = [int(x.numel()) for x in scores]
    layout = recipe.export.layout
    budget = Budget(ratio=s.ratio, threshold=s.threshold, uniform=not layout_for(layout).per_layer,
                    protect_first=s.protect_first, protect_last=s.protect_last,
                    round_to=s.round_to, min_width=s.min_width)
    pruned_layers = budget.pruned_layers(len(widths))
    if s.ratio is not None and s.ratio_of == "params":
        ratio = channel_ratio_for_params(s.ratio, model.num_parameters(), adapter.params_per_channel(model.config),
                                         sum(widths[i] for i in pruned_layers))
        budget = Budget(**{**asdict(budget), "ratio": ratio})
    kept = select_channels(scores, budget)
    predictors, replace = None, None
    if s.compensate != "none":
        with onloaded(model):
            comp = compensate(model, adapter, kept, artifact, s.ridge, s.compensate)
        predictors, replace = comp.predictors, comp.replace
    t_select = time.perf_counter() - t0

    t1 = time.perf_counter()
    export_dtype = DTYPES[recipe.export.dtype or recipe.dtype]
    working = next(model.parameters()).dtype
    with onloaded(model):
        pruned = build_pruned(model, adapter, kept, layout, s.round_to, working, replace=replace)
    t_build = time.perf_counter() - t1
    info = build_provenance(recipe, source, model, pruned, adapter, kept, scores, artifact, budget,
                            uses_network_weight=method_for(recipe.selection.method).network_weight)
    info.timings = {**artifact.meta.timings, **(timings or {}), "select_s": round(t_select, 2), "build_s": round(t_build, 2)}

    files = {RECIPE_FILE: recipe_text(recipe)}
    if layout_for(layout).remote_code:
        files[MODELING_FILE] = modeling_source(model.config.model_type)
    holdout, fallback = artifact.holdout()
    docs = held_out_tokens(holdout, fallback, recipe.export.verify_tokens)

    def check(folder: str) -> dict:
        t = time.perf_counter()
        result = verify(model, adapter, kept, folder, layout, docs, pruned=pruned, saved_dtype=export_dtype,
                        predictors=predictors, load=load_kwargs(recipe.device_map, recipe.max_memory))
        info.timings["verify_s"] = round(time.perf_counter() - t, 2)
        return result

    t2 = time.perf_counter()
    write_checkpoint(pruned, tok, target, files=files, info=info, max_shard_size=recipe.export.max_shard_size,
                     verify=check, card=lambda i: render_card(i, license=card_license(i)), dtype=export_dtype)
    log.info("wrote %s in %.1f s", target, time.perf_counter() - t2)
    return target


def _share_scores(recipe: Recipe, artifact: Networks, model) -> None:
    """Under torch.distributed: each rank computes the scores of its layers (layer i on rank i % size) for a
    method whose per-layer scores are cached in the artifact (fbn's elimination), so rank 0 then finds
    them all computed; every rank waits for all."""
    s = recipe.selection
    method = method_for(s.method)
    if method.cached:
        adapter = adapter_for(model.config)
        x = ScoreInputs(model, adapter, stats=artifact.stats() if method.needs.stats else None,
                        maps_fn=artifact.maps if method.needs.maps else None, gram_fn=artifact.gram,
                        seed=recipe.seed, network_weight=s.network_weight, ridge=s.ridge,
                        cache=artifact.folder / "scores", device=selection_device(recipe.decomposition.device))
        with onloaded(model):
            for i in range(adapter.num_layers(model)):
                if world.current().mine(i):
                    method.score(x, i)
    world.barrier("waiting for the other ranks' layer scores")


def _require_down_bias(model, adapter) -> None:
    """UserError unless the down projection has a bias (needed by ``--compensate bias``)."""
    if getattr(adapter.down_module(model, 0), "bias", None) is None:
        raise UserError(f"--compensate bias needs a down-projection bias, which {model.config.model_type} does not "
                        "have (GPT-2, OPT and GPT-NeoX do); use lstsq or none.")


def prune(recipe: Recipe, *, overwrite: bool = False, progress: bool = True, networks_dir: str | None = None,
          keep_capture: bool = False) -> Path:
    """The whole job: capture, decompose, select, prune, export, verify.

    Before any work: the output folder (and ``networks_dir``) are checked against the inputs and
    each other, and locked for the run; leftovers of killed runs beside the output are removed.
    Without ``networks_dir`` the networks go to a cache folder keyed by model, calibration and
    settings (netcache.py): a killed run resumes there, and a successful one removes it.
    """
    start = time.perf_counter()
    if not recipe.out:
        raise UserError("name the output folder with --out (or `out:` in the recipe).")
    outputs = [Place(recipe.out, "--out")]
    if networks_dir:
        outputs.append(Place(Path(networks_dir), "--save-networks"))
    check_disjoint(outputs, input_places(recipe, recipe.model))
    target = check_target(recipe.out, overwrite)
    check_selection(recipe.selection)  # an unknown method fails before the weights load
    text = calib.prepare(recipe)  # every check of the calibration source runs before the weights load
    if networks_dir:
        check_replaceable(real(networks_dir), "--save-networks", (ARTIFACT_FILE, HOLDOUT_FILE))
    w = world.join(resolve_device(recipe.device))  # after the checks every rank makes alike: rank 0 reports them
    with ExitStack() as held:

        def take_locks() -> None:  # rank 0 holds the locks for every rank of the run
            held.enter_context(TargetLock(target, "--out"))
            check_target(recipe.out, overwrite)  # again: a run that held the lock until now may have written it
            sweep_leftovers(target)
            if networks_dir:
                held.enter_context(TargetLock(networks_dir, "--save-networks"))

        world.on_main(take_locks)
        bundle = _load(recipe)
        _check_layout_fits(recipe, bundle[1], adapter_for(bundle[1].config))  # before the capture and the ICA
        load_s = time.perf_counter() - start
        t0 = time.perf_counter()
        cal = load_calibration(recipe, bundle[1], bundle[2], text)
        cal_s = time.perf_counter() - t0
        if networks_dir:
            folder = Path(networks_dir)
        else:
            key = netcache.networks_key(recipe, bundle[0], bundle[1].config, cal, needs=needs(recipe),
                                        device=resolve_device(recipe.device))
            folder = netcache.folder_for(bundle[0], key)

            def take_cache() -> None:
                netcache.sweep()
                held.enter_context(TargetLock(folder, "--save-networks DIR"))
                folder.mkdir(parents=True, exist_ok=True)
                os.utime(folder)  # last used now: the sweep keeps it for a day

            world.on_main(take_cache)
            log.info("networks in %s (resumed if a killed run left them; removed when this run succeeds)", folder)
        with writing(folder):
            artifact = build_networks(recipe, folder, bundle, progress=progress, keep_capture=keep_capture,
                                      calibration=cal, calibration_s=round(cal_s, 2), option="--save-networks")
        if w.distributed:
            _share_scores(recipe, artifact, bundle[1])
            if not w.main:  # rank 0 selects, exports and verifies
                return None
        out = _select_into(target, recipe, artifact, model_bundle=bundle, timings={"load_s": round(load_s, 2)})
        add_total_time(out, time.perf_counter() - start)
        if not networks_dir:
            shutil.rmtree(folder, ignore_errors=True)
    return out


def recipe_text(recipe: Recipe) -> str:
    """recipe.yaml as written beside a checkpoint: the recipe as used, with the version that used it."""
    return "# recipe as used by fbn_prune " + __version__ + "\n" + yaml.safe_dump(recipe.to_dict(), sort_keys=False)
