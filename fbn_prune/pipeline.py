"""The library entry points behind the command line: networks, select, prune.

    model + calibration --networks()--> networks artifact --select()--> verified checkpoint
                        `------------------- prune() = both -------------------'
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from fbn_prune import __version__
from fbn_prune._io.targets import Place, TargetLock, check_disjoint, check_replaceable, real, sweep_leftovers
from fbn_prune._runtime import resources as res
from fbn_prune._runtime import sizes
from fbn_prune._runtime.cache import cache_dir
from fbn_prune._runtime.devices import gram_device, resolve_device, resolve_ica_device, selection_device
from fbn_prune._runtime.dtypes import DTYPES
from fbn_prune.capture.activations import CaptureIndex, capture
from fbn_prune.config.layouts import layout_for
from fbn_prune.config.recipe import Recipe
from fbn_prune.decompose import cache as netcache
from fbn_prune.decompose.gram import write_grams
from fbn_prune.decompose.jobs import resolve_jobs
from fbn_prune.decompose.maps import decompose_all
from fbn_prune.decompose.networks import (
    ARTIFACT_FILE,
    HOLDOUT_FILE,
    Networks,
    NetworksMeta,
    gram_path,
    map_path,
    read_settings,
    write_meta,
)
from fbn_prune.decompose.settings import check_reuse, network_settings
from fbn_prune.errors import UserError, writing
from fbn_prune.export.checkpoint import RECIPE_FILE, check_target, write_checkpoint
from fbn_prune.export.provenance import add_total_time, build_provenance
from fbn_prune.export.surgery import MODELING_FILE, build_pruned, modeling_source
from fbn_prune.export.verify import held_out_tokens, verify
from fbn_prune.models.arch import adapter_for
from fbn_prune.models.identity import model_hash
from fbn_prune.models.placement import input_device, load_kwargs, onloaded, resident_bytes
from fbn_prune.models.sources import input_location, load_model, resolve
from fbn_prune.plan import model_shape
from fbn_prune.select.budget import Budget, channel_ratio_for_params
from fbn_prune.select.budget import select as select_channels
from fbn_prune.select.compensate import compensate
from fbn_prune.select.methods import THRESHOLD_RANKING, check_selection, layer_scores, method_for
from fbn_prune.ship.card import render_card
from fbn_prune.ship.hub import card_license
from fbn_prune.texts import calibration as calib
from fbn_prune.texts.calibration import CalibrationSet
from fbn_prune.texts.generated import GENERATED
from fbn_prune.texts.records import CalibrationText

log = logging.getLogger(__name__)




def _load(recipe: Recipe, model_spec: str | None = None):
    spec = model_spec or recipe.model
    if not spec:
        raise UserError("name a model: fbn-prune prune MODEL, or `model:` in the recipe.")
    source = resolve(spec)
    model, tok = load_model(source, recipe.dtype, resolve_device(recipe.device), recipe.device_map, recipe.max_memory)
    return source, model, tok


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
    with TargetLock(folder, "networks --out"), writing(folder):
        return _networks_in(recipe, folder, model_bundle=model_bundle, progress=progress, keep_capture=keep_capture,
                            option=option, text=text)


def input_places(recipe: Recipe, model_spec: str | None, networks_folder: Path | None = None) -> list[Place]:
    """What a run reads, and so must not write over: the model's folder, the networks folder, the
    calibration file, the data folder and fbn_prune's cache (outputs may lie inside the last two)."""
    places = []
    if model_spec and (loc := input_location(model_spec)):
        places.append(Place(loc[0], loc[1], nest_ok=loc[2]))
    if networks_folder is not None:
        places.append(Place(networks_folder, "the networks folder"))
    c = recipe.calibration
    if c.source and c.source != GENERATED and not c.task:
        try:
            path = Path(calib.resolve_data_path(c.source, recipe.data_dir)).expanduser()
        except UserError:  # reported when the calibration is read
            path = None
        if path is not None and path.is_file():  # anything else is refused when the calibration is read
            places.append(Place(path, "the calibration file", is_file=True))
    for data in (recipe.data_dir, os.environ.get("FBN_PRUNE_DATA")):  # tasks.DATA_ENV (that module imports lm_eval)
        if data and Path(data).expanduser().is_dir():
            places.append(Place(Path(data), "the data folder", nest_ok=True))
    places.append(Place(cache_dir(), "fbn_prune's cache folder", nest_ok=True))
    return places


def _needs(recipe: Recipe) -> dict[str, bool]:
    """Which parts of a networks artifact the selection method needs: ICA maps, and a capture
    (statistics, Gram matrices) at all."""
    s = recipe.selection
    needs = method_for(s.method).needs
    return {"maps": needs.maps, "capture": needs.maps or needs.stats or needs.gram or s.compensate != "none"}


def _calibration(recipe: Recipe, model, tok, text: calib.CalibrationText | None) -> CalibrationSet:
    """calib.load, then the check that every run holds enough tokens for the ICA the method needs."""
    cal = calib.load(recipe, model, tok, text)
    if method_for(recipe.selection.method).needs.maps:
        calib.check_run_tokens(cal, recipe.decomposition.components)
    return cal


