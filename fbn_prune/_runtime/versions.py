"""The versions of the libraries that shaped a result, recorded beside it."""

from __future__ import annotations

import platform
from importlib import metadata

from fbn_prune import __version__


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "fbn_prune": __version__}
    for pkg in ("torch", "transformers", "accelerate", "lm_eval", "scikit-learn", "safetensors", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
