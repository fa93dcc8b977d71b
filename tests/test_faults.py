"""Fault injection: `fbn-prune prune` SIGKILLed during capture, decomposition and export, and
`fbn-prune heal` stopped by SIGTERM or SIGINT during training.

After each kill nothing at --out looks finished; the rerun (same command) succeeds, resumes from
the networks cache where there is something to resume, leaves no leftovers (temporary folders,
lock files, cache entries) and writes weights byte-identical to an uninterrupted run's. The kill
points come from the test hook FBN_PRUNE_TEST_KILL_AT (fbn_prune/_io/testhook.py). Real processes,
tiny model: each run costs the interpreter start (a few seconds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--calib-samples", "16", "--seq-len", "32", "--runs", "2", "--components", "4", "--batch-size", "8",
        "--no-progress", "--device", "cpu"]


def prune(model: Path, out: Path, calib: Path, cache: Path, kill_at: str | None = None, *extra: str):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "FBN_PRUNE_CACHE": str(cache), "PYTHONPATH": path,
           "HF_HUB_OFFLINE": "1"}
    env.pop("FBN_PRUNE_TEST_KILL_AT", None)
    if kill_at:
        env["FBN_PRUNE_TEST_KILL_AT"] = kill_at
    cmd = [sys.executable, "-m", "fbn_prune", *extra, "prune", str(model), "--out", str(out), "--calib", str(calib), *ARGS]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def weights(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}


@pytest.fixture(scope="module")
def reference(tiny_dir, calib_txt, tmp_path_factory):
    """An uninterrupted run: its weights and kept channels."""
    root = tmp_path_factory.mktemp("reference")
    r = prune(tiny_dir("llama"), root / "o", calib_txt, root / "cache")
    assert r.returncode == 0, r.stderr
    return weights(root / "o"), json.loads((root / "o" / "fbn_prune.json").read_text())["kept"]


@pytest.mark.parametrize("point", ["capture", "decompose", "export"])
def test_kill_then_rerun_gives_the_same_bytes(reference, tiny_dir, calib_txt, tmp_path, point):
    out, cache = tmp_path / "o", tmp_path / "cache"
    killed = prune(tiny_dir("llama"), out, calib_txt, cache, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "fbn_prune.json").exists()  # nothing finished-looking at --out
    assert not out.exists()
    entries = list((cache / "networks").iterdir())
    assert [e.name for e in entries if not e.name.startswith(".")], "the killed run kept no networks to resume"
    if point == "export":
        assert [p for p in tmp_path.iterdir() if p.name.startswith(".o.tmp-")], "no half-written export to clean"

    rerun = prune(tiny_dir("llama"), out, calib_txt, cache, None, "-v")
    assert rerun.returncode == 0, rerun.stderr
    if point == "decompose":
        assert "resuming: 1 of 8 decompositions already done" in rerun.stderr
    if point == "export":
        assert "networks artifact" in rerun.stderr and "already complete" in rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "o"]  # no .o.tmp-*, no .o.lock
    assert list((cache / "networks").iterdir()) == []  # the networks cache entry is gone after success
    ref_weights, ref_kept = reference
    assert weights(out) == ref_weights
    assert json.loads((out / "fbn_prune.json").read_text())["kept"] == ref_kept


def heal(ckpt: Path, out: Path, text: Path, signal_name: str | None = None):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
    for k in ("FBN_PRUNE_TEST_KILL_AT", "FBN_PRUNE_TEST_KILL_SIGNAL"):
        env.pop(k, None)
    if signal_name:
        env.update(FBN_PRUNE_TEST_KILL_AT="heal", FBN_PRUNE_TEST_KILL_SIGNAL=signal_name)
    cmd = [sys.executable, "-m", "fbn_prune", "heal", str(ckpt), "--out", str(out), "--calib", str(text), "--steps", "6",
           "--seq-len", "32", "--batch-size", "2", "--lora", "2", "--no-progress"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("signal_name", ["TERM", "INT"])
def test_heal_stopped_by_a_signal_resumes_to_the_same_bytes(tiny_dir, calib_txt, tmp_path, signal_name):
    """SIGTERM (docker stop, a preempted machine) or SIGINT (Ctrl-C) in the third of six steps: the step
    finishes, the state is saved, exit 130; the same command then trains the last three steps only and
    writes the bytes of an unbroken run."""
    ckpt = tmp_path / "pruned"
    r = prune(tiny_dir("llama"), ckpt, calib_txt, tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    whole = heal(ckpt, tmp_path / "whole", calib_txt)
    assert whole.returncode == 0, whole.stderr
    stopped = heal(ckpt, tmp_path / "h", calib_txt, signal_name)
    assert stopped.returncode == 130, stopped.stderr
    assert "healing stopped after step 3 of 6" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not (tmp_path / "h").exists() and (tmp_path / ".h.heal-state" / "state.pt").is_file()
    again = heal(ckpt, tmp_path / "h", calib_txt)
    assert again.returncode == 0, again.stderr
    assert "resuming the stopped healing run at step 3 of 6" in again.stderr
    assert weights(tmp_path / "h") == weights(tmp_path / "whole")
    assert not (tmp_path / ".h.heal-state").exists()
