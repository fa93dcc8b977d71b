"""Where ``prune`` keeps its networks when no --save-networks folder is given: a resumable cache.

``<cache>/networks/<model>-<key>/`` (``<cache>`` is ``$FBN_PRUNE_CACHE`` or
``$XDG_CACHE_HOME/fbn_prune``, see models.cache_dir). The key hashes everything that shapes the
networks (:func:`networks_key`): the model's identity, the exact calibration texts, the capture
and decomposition settings, the seed, the working dtype and device, which statistics the method
needs, and the fbn_prune version. So a killed run, started again with the same inputs, finds its
capture and finished maps there and resumes; any change of those inputs gets a fresh folder.

A run holds the entry's lock (targets.TargetLock) while it works and removes the entry when it
succeeds. Entries of killed runs stay for resuming until nobody has touched them for a day;
:func:`sweep` (called by every prune) then removes them, along with the ``fbn-networks-*``
folders that versions before this cache left in TMPDIR.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

from fbn_prune import __version__
from fbn_prune._io.targets import STALE_AGE_S, TargetLock
from fbn_prune._runtime.cache import cache_dir
from fbn_prune.config.recipe import Recipe
from fbn_prune.models.sources import ModelSource
from fbn_prune.texts.calibration import CalibrationSet

log = logging.getLogger(__name__)

LEGACY_PREFIX = "fbn-networks-"  # TemporaryDirectory prefix used before the cache


def root() -> Path:
    return cache_dir() / "networks"


def model_identity(source: ModelSource, config) -> dict:
    """What names the model's weights: its path or Hub id, the Hub revision when known, and for a
    local folder each file's name, size and modification time (a rewritten file is another model)."""
    ident = {"spec": source.spec, "path": source.path, "revision": getattr(config, "_commit_hash", None)}
    folder = Path(source.path)
    if source.local and folder.is_dir():
        ident["files"] = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file())
    return ident


def networks_key(recipe: Recipe, source: ModelSource, config, cal: CalibrationSet, *, needs: dict, device: str) -> str:
    """A 16-hex-digit hash of every input that shapes the networks artifact (see module docstring).

    ``needs`` records which parts the selection method asks for (maps, statistics, Gram);
    ``device`` is the resolved working device.
    """
    c = recipe.calibration
    d = recipe.decomposition
    record = {
        "model": model_identity(source, config),
        "calibration": {"sha256": cal.sha256, "tokens": cal.n_tokens, "run_tokens": cal.run_tokens(),
                        "holdout": hashlib.sha256(json.dumps(cal.holdout).encode()).hexdigest(),
                        "source": cal.source, "field": c.field, "samples": c.samples, "seq_len": c.seq_len,
                        "batch_size": c.batch_size, "max_ram": c.max_ram, "holdout_docs": c.holdout, "chat": c.chat},
        "decomposition": {k: v for k, v in vars(d).items() if k != "jobs"},  # --jobs never changes the result
        "seed": recipe.seed, "dtype": recipe.dtype, "device": device, "device_map": recipe.device_map,
        "needs": needs, "fbn_prune_version": __version__,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_for(source: ModelSource, key: str) -> Path:
    """The cache entry of one model and key: ``<root>/<readable model name>-<key>``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source.base_model or source.spec).name)[:48] or "model"
    return root() / f"{name}-{key}"


def sweep(now: float | None = None) -> list[Path]:
    """Remove cache entries nobody holds and nobody touched for a day, and old legacy TMPDIR folders.

    Returns what was removed."""
    now = now or time.time()
    removed = []
    candidates = list(root().iterdir()) if root().is_dir() else []
    for entry in candidates:
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if now - entry.stat().st_mtime <= STALE_AGE_S:
            continue
        lock = TargetLock(entry, "networks cache")
        try:
            lock.acquire()
        except Exception:  # a live run holds it
            continue
        try:
            log.info("removing the networks cache %s (unused for over a day)", entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        finally:
            lock.release()
    for entry in Path(tempfile.gettempdir()).glob(LEGACY_PREFIX + "*"):
        try:
            old = now - entry.stat().st_mtime > STALE_AGE_S
        except FileNotFoundError:
            continue
        if old and entry.is_dir() and not entry.is_symlink():
            log.info("removing %s, left by an interrupted run of an older fbn_prune", entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