def _networks_in(recipe: Recipe, folder: Path, *, model_bundle=None, progress: bool = True,
                 keep_capture: bool = False, calibration: CalibrationSet | None = None,
                 calibration_s: float = 0.0, option: str = "--out",
                 text: CalibrationText | None = None) -> Networks:
    """networks() once ``folder`` is checked and locked; ``calibration`` when the caller has loaded it."""
    source, model, tok = model_bundle or _load(recipe)
    adapter = adapter_for(model.config)
    d = recipe.decomposition
    gram_device(d.device)  # an unusable --ica-device fails here, not after the capture
    settings = network_settings(recipe, source, model, adapter)
    exists, recorded = _existing(folder, option)
    if exists:  # everything but the calibration is compared before the calibration is read
        check_reuse(folder, recorded, settings, option)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cal = calibration or _calibration(recipe, model, tok, text)
    t_cal = calibration_s if calibration else time.perf_counter() - t0
    settings = settings.with_calibration(cal.sha256)
    if exists:
        check_reuse(folder, recorded, settings, option)
    needs_maps = _needs(recipe)["maps"]
    earlier = Networks(folder) if exists else None
    has_maps = earlier is not None and earlier.meta.runs > 0
    meta = NetworksMeta(
        model=source.spec, model_type=model.config.model_type,
        widths=adapter.channel_widths(model),
        runs=d.runs if needs_maps or has_maps else 0, components=d.components if needs_maps or has_maps else 0,
        seed=recipe.seed,
        ica={"fun": d.fun, "max_iter": d.max_iter, "tol": d.tol, "engine": d.engine},
        calibration={"source": cal.source, "sha256": cal.sha256, "documents": sum(len(r) for r in cal.runs),
                     "tokens": cal.n_tokens, "seq_len": recipe.calibration.seq_len, "runs": d.runs,
                     **{k: v for k, v in (("license", cal.license), ("attribution", cal.attribution)) if v}},
        timings={"calibration_s": round(t_cal, 2)}, fbn_prune_version=__version__, settings=settings,
    )
    if earlier is not None:
        meta.timings = {**earlier.meta.timings, **meta.timings}
    write_meta(folder, meta)  # first: the settings are recorded before any work, so only they resume this folder
    (folder / HOLDOUT_FILE).write_text(json.dumps({"holdout": cal.holdout, "fallback": cal.runs[0][:4]}))
    recipe.save(folder / RECIPE_FILE)
    cap_dir = folder / "capture"
    needs_stats = _needs(recipe)["capture"]
    if _complete(folder, meta, needs_maps, needs_stats):
        log.info("networks artifact %s is already complete", folder)
        return Networks(folder)
    t1 = time.perf_counter()
    if exists and (cap_dir / "capture.json").is_file():
        index = CaptureIndex.open(cap_dir)  # an interrupted run left its capture (same settings): resume from it
    else:
        _check_disk(folder, meta, cal.n_tokens, progress)
        batch = _capture_batch(recipe, model, adapter)
        index = capture(model, adapter, cal, cap_dir, batch, tok.pad_token_id or 0, progress)
    meta.timings["capture_s"] = round(time.perf_counter() - t1, 2)
    shutil.copyfile(cap_dir / "stats.safetensors", folder / "stats.safetensors")
    write_meta(folder, meta)
    t2 = time.perf_counter()
    write_grams(index, folder, progress, device=gram_device(d.device))
    meta.timings["gram_s"] = round(time.perf_counter() - t2, 2)
    if needs_maps:  # writes the final metadata itself
        decompose_all(index, folder, meta, progress, jobs=_ica_jobs(recipe, index), device=d.device)
    else:
        write_meta(folder, meta)
    if not keep_capture:
        shutil.rmtree(cap_dir, ignore_errors=True)
    return Networks(folder)


def _existing(folder: Path, option: str):
    """(does ``folder`` hold an artifact, its recorded settings). UserError for a file, or a non-empty folder that
    is not an artifact (fbn_prune writes its networks into a new or empty folder only)."""
    if not folder.exists():
        return False, None
    if not folder.is_dir():
        raise UserError(f"{option} {folder} is a file; name a new or empty folder for the networks.")
    exists, recorded = read_settings(folder)
    if not exists and any(folder.iterdir()):
        raise UserError(f"{option} {folder} is not empty and holds no {ARTIFACT_FILE}: name a new or empty folder "
                        "for the networks.")
    return exists, recorded


