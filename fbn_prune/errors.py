"""Errors a user can cause, and the exit codes the command line maps them to."""

import contextlib
import errno
import os
import re
from typing import Iterator

from safetensors import SafetensorError

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_VERIFY_FAILED = 4


class UserError(Exception):
    """Bad input: reported as one sentence, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class VerificationError(Exception):
    """The exported checkpoint does not reproduce the masked original: exit code 4."""

    exit_code = EXIT_VERIFY_FAILED


class GateFailed(Exception):
    """The pruned model lost more than the evaluation gate allows (--max-drop / --min-retention): exit code 3."""

    exit_code = EXIT_GATE_FAILED


# ---- file-system failures a user can cause (full disk, size limit, permissions) ------------------

# errno -> (what happened, the fix); the command line reports these as one line, exit code 2
DISK_ERRORS = {
    errno.ENOSPC: ("no space left on the device",
                   "free space, or write elsewhere (--out, --save-networks, or FBN_PRUNE_CACHE for caches)"),
    errno.EDQUOT: ("disk quota exceeded",
                   "free space, or write elsewhere (--out, --save-networks, or FBN_PRUNE_CACHE for caches)"),
    errno.EFBIG: ("file larger than this process may write (ulimit -f) or the file system allows",
                  "raise the limit (ulimit -f unlimited), or use smaller shards (export.max_shard_size)"),
    errno.EACCES: ("permission denied", "make it accessible to this user, or choose another path"),
    errno.EPERM: ("operation not permitted", "make it accessible to this user, or choose another path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter name or folder"),
    errno.EROFS: ("read-only file system", "write to a writable folder (--out, --save-networks, FBN_PRUNE_CACHE)"),
}


def disk_error_message(e: OSError) -> str | None:
    """One line for a file-system failure in DISK_ERRORS (naming the file and the fix), else None."""
    if e.errno not in DISK_ERRORS:
        return None
    what, fix = DISK_ERRORS[e.errno]
    where = e.filename if e.filename is not None else "a file (run with -vv to see which)"
    return f"{what}: {where}; {fix}."


@contextlib.contextmanager
def writing(path) -> Iterator[None]:
    """Name ``path`` in the I/O errors raised inside the block that do not name a file themselves:
    a write to an open file (OSError without filename) or safetensors' Rust I/O error (turned into
    the OSError it wraps)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from e
