"""Run the independent (layer, run) decompositions of a networks artifact in parallel.

Each job reads its rows of the capture, runs ICA and writes its own map file atomically, so
jobs may finish in any order and an interrupted run resumes from the files present.
Workers are spawned, not forked (the parent holds a model, maybe CUDA state). With several
GPUs visible and ``--ica-device auto`` or ``cuda``, worker k owns GPU k mod count. A worker
exits by itself when its parent dies (a killed run leaves no orphans computing).

Results do not depend on the number of jobs or cores: every job has its own seed
(``job_seed``) and a CPU job always runs on exactly one thread (``one_thread``), in the
parent (``--jobs 1``) as in a worker. Multi-threaded BLAS/LAPACK sum in an order that depends
on the thread count, and FastICA can amplify such last-bit differences into different maps;
one thread per job makes the maps bitwise reproducible, and parallelism comes from jobs.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Iterator

import torch

from fbn_prune.errors import UserError
from fbn_prune._runtime.resources import cpu_cores

log = logging.getLogger(__name__)

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def resolve_ica_device(device: str) -> str:
    """``auto`` -> ``cuda`` when CUDA is available, else ``cpu``; other values are checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--ica-device {device} asked for, but CUDA is not available here; use --ica-device cpu.")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise UserError(f"--ica-device {device}: only {torch.cuda.device_count()} CUDA device(s) here.")
    return device


def resolve_jobs(jobs: int | str, device: str) -> int:
    """The number of parallel workers for ``--jobs`` (an int, or ``auto``: one per GPU under
    ``cuda``, one under ``cuda:N``, else one per CPU core)."""
    if jobs != "auto":
        return int(jobs)
    if device == "cuda":
        return max(1, torch.cuda.device_count())
    if device.startswith("cuda:"):
        return 1
    return cpu_cores()


@contextlib.contextmanager
def one_thread(enabled: bool = True) -> Iterator[None]:
    """torch and BLAS (numpy, scikit-learn) on one thread within the block, restored after.
    ``torch.set_num_threads`` is process-wide: not for concurrent use from several threads."""
    if not enabled:
        yield
        return
    from threadpoolctl import threadpool_limits

    from fbn_prune.decompose.ica import single_torch_thread

    with single_torch_thread(True), threadpool_limits(1):
        yield


def worker_devices(device: str, n: int) -> list[str]:
    """The ICA device of each of ``n`` workers: one GPU each when ``device`` is ``cuda`` and
    several are visible, else ``device`` for all."""
    count = torch.cuda.device_count() if device == "cuda" else 0
    if count > 1:
        return [f"cuda:{k % count}" for k in range(n)]
    return [device] * n


_device: str = "cpu"  # the worker's ICA device, set by _init_worker


def _init_worker(queue, parent: int) -> None:
    global _device
    _device = queue.get()
    torch.set_num_threads(1)
    if _device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(_device))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Exit at once when the parent process is gone (SIGKILL leaves workers otherwise running)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _work(job: tuple) -> tuple[int, int]:
    from fbn_prune.decompose.networks import decompose_job

    index, folder, layer, run, components, seed, ica = job
    decompose_job(index, folder, layer, run, components, seed, ica, _device)
    return layer, run


@contextlib.contextmanager
def _one_thread_env() -> Iterator[None]:
    """Thread-count variables the spawned workers inherit (read when their libraries load): one each."""
    old = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update({k: "1" for k in THREAD_VARS})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_parallel(jobs: list[tuple], n_workers: int, device: str) -> Iterator[tuple[int, int]]:
    """Run ``_work(job)`` for every job in ``n_workers`` spawned processes; yields (layer, run)
    as each finishes. The first failure cancels what has not started and is raised."""
    devices = worker_devices(device, n_workers)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for d in devices:
        queue.put(d)
    log.info("ICA: %d worker processes (%s)", n_workers, ", ".join(sorted(set(devices))))
    with _one_thread_env():
        pool = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(queue, os.getpid()))
        pending = {pool.submit(_work, job) for job in jobs}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
