"""Write-then-rename: a file (or a folder) is either its old content or its new content, never half of either."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: Path, *, keep_mode: bool = True) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write; renamed over ``path`` when the block ends
    without error, removed when it raises.

    The new file gets ``path``'s permissions when ``keep_mode`` and ``path`` exists, else the ordinary
    ones (0o666 less the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        keep = keep_mode and path.exists()
        os.chmod(tmp, (path.stat().st_mode & 0o777) if keep else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, then rename it over ``path``."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_dir(final: Path, fill: Callable[[Path], None], *, prefix: str, keep_existing: bool = True,
               mode: int | None = None) -> None:
    """Fill a temporary folder beside ``final`` with ``fill(tmp)``, then rename it to ``final``.

    ``keep_existing``: when the rename fails because another process made ``final`` meanwhile, keep
    theirs (a cache folder named by its content); else the error propagates. ``mode``: the folder's
    permission bits before the rename (``mkdtemp`` makes it 0o700). The temporary folder never stays.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    try:
        fill(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        try:
            tmp.rename(final)
        except OSError:
            if not (keep_existing and final.is_dir()):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
