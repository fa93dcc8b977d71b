"""The processes of one run under torch.distributed: rank, size, the collectives the pipeline uses, failures.

A run launched by ``torchrun`` or ``accelerate launch`` (``WORLD_SIZE`` > 1 in the environment) joins
the process group (:func:`join`); any other run is one process,
``World(0, 1)``, and every helper here is then the identity: the same code path, no process group.

Why several processes give the same bytes as one:

- :func:`ordered_sum` adds every rank's partial sums in rank order, and each rank holds a contiguous
  block of runs (:meth:`World.block`), so the float64 additions happen in run order, exactly as one
  process adds them (floating-point addition is not associative, so the order is the result);
- a collective that only moves data (broadcast, send) changes no bits.

Failures: a rank that raises records its one-line error in the launcher's key-value store and prints
it, prefixed with its rank; the others stop quietly. A rank that dies without a word (killed, out of
memory) is found by its process id (recorded at :func:`join`) by the ranks that survive it on the
same machine, which report it in one line (:func:`lost_message`).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterable, Iterator, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
T = TypeVar("T")

FAILED_KEY = "fbn_prune/failed/{rank}"


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, ``local_rank`` on its machine of
    ``local_size``."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the rank that writes the artifact's shared files, selects, exports and verifies."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def block(self, n: int) -> range:
        """This rank's contiguous share of ``n`` items (0..n-1): rank k gets [k*n//size, (k+1)*n//size)."""
        return range(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def mine(self, j: int) -> bool:
        """Static assignment by index: item ``j`` of a job list belongs to rank ``j % size``."""
        return j % self.size == self.rank

    def label(self) -> str:
        """``rank 1 of 2`` (empty for one process)."""
        return f"rank {self.rank} of {self.size}" if self.distributed else ""


_world = World()
_peers: list[tuple[str, int]] = []  # (host, pid) of every rank, in rank order


def current() -> World:
    """This process's World (one process until :func:`join` joined a process group)."""
    return _world


def launched() -> bool:
    """True when a launcher (torchrun, accelerate launch, Slurm with torchrun) started several processes."""
    return launched_size() > 1


def launched_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def join(device: str = "cpu", timeout_s: float = 1800.0) -> World:
    """Join the process group the launcher describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...), once. One
    process: World(0, 1). The group is gloo whatever the device: what the ranks exchange are CPU tensors (float64
    running sums, small records); the heavy work stays on each rank's device (with CUDA, GPU ``LOCAL_RANK``)."""
    global _world
    if _world.distributed or not launched():
        return _world
    cuda = str(device).startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    _world = World(dist.get_rank(), dist.get_world_size(), local_rank,
                   int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    peers: list = [None] * _world.size
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    _peers[:] = peers
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(leave)
    log.info("joined the process group as %s (gloo%s)", _world.label(), f", cuda:{local_rank}" if cuda else "")
    return _world


def echoes_shared_errors() -> bool:
    """Whether this process prints an error every rank meets alike (bad input, found before the ranks join):
    one process, rank 0, or any rank once joined (its errors may be its own)."""
    return _world.distributed or not launched() or os.environ.get("RANK", "0") == "0"


SHARED_ERROR_GRACE_S = 30.0


def wait_for_main_to_report() -> str:
    """A rank other than 0 that fails before the ranks join leaves the report to rank 0, which fails alike: it
    waits up to :data:`SHARED_ERROR_GRACE_S` seconds, because torchrun stops every rank as soon as one exits,
    and exiting first would stop rank 0 before it prints. Once rank 0 has exited, the launcher stops this rank
    (SIGTERM, the default action before :func:`join`). Returns this rank's label for the line it then prints
    itself: after the grace the error was its own."""
    time.sleep(SHARED_ERROR_GRACE_S)
    return f"rank {os.environ.get('RANK', '?')} of {launched_size()}"


def leave() -> None:
    """Leave the process group (after the last collective); one process: nothing."""
    global _world
    if not _world.distributed:
        return
    if dist.is_initialized():
        dist.destroy_process_group()
    _world = World()


# ---- collectives: the identity for one process ------------------------------------------------------


class Relayed(Exception):
    """Another rank failed and reported it itself (rank 0 in :func:`on_main`, or a rank that recorded its
    error); this rank stops quietly with ``exit_code``."""

    def __init__(self, exit_code: int):
        super().__init__(f"another rank failed (exit code {exit_code})")
        self.exit_code = exit_code


class RankLost(Exception):
    """A collective failed because another rank is gone: reported as one line naming it (see lost_message)."""

    exit_code = 1


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 only; its (picklable) result reaches every rank. When it raises, rank 0 raises it
    and the other ranks raise :class:`Relayed` (so the error is printed once)."""
    if not _world.distributed:
        return fn()
    box: list = [None]
    if _world.main:
        try:
            box = [(True, fn())]
        except BaseException as e:
            dist.broadcast_object_list([(False, getattr(e, "exit_code", 1))], src=0)
            raise
    with collective("waiting for rank 0"):
        dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise Relayed(value)
    return value


def barrier(what: str) -> None:
    """Wait until every rank is here (``what`` names the step for a failure's message)."""
    if not _world.distributed:
        return
    with collective(what):
        dist.barrier()


def all_ok(ok: bool, what: str) -> bool:
    """True on every rank when ``ok`` is True on every rank (a vote, e.g. "is this shard visible here")."""
    if not _world.distributed:
        return ok
    t = torch.tensor([0 if ok else 1], dtype=torch.int64)
    with collective(what):
        dist.all_reduce(t)
    return int(t) == 0


def ordered_sum(parts: Iterable[torch.Tensor], shape: tuple[int, ...], what: str) -> torch.Tensor | None:
    """The sum of every rank's ``parts`` (CPU float64 tensors of ``shape``), added in rank order and within
    a rank in the order given: with contiguous blocks of runs per rank that is run order, so the bits are
    those of one process adding every part in order. Passed along the ranks (rank k receives the running
    sum from k-1, adds its parts, sends it on; the last rank sends it to rank 0). Returns the sum on rank 0,
    None elsewhere. One process consumes ``parts`` lazily (one part in memory at a time)."""
    acc = torch.zeros(shape, dtype=torch.float64)
    size, rank = _world.size, _world.rank
    if size > 1:
        parts = list(parts)  # computed before waiting for the running sum: the ranks work in parallel
    if size > 1 and rank > 0:
        _recv(acc, rank - 1, what)
    for p in parts:
        acc += p
    if size == 1:
        return acc
    _send(acc, (rank + 1) % size, what)
    if rank == 0:
        _recv(acc, size - 1, what)
        return acc
    return None


def broadcast(value: T, what: str) -> T:
    """Rank 0's ``value`` (picklable) on every rank."""
    if not _world.distributed:
        return value
    box = [value if _world.main else None]
    with collective(what):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def _send(t: torch.Tensor, dst: int, what: str) -> None:
    with collective(what):
        dist.send(t, dst)


def _recv(t: torch.Tensor, src: int, what: str) -> None:
    with collective(what):
        dist.recv(t, src)


# ---- failures --------------------------------------------------------------------------------------


@contextmanager
def collective(what: str) -> Iterator[None]:
    """A collective step: when it fails because a rank is gone, :class:`RankLost` naming it, or
    :class:`Relayed` when that rank failed with its own (already printed) message."""
    try:
        yield
    except (Relayed, RankLost):
        raise
    except Exception as e:  # noqa: BLE001 - gloo/NCCL raise RuntimeError subclasses with transport details
        failed = failed_ranks()
        if failed:
            raise Relayed(1) from None
        raise RankLost(lost_message(what, str(e))) from None


def _store():
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - no store: no record
        return None


def record_failure(message: str) -> None:
    """Leave this rank's one-line error in the launcher's store, so the ranks it stops stay quiet."""
    if not _world.distributed:
        return
    store = _store()
    if store is not None:
        try:
            store.set(FAILED_KEY.format(rank=_world.rank), message)
        except Exception:  # noqa: BLE001 - the store is gone too: the others report a lost rank
            pass


def failed_ranks() -> list[int]:
    """The other ranks that recorded their own error (record_failure)."""
    store = _store()
    if store is None:
        return []
    out = []
    for r in range(_world.size):
        if r == _world.rank:
            continue
        try:
            if store.check([FAILED_KEY.format(rank=r)]):
                out.append(r)
        except Exception:  # noqa: BLE001
            return out
    return out


def _alive(host: str, pid: int) -> bool | None:
    """Is the process ``pid`` on ``host`` running? None when it is on another machine (cannot tell)."""
    if host != socket.gethostname():
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has died
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def lost_ranks() -> list[int]:
    """Ranks on this machine whose process is gone."""
    return [r for r, (host, pid) in enumerate(_peers) if r != _world.rank and _alive(host, pid) is False]


def lost_message(what: str, detail: str = "") -> str:
    """One line: which rank stopped, during what, and what to do."""
    lost = lost_ranks()
    if lost:
        who = ", ".join(f"rank {r}" for r in lost) + f" of {_world.size}"
        how = "stopped without an error of its own (killed, out of memory, or crashed)"
    else:
        who = "another rank" if not detail else f"another rank ({detail.splitlines()[0][:120]})"
        how = "stopped or cannot be reached"
    me = f" (seen by rank {_world.rank}, {what})" if _world.distributed else f" ({what})"
    return (f"{who} {how}{me}; the run is stopped. Rerun the same command: "
            "finished capture, Gram and ICA files are kept and resumed.")


class Stopped(BaseException):
    """The launcher stopped this rank (SIGTERM): torchrun does so when another rank failed."""


def _on_sigterm(signum, frame) -> None:
    raise Stopped()


def stopped_message() -> str | None:
    """The line for a rank the launcher stopped, or None when the rank that failed reported itself."""
    if failed_ranks():
        return None
    if lost_ranks():
        return lost_message("working")
    return "stopped by the launcher (SIGTERM); rerun the same command to resume from the finished files."
