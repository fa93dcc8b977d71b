"""Write a pruned checkpoint atomically: temporary folder beside the target, verify, rename.

Folder contents: sharded safetensors (+ index), config.json, generation_config.json, the
tokenizer, README.md (model card), recipe.yaml, fbn_prune.json (provenance and the
kept-neuron map) and, for the exact and deci layouts, modeling_fbn.py.
"""

from __future__ import annotations

import copy
import ctypes
import errno
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from transformers import GenerationConfig

from fbn_prune._io.targets import check_replaceable, real, temp_prefix
from fbn_prune._io.testhook import kill_point
from fbn_prune.errors import UserError, VerificationError, writing
from fbn_prune.export.compat import make_portable
from fbn_prune.export.provenance import PROVENANCE_FILE, Provenance

log = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"


def check_target(out: str | os.PathLike, overwrite: bool) -> Path:
    """Validate the output folder before any work: refuse an existing one without overwrite, a folder
    fbn_prune did not write even with overwrite (call after targets.check_disjoint, whose reason is
    the more precise one), and an unwritable parent."""
    target = real(out)
    if target.exists() and not overwrite:
        raise UserError(f"output folder {out} already exists; pass --overwrite to replace it.")
    if target.exists() and not target.is_dir():
        raise UserError(f"output path {out} exists and is not a folder.")
    parent = target.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {parent}: permission denied or a read-only file system; choose a writable --out.")
    check_replaceable(target, "--out", (PROVENANCE_FILE,))
    return target


def write_checkpoint(model, tokenizer, target: Path, *, files: dict[str, str], info: Provenance,
                     max_shard_size: str, verify: Callable[[str], dict], card: Callable[[Provenance], str],
                     dtype=None) -> Path:
    """Save ``model`` and its files into a temporary folder, verify it, then move it to ``target``.

    ``files`` maps extra file names to their text (recipe, modeling file); ``card(info)``
    renders README.md once the verification result is in ``info``.
    ``dtype`` is the dtype the weights are saved in. ``verify(folder)`` returns a dict with an ``ok`` key; a failed check raises
    VerificationError and leaves nothing at ``target`` (an existing folder there is kept).
    The temporary folder is ``.NAME.tmp-PID-*``: a killed run's one is removed by the next run
    (targets.sweep_leftovers). Callers hold the target's lock (targets.TargetLock).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    try:
        with writing(tmp):
            if model.generation_config is None:
                model.generation_config = GenerationConfig.from_model_config(model.config)
            log.info("writing safetensors to %s", tmp)
            if dtype is not None and dtype != next(model.parameters()).dtype:
                model = copy.deepcopy(model).to(dtype)  # the in-memory model stays as built, for verification
            model.save_pretrained(tmp, max_shard_size=max_shard_size)
            kill_point("export")  # test hook (testhook.py): no-op unless a fault-injection test asks
            tokenizer.save_pretrained(tmp)
            make_portable(tmp, tokenizer)  # both transformers generations read the same config and tokenizer
            for name, text in files.items():
                (tmp / name).write_text(text)
        result = verify(str(tmp))
        info.verification = result
        info.verified = bool(result["ok"])
        with writing(tmp):
            (tmp / PROVENANCE_FILE).write_text(info.to_json())
            (tmp / "README.md").write_text(card(info))
        if not result["ok"]:
            raise VerificationError(
                f"verification failed: the reloaded checkpoint differs from the masked original by "
                f"{result['relative_diff']:.3g} (tolerance {result['tolerance']:.0e}); nothing was written to {target}."
            )
        _publish_modes(tmp)
        move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _publish_modes(folder: Path) -> None:
    """Ordinary permissions (rwxr-xr-x / rw-r--r-- less the umask): temporary files start private."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def move_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished folder to ``target``. An existing target is exchanged with it in one atomic
    step (Linux renameat2 RENAME_EXCHANGE), so ``target`` is at every moment either the whole old
    folder or the whole new one; the old one, now under the temporary name, is then deleted. Where
    the exchange is not available the old folder is first renamed aside (``.NAME.old-PID-*``)."""
    if not target.exists():
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=temp_prefix(target, "old"), dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False when the platform or file system cannot."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
