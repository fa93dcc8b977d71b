"""Shared fixtures: tiny model folders, calibration text, and an isolated HF cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import sample_texts, save_tiny  # noqa: E402


def _shared_data() -> Path | None:
    """scripts/test.sh's rule: $FBN_PRUNE_DATA, else a development data folder beside the checkout
    (../shared/data); None without either."""
    if os.environ.get("FBN_PRUNE_DATA"):
        return Path(os.environ["FBN_PRUNE_DATA"]).resolve()
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    return beside if beside.is_dir() else None


SHARED_DATA: Path | None = _shared_data()
"""The evaluation data folder, the one definition every test uses (``from conftest import SHARED_DATA``)."""


def data_files(*files: str) -> Path:
    """SHARED_DATA, or skip the calling test when it is not set or lacks one of ``files``."""
    if SHARED_DATA is None:
        pytest.skip("needs the evaluation data folder: set FBN_PRUNE_DATA (or put it in ../shared/data)")
    missing = [f for f in files if not (SHARED_DATA / f).is_file()]
    if missing:
        pytest.skip(f"{missing[0]} is not in FBN_PRUNE_DATA={SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _offline_env(tmp_path_factory):
    """No test reaches the network; remote code and caches go to a scratch folder."""
    home = tmp_path_factory.mktemp("hf_home")
    old = {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_MODULES_CACHE")}
    os.environ.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A function arch -> folder of a saved tiny model (created once per session)."""
    root = tmp_path_factory.mktemp("tiny_models")
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = Path(save_tiny(arch, root / arch))
        return made[arch]

    return get


@pytest.fixture(scope="session")
def calib_txt(tmp_path_factory) -> Path:
    """A .txt calibration file of 48 paragraphs separated by blank lines."""
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n\n".join(sample_texts(48, seed=1)) + "\n")
    return path
