"""Checking the GGUF output file and dtype before any work, without the gguf package.

The GGUF file ``fbn-prune export-gguf`` and ``prune --to-gguf`` may write, checked before any work (no
``gguf`` package needed): an existing file only with overwrite and only when it is a GGUF, never a folder,
never in an unwritable place; and the stored weight type.
"""

from __future__ import annotations

import os
from pathlib import Path

from fbn_prune.errors import UserError

DTYPES = ("f32", "f16", "q8_0")


def check_output(out: str | os.PathLike, overwrite: bool) -> Path:
    """Validate the GGUF target before any work: refuse an existing file without overwrite, a folder,
    an unwritable parent."""
    target = Path(out).expanduser().resolve()
    if target.is_dir():
        raise UserError(f"{out} is a folder; name the .gguf file to write.")
    if target.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it.")
    if target.exists() and not _is_gguf(target):
        raise UserError(f"{out} exists and is not a GGUF file; --overwrite replaces only an earlier GGUF file.")
    probe = target.parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {target.parent}: permission denied.")
    return target


def _is_gguf(path: Path) -> bool:
    """Whether ``path`` is a GGUF file (its first four bytes are the magic ``GGUF``)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise UserError(f"GGUF dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    return dtype
