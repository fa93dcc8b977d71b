"""Run independent jobs in parallel worker processes: a generic runner, given a worker function.

The caller passes a picklable top-level function ``worker(*job, device)`` and its jobs (tuples of
picklable arguments); each worker process calls it for the jobs it is given and the runner yields
the results as the jobs finish, in any order. networks' decomposition (decompose/maps.py) is the user:
each job reads its rows of the capture, runs ICA and writes its own map file atomically, so an
interrupted run resumes from the files present.

Workers are spawned, not forked (the parent holds a model, maybe CUDA state). With several GPUs
visible and ``device`` ``cuda``, worker k owns GPU k mod count. A worker exits by itself when its
parent dies (a killed run leaves no orphans computing). Every worker starts with one thread per
library (threads.one_thread_env, torch.set_num_threads(1)), so results do not depend on the number
of jobs or cores.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator

import torch

from fbn_prune._runtime.resources import cpu_cores
from fbn_prune._runtime.threads import one_thread_env

log = logging.getLogger(__name__)


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


def worker_devices(device: str, n: int) -> list[str]:
    """The device of each of ``n`` workers: one GPU each when ``device`` is ``cuda`` and
    several are visible, else ``device`` for all."""
    count = torch.cuda.device_count() if device == "cuda" else 0
    if count > 1:
        return [f"cuda:{k % count}" for k in range(n)]
    return [device] * n


_device: str = "cpu"  # the worker's device, set by _init_worker


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


def _work(worker: Callable[..., Any], job: tuple) -> Any:
    return worker(*job, _device)


def run_parallel(worker: Callable[..., Any], jobs: list[tuple], n_workers: int, device: str,
                 what: str = "jobs") -> Iterator[Any]:
    """Run ``worker(*job, device_k)`` for every job in ``n_workers`` spawned processes (worker k on
    ``device_k``, see worker_devices); yields each call's result as it finishes. ``worker`` must be a
    top-level function (it is pickled by name); ``what`` names the jobs in the log. The first failure
    cancels what has not started and is raised."""
    devices = worker_devices(device, n_workers)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for d in devices:
        queue.put(d)
    log.info("%s: %d worker processes (%s)", what, n_workers, ", ".join(sorted(set(devices))))
    with one_thread_env():
        pool = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(queue, os.getpid()))
        pending = {pool.submit(_work, worker, job) for job in jobs}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
