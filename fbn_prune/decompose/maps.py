"""ICA for every (layer, run) of a capture, written into a networks artifact as one map file per job.

Each (layer, run) job reads its rows of the capture, runs ICA (ica.py) and writes its own map file
atomically, so jobs may finish in any order and an interrupted run resumes from the files present.
Jobs run one after the other in this process or in parallel worker processes (``--jobs``, see
jobs.py) with the same result: every job has its own seed (:func:`job_seed`) and a CPU job always
runs on exactly one thread (threads.one_thread), in the parent as in a worker. Under torch.distributed
job j of the (layer, run) list goes to rank j % size (static assignment; each rank may run its share in
its own worker processes), every rank reading the run's rows from the capture that holds them.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from fbn_prune._io.testhook import kill_point
from fbn_prune._runtime import world
from fbn_prune._runtime.devices import resolve_ica_device
from fbn_prune._runtime.threads import one_thread
from fbn_prune.capture.activations import CaptureSet
from fbn_prune.decompose import ica
from fbn_prune.decompose.jobs import run_parallel
from fbn_prune.decompose.networks import Networks, NetworksMeta, map_path, write_meta

log = logging.getLogger(__name__)


def decompose_all(index: CaptureSet, folder: str | Path, meta: NetworksMeta, progress: bool = True, *,
                  jobs: int = 1, device: str = "auto") -> Networks:
    """ICA for every (layer, run) of a capture, written into a networks artifact folder.

    Jobs whose map file exists are skipped (resume). ``meta.ica`` holds the keyword
    arguments of :func:`fbn_prune.decompose.ica.decompose` except the seed. ``jobs`` > 1 runs that
    many worker processes (see jobs.py); ``device`` is the ICA device (auto, cpu, cuda,
    cuda:N). Neither changes the result. Under torch.distributed this rank runs its share of the jobs,
    every rank waits for all, and rank 0 writes the metadata.
    """
    folder = Path(folder)
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    if world.current().main:
        for stale in (folder / "maps").glob("*.tmp"):  # half-written by a killed run
            stale.unlink(missing_ok=True)
    world.barrier("waiting for rank 0 to clear half-written maps")
    every = [(i, r) for i in range(len(index.widths)) for r in range(meta.runs)]
    share = [job for j, job in enumerate(every) if world.current().mine(j)]
    todo = [(i, r) for i, r in share if not map_path(folder, i, r).is_file()]
    if len(todo) < len(share):
        log.info("resuming: %d of %d decompositions already done", len(share) - len(todo), len(share))
    device = resolve_ica_device(device)
    workers = max(1, min(jobs, len(todo)))
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="decompose", unit="layer-run", disable=not progress)
    if workers == 1:
        for i, r in todo:
            decompose_job(index, folder, i, r, meta.components, meta.seed, meta.ica, device)
            kill_point("decompose")  # test hook (testhook.py): no-op unless a fault-injection test asks
            bar.update()
    else:
        specs = [(index, str(folder), i, r, meta.components, meta.seed, meta.ica) for i, r in todo]
        for _ in run_parallel(decompose_job, specs, workers, device, what="ICA"):
            bar.update()
    bar.close()
    world.barrier("waiting for the other ranks' ICA jobs")
    meta.timings["decompose_s"] = round(meta.timings.get("decompose_s", 0.0) + time.perf_counter() - start, 2)
    if world.current().main:
        write_meta(folder, meta)
    world.barrier("waiting for rank 0 to record the networks")
    return Networks(folder)


def decompose_job(index: CaptureSet, folder: str | Path, layer: int, run: int, components: int, seed: int,
                  settings: dict, device: str | None = None) -> None:
    """One job: ICA of run ``run``'s rows of layer ``layer``'s signal, saved atomically as its map file
    ({"maps": (components, width) float16}). ``settings``: ica.decompose's keywords but the seed
    (NetworksMeta.ica). On the CPU it runs on one thread (see the module docstring)."""
    with warnings.catch_warnings():  # the read-only memmap is copied (float32, z-scored) by decompose
        warnings.simplefilter("ignore", UserWarning)
        signal = torch.from_numpy(index.signal(layer, run))  # (run tokens, width) float16, not read yet
    with one_thread(device is None or not str(device).startswith("cuda")):  # bitwise the same whatever --jobs
        maps = ica.decompose(signal, components, seed=job_seed(seed, layer, run), device=device, **settings)
    target = map_path(Path(folder), layer, run)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    save_file({"maps": maps.to(torch.float16).contiguous()}, str(tmp))
    os.replace(tmp, target)


def job_seed(seed: int, layer: int, run: int) -> int:
    """A distinct, reproducible seed for each (layer, run) decomposition."""
    return (seed * 1_000_003 + layer * 1_009 + run) % (2**31 - 1)
