"""Thread counts of torch and BLAS: one thread where results must not depend on the thread count.

Multi-threaded BLAS/LAPACK sum in an order that depends on the thread count, and FastICA can amplify
such last-bit differences into different maps; one thread per decomposition job makes its maps
bitwise reproducible (see decompose/jobs.py). ``torch.set_num_threads`` is process-wide: none of
these helpers is for concurrent use from several threads.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from threadpoolctl import threadpool_limits

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Environment variables that set the thread count of OpenMP, MKL and OpenBLAS when they load."""


@contextlib.contextmanager
def single_torch_thread(enabled: bool) -> Iterator[None]:
    """Run torch CPU ops on one intra-op thread (restored afterwards): FastICA's small
    (k x k)(k x n) products gain little from threads and suffer badly from oversubscription."""
    if not enabled:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def one_thread(enabled: bool = True) -> Iterator[None]:
    """torch and BLAS (numpy, scikit-learn) on one thread within the block, restored after."""
    if not enabled:
        yield
        return
    with single_torch_thread(True), threadpool_limits(1):
        yield


@contextlib.contextmanager
def one_thread_env() -> Iterator[None]:
    """THREAD_VARS set to 1 within the block, restored after: processes spawned inside inherit them
    (their libraries read them when they load)."""
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


def lapack_threads(device: str | torch.device) -> contextlib.AbstractContextManager:
    """One thread for a LAPACK factorization or solve on the CPU (no change on a GPU).

    Multi-threaded LAPACK (Cholesky, LU solve) gives other last bits with another thread count (measured:
    ``torch.linalg.solve`` of a 1,536 x 1,536 system differs by 2e-14 between 1 and 2 threads, while the
    matrix products do not differ), so selection and compensation run their factorizations on one thread:
    a checkpoint's bytes do not depend on the cores, or on torchrun's one thread per rank."""
    return single_torch_thread(torch.device(device).type == "cpu")

