"""Where a run writes: outputs never overlap inputs, one run per output folder, no leftovers.

- :func:`check_disjoint` refuses (UserError, exit 2) an output folder that is, contains or lies
  inside an input (the model folder, the folder of a .gguf file, the networks artifact, the
  calibration file, the data folder, fbn_prune's cache) or another output of the same run.
  Paths are compared after ``~``, relative parts and symbolic links are resolved.
- :func:`check_replaceable` lets ``--overwrite`` replace only an empty folder or an earlier
  fbn_prune output, never an arbitrary folder.
- :class:`TargetLock` is an exclusive ``flock`` on ``.NAME.lock`` beside the target, held for the
  whole run: a second run writing the same folder fails at once with the first one's pid.
- :func:`sweep_leftovers` removes, under that lock, the temporary folders (``.NAME.tmp-PID-*``,
  ``.NAME.old-PID-*``) that killed runs left beside the target.
- :func:`temp_prefix` names such a folder with the writer's pid, so liveness can be checked.

Locks and pid checks assume one host; a folder shared over NFS between machines relies on the
file system's flock support.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from fbn_prune.errors import UserError

log = logging.getLogger(__name__)

STALE_AGE_S = 24 * 3600  # a temporary folder untouched this long is stale even if its pid lives (pid reuse)


@dataclass(frozen=True)
class Place:
    """A path a run reads or writes, with what the user calls it (for the message)."""

    path: Path
    role: str  # e.g. "the input model folder", "--save-networks"
    is_file: bool = False
    nest_ok: bool = False  # an output may lie inside it (a data or cache folder), just not be or contain it


def real(path: str | os.PathLike) -> Path:
    """``path`` absolute, with ``~``, ``..`` and every symbolic link resolved (also for a path
    that does not exist yet: its existing part is resolved)."""
    return Path(path).expanduser().resolve()


def _overlap(a: Path, b: Path) -> str | None:
    """How ``a`` relates to ``b``: "is", "lies inside", "contains" or None."""
    if a == b:
        return "is"
    if b in a.parents:
        return "lies inside"
    if a in b.parents:
        return "contains"
    return None


def check_disjoint(outputs: list[Place], inputs: list[Place]) -> None:
    """UserError when an output is, contains or lies inside an input, or overlaps another output.

    Outputs are folders; inputs may be folders or files (a file can only be contained), and some
    folders (``nest_ok``) may hold outputs.
    """
    outs = [Place(real(p.path), p.role) for p in outputs]
    ins = [Place(real(p.path), p.role, p.is_file, p.nest_ok) for p in inputs]
    for i, out in enumerate(outs):
        for other in ins + outs[i + 1 :]:
            how = _overlap(out.path, other.path)
            if how is None or (other.is_file and how != "contains") or (other.nest_ok and how == "lies inside"):
                continue
            raise UserError(f"{out.role} {out.path} {how} {other.role} {other.path}, which writing there could "
                            "overwrite or change; choose another folder.")


def check_replaceable(target: Path, role: str, markers: tuple[str, ...]) -> None:
    """UserError unless ``target`` is missing, an empty folder, or holds one of ``markers`` (a
    file an earlier fbn_prune run writes there): --overwrite never replaces a foreign folder."""
    if not target.is_dir() or any((target / m).exists() for m in markers):
        return
    if any(target.iterdir()):
        raise UserError(f"{role} {target} is a folder fbn_prune did not write (no {markers[0]}) and is not empty; "
                        "fbn_prune writes into or replaces only its own outputs: choose a new or empty folder.")


def side_name(target: Path) -> str:
    """The NAME part of ``target``'s lock and temporary siblings: its name, or for a name so long that
    ``.NAME.tmp-PID-XXXXXXXX`` would pass the file system's 255-byte limit, a prefix and a hash of it."""
    name = target.name
    if len(name.encode()) <= SIDE_NAME_MAX:
        return name
    return name.encode()[:120].decode(errors="ignore") + "~" + hashlib.sha256(name.encode()).hexdigest()[:16]


def temp_prefix(target: Path, kind: str = "tmp") -> str:
    """The name prefix of a temporary sibling of ``target``: ``.NAME.KIND-PID-`` (mkdtemp adds a suffix)."""
    return f".{side_name(target)}.{kind}-{os.getpid()}-"


SIDE_NAME_MAX = 200  # bytes: room for ".", ".tmp-", a pid, "-" and mkdtemp's suffix within 255
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?:(?P<pid>\d+)-)?[^/]*$")


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(path: Path, pid: int | None, now: float | None = None) -> bool:
    """A leftover is stale when its writer is gone, unknown (older versions) or it is older than a day."""
    if pid is None or not pid_alive(pid):
        return True
    try:
        age = (now or time.time()) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_AGE_S


def sweep_leftovers(target: Path) -> list[Path]:
    """Remove the temporary siblings of ``target`` left by killed runs (call with the target's lock held,
    so no live run can own them). Returns what was removed."""
    removed = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        m = _LEFTOVER.match(entry.name)
        if not m or m["name"] != side_name(target):
            continue
        pid = int(m["pid"]) if m["pid"] else None
        if pid == os.getpid() or not is_stale(entry, pid):
            continue
        log.info("removing %s, left by an interrupted run", entry)
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


class TargetLock:
    """An exclusive lock on ``target`` for one run: ``flock`` on ``.NAME.lock`` beside it, holding the pid.

    The lock dies with the process (also on SIGKILL), so a killed run never blocks the next one;
    the lock file is removed on release. Use as a context manager.
    """

    def __init__(self, target: str | os.PathLike, role: str = "output folder"):
        self.target = real(target)
        self.role = role
        self.path = self.target.parent / f".{side_name(self.target)}.lock"
        self._fd: int | None = None

    def acquire(self) -> "TargetLock":
        self.target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise UserError(f"another fbn-prune run is writing {self.target} (pid {holder}); wait for it to "
                                f"finish or choose another {self.role}.") from None
            except OSError as e:  # a file system without flock: run unlocked rather than not at all
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                log.warning("cannot lock %s (%s); concurrent runs to it are not detected", self.path, e.strerror)
                break
            try:  # the previous holder may have removed the file between our open and flock: lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: nobody can have locked it meanwhile
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "TargetLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
