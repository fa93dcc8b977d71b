"""fbn_prune's cache folder: ``$FBN_PRUNE_CACHE``, else ``$XDG_CACHE_HOME/fbn_prune`` (``~/.cache/fbn_prune``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("FBN_PRUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fbn_prune"
    )
    return Path(root)