def _check_disk(folder: Path, meta: NetworksMeta, tokens: int, progress: bool) -> None:
    """Report the disk the capture, Gram matrices and maps will take; refuse (exit 2) when it is not free."""
    disk = (res.capture_disk(meta.widths, tokens), res.gram_disk(meta.widths),
            res.maps_disk(meta.widths, meta.runs, meta.components))
    free = res.free_disk(folder)
    text = (f"disk: capture {sizes.gb(disk[0])} ({tokens:,} tokens x {sum(meta.widths):,} channels x 2 bytes) + Gram "
            f"{sizes.gb(disk[1])} + maps {sizes.gb(disk[2])} = {sizes.gb(sum(disk))} in {folder} ({sizes.gb(free)} free)")
    log.info(text)
    if progress:
        tqdm.write(text, file=sys.stderr)
    if sum(disk) > free:
        raise UserError(f"the networks need {sizes.gb(sum(disk))} of disk in {folder} but {sizes.gb(free)} is free; "
                        "free space, use fewer --calib-samples or a shorter --seq-len, or put them elsewhere "
                        "(--save-networks DIR, or FBN_PRUNE_CACHE for the networks cache).")


def _capture_batch(recipe: Recipe, model, adapter) -> int:
    """Documents per forward pass: calibration.batch_size, lowered to fit calibration.max_ram (--max-ram).

    The budget counts this process's resident memory (runtime, weights in host memory) plus the
    batch's activations; UserError when not even one document fits.
    """
    c = recipe.calibration
    if c.max_ram is None:
        return c.batch_size
    shape = model_shape(model.config, adapter.channel_widths(model), model.num_parameters(), recipe.dtype)
    per_token = res.capture_bytes_per_token(shape, c.seq_len, host_model=input_device(model).type == "cpu")
    batch = res.batch_under_budget(sizes.parse_size(c.max_ram), resident_bytes(model), per_token, c.seq_len, c.batch_size)
    if batch < c.batch_size:
        log.info("--max-ram %s: capturing %d documents per batch instead of %d", c.max_ram, batch, c.batch_size)
    return batch


def _ica_jobs(recipe: Recipe, index: CaptureIndex) -> int:
    """Parallel ICA workers: decomposition.jobs (auto: one per GPU, or one per CPU core), fewer when
    calibration.max_ram cannot hold that many CPU working sets."""
    d = recipe.decomposition
    device = resolve_ica_device(d.device)
    jobs = resolve_jobs(d.jobs, device)
    if recipe.calibration.max_ram and jobs > 1 and device == "cpu":
        tokens = max(b - a for a, b in zip(index.run_offsets, index.run_offsets[1:]))
        per_job = res.ica_job_bytes(tokens, max(index.widths), d.components) + res.RUNTIME_BYTES
        capped = res.jobs_under_budget(jobs, sizes.parse_size(recipe.calibration.max_ram), res.current_rss(), per_job)
        if capped < jobs:
            log.info("--max-ram %s: %d parallel ICA jobs instead of %d", recipe.calibration.max_ram, capped, jobs)
        jobs = capped
    return jobs


def _complete(folder: Path, meta: NetworksMeta, needs_maps: bool, needs_stats: bool) -> bool:
    """True when ``folder`` (already checked to hold these settings) has every file this run needs."""
    maps = not needs_maps or all(map_path(folder, i, r).is_file()
                                 for i in range(len(meta.widths)) for r in range(meta.runs))
    stats = not (needs_maps or needs_stats) or ((folder / "stats.safetensors").is_file() and all(
        gram_path(folder, i).is_file() for i in range(len(meta.widths))))
    return maps and stats


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
    with ExitStack() as held:
        held.enter_context(TargetLock(target, "--out"))
        check_target(recipe.out, overwrite)  # again: a run that held the lock until now may have written it
        sweep_leftovers(target)
        if networks_dir:
            held.enter_context(TargetLock(networks_dir, "--save-networks"))
        bundle = _load(recipe)
        load_s = time.perf_counter() - start
        t0 = time.perf_counter()
        cal = _calibration(recipe, bundle[1], bundle[2], text)
        cal_s = time.perf_counter() - t0
        if networks_dir:
            folder = Path(networks_dir)
        else:
            netcache.sweep()
            key = netcache.networks_key(recipe, bundle[0], bundle[1].config, cal, needs=_needs(recipe),
                                        device=resolve_device(recipe.device))
            folder = netcache.folder_for(bundle[0], key)
            held.enter_context(TargetLock(folder, "--save-networks DIR"))
            folder.mkdir(parents=True, exist_ok=True)
            os.utime(folder)  # last used now: the sweep keeps it for a day
            log.info("networks in %s (resumed if a killed run left them; removed when this run succeeds)", folder)
        with writing(folder):
            artifact = _networks_in(recipe, folder, model_bundle=bundle, progress=progress, keep_capture=keep_capture,
                                    calibration=cal, calibration_s=round(cal_s, 2), option="--save-networks")
        out = _select_into(target, recipe, artifact, model_bundle=bundle, timings={"load_s": round(load_s, 2)})
        add_total_time(out, time.perf_counter() - start)
        if not networks_dir:
            shutil.rmtree(folder, ignore_errors=True)
    return out


def recipe_text(recipe: Recipe) -> str:
    """recipe.yaml as written beside a checkpoint: the recipe as used, with the version that used it."""
    return "# recipe as used by fbn_prune " + __version__ + "\n" + yaml.safe_dump(recipe.to_dict(), sort_keys=False)
