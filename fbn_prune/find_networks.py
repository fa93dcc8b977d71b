"""Find a model's functional networks into an artifact folder: calibration, capture, statistics, Gram, ICA.

The networks stage of the pipeline (fbn_prune/pipeline.py checks and locks the folder, then calls
:func:`build`). Under torch.distributed (see fbn_prune/_runtime/world.py) every rank runs :func:`build`:
each captures a contiguous block of the calibration runs into its own ``capture/rank{k}-of-{n}`` folder,
the statistics and Gram matrices are summed along the ranks in run order, the (layer, run) ICA jobs are
shared by index, and rank 0 writes the artifact's shared files. One process is the case of one rank.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

from safetensors.torch import save_file
from tqdm.auto import tqdm

from fbn_prune import __version__
from fbn_prune._io.atomic import replacing
from fbn_prune._runtime import resources as res
from fbn_prune._runtime import sizes, world
from fbn_prune._runtime.devices import gram_device, resolve_ica_device
from fbn_prune.capture.activations import CaptureIndex, CaptureSet, capture, total_stats
from fbn_prune.config.recipe import Recipe
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
from fbn_prune.errors import UserError
from fbn_prune.export.checkpoint import RECIPE_FILE
from fbn_prune.models.arch import Adapter, adapter_for
from fbn_prune.models.placement import input_device, resident_bytes
from fbn_prune.plan import model_shape
from fbn_prune.select.methods import method_for
from fbn_prune.texts import calibration as calib
from fbn_prune.texts.calibration import CalibrationSet
from fbn_prune.texts.records import CalibrationText

log = logging.getLogger(__name__)


def needs(recipe: Recipe) -> dict[str, bool]:
    """Which parts of a networks artifact the selection method needs: ICA maps, and a capture
    (statistics, Gram matrices) at all."""
    s = recipe.selection
    needs = method_for(s.method).needs
    return {"maps": needs.maps, "capture": needs.maps or needs.stats or needs.gram or s.compensate != "none"}


def load_calibration(recipe: Recipe, model, tok, text: calib.CalibrationText | None) -> CalibrationSet:
    """calib.load, then the check that every run holds enough tokens for the ICA the method needs."""
    cal = calib.load(recipe, model, tok, text)
    if method_for(recipe.selection.method).needs.maps:
        calib.check_run_tokens(cal, recipe.decomposition.components)
    return cal


def build(recipe: Recipe, folder: Path, model_bundle, *, progress: bool = True,
                 keep_capture: bool = False, calibration: CalibrationSet | None = None,
                 calibration_s: float = 0.0, option: str = "--out",
                 text: CalibrationText | None = None) -> Networks:
    """networks() once ``folder`` is checked and locked; ``calibration`` when the caller has loaded it."""
    source, model, tok = model_bundle
    adapter = adapter_for(model.config)
    d = recipe.decomposition
    gram_device(d.device)  # an unusable --ica-device fails here, not after the capture
    settings = network_settings(recipe, source, model, adapter)
    exists, recorded = _existing(folder, option)
    if exists:  # everything but the calibration is compared before the calibration is read
        check_reuse(folder, recorded, settings, option)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cal = calibration or load_calibration(recipe, model, tok, text)
    t_cal = calibration_s if calibration else time.perf_counter() - t0
    settings = settings.with_calibration(cal.sha256)
    if exists:
        check_reuse(folder, recorded, settings, option)
    world.barrier("checking the networks folder")  # every rank has read it before rank 0 writes into it
    needs_maps = needs(recipe)["maps"]
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
    needs_stats = needs(recipe)["capture"]

    def record() -> bool:  # rank 0: the settings are recorded before any work, so only they resume this folder
        write_meta(folder, meta)
        (folder / HOLDOUT_FILE).write_text(json.dumps({"holdout": cal.holdout, "fallback": cal.runs[0][:4]}))
        recipe.save(folder / RECIPE_FILE)
        return _complete(folder, meta, needs_maps, needs_stats)

    if world.on_main(record):
        log.info("networks artifact %s is already complete", folder)
        return Networks(folder)
    t1 = time.perf_counter()
    index, shards = _capture_share(recipe, folder, meta, cal, model, adapter, tok, progress, resume=exists)
    meta.timings["capture_s"] = round(time.perf_counter() - t1, 2)
    stats = total_stats(index, cal.n_tokens)
    if stats is not None:  # rank 0
        with replacing(folder / "stats.safetensors") as tmp:
            save_file(stats, str(tmp))
        write_meta(folder, meta)
    t2 = time.perf_counter()
    write_grams(index, folder, cal.n_tokens, progress, device=gram_device(d.device))
    meta.timings["gram_s"] = round(time.perf_counter() - t2, 2)
    if needs_maps:  # writes the final metadata itself
        decompose_all(shards, folder, meta, progress, jobs=_ica_jobs(recipe, shards), device=d.device)
    else:
        if world.current().main:
            write_meta(folder, meta)
        world.barrier("waiting for rank 0 to record the networks")
    if not keep_capture and world.current().main:
        shutil.rmtree(folder / "capture", ignore_errors=True)
    return Networks(folder)


def capture_folder(folder: Path, w: world.World) -> Path:
    """Where this rank's capture goes: ``capture/`` for one process, ``capture/rank{k}-of-{n}`` under
    torch.distributed (in the networks folder, which every rank must see)."""
    return folder / "capture" / f"rank{w.rank}-of-{w.size}" if w.distributed else folder / "capture"


def _capture_share(recipe: Recipe, folder: Path, meta: NetworksMeta, cal: CalibrationSet, model, adapter: Adapter,
                   tok, progress: bool, resume: bool) -> tuple[CaptureIndex, CaptureSet]:
    """This rank's capture (its contiguous block of runs; every run for one process), resumed when an
    interrupted run left it, and every rank's captures as one CaptureSet. UserError (on every rank), before
    anything is captured, when the ranks do not see each other's files: the networks folder is not shared."""
    w = world.current()
    runs = list(w.block(len(cal.runs)))
    cap_dir = capture_folder(folder, w)
    everyone = [capture_folder(folder, world.World(k, w.size)) for k in range(w.size)]
    if w.distributed:
        cap_dir.mkdir(parents=True, exist_ok=True)
        (cap_dir / ".here").touch()
        world.barrier("checking that every rank sees the networks folder")
        _all_visible([f / ".here" for f in everyone], folder)
    done = cap_dir / "capture.json"
    if resume and done.is_file() and "runs" in json.loads(done.read_text()):
        index = CaptureIndex.open(cap_dir)  # an interrupted run left its capture (same settings): resume from it
    else:
        for stale in cap_dir.glob("layer_*.f16"):
            stale.unlink()
        _check_disk(folder, meta, sum(len(d) for r in runs for d in cal.runs[r]), progress)
        batch = capture_batch(recipe, model, adapter)
        index = capture(model, adapter, cal, cap_dir, batch, tok.pad_token_id or 0, progress, runs=runs)
    world.barrier("waiting for the other ranks' capture")
    _all_visible([f / "capture.json" for f in everyone], folder)
    return index, CaptureSet([CaptureIndex.open(f) for f in everyone])


def _all_visible(files: list[Path], folder: Path) -> None:
    """UserError on every rank unless every rank sees all ``files`` (one per rank)."""
    if not world.all_ok(all(f.is_file() for f in files), "checking that every rank sees every rank's files"):
        raise UserError(f"the ranks do not all see each other's files in {folder}: under torchrun on several "
                        "machines the networks folder must be on a filesystem every rank shares (--save-networks "
                        "DIR, or FBN_PRUNE_CACHE for the networks cache).")


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


def capture_batch(recipe: Recipe, model, adapter) -> int:
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


def _ica_jobs(recipe: Recipe, index: CaptureSet) -> int:
    """Parallel ICA workers of this rank: decomposition.jobs (auto: one per GPU, or one per CPU core,
    shared by the ranks on this machine), fewer when calibration.max_ram cannot hold that many CPU working sets."""
    d = recipe.decomposition
    device = resolve_ica_device(d.device)
    jobs = resolve_jobs(d.jobs, device)
    if d.jobs == "auto" and device == "cpu":
        jobs = max(1, jobs // world.current().local_size)
    if recipe.calibration.max_ram and jobs > 1 and device == "cpu":
        tokens = max(index.run_tokens(r) for s in index.shards for r in s.held)
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
