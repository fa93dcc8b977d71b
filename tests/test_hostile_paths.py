"""Hostile inputs (issue 11): outputs that would overwrite inputs, concurrent runs, leftovers of
killed runs, damaged model files, a full disk, and how every such failure is reported (one line,
exit 2, traceback only with -vv). Tiny models, mostly refused before any model load."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from clitools import run

from fbn_prune.decompose import cache as netcache
from fbn_prune._io import targets
from fbn_prune.texts.calibration import CalibrationSet
from fbn_prune.cli.main import cli
from fbn_prune.models.sources import ModelSource
from fbn_prune.config.recipe import Recipe

# no capture, no ICA: magnitude scores without compensation need only the model (seconds)
FAST = ["--method", "magnitude", "--compensate", "none", "--calib-samples", "8", "--seq-len", "32", "--runs", "1",
        "--no-progress", "--device", "cpu"]
SMALL = ["--calib-samples", "24", "--seq-len", "64", "--runs", "2", "--components", "8", "--no-progress", "--device", "cpu"]


@pytest.fixture
def model(tiny_dir, tmp_path) -> Path:
    """A private copy of the tiny llama (tests may try to destroy it)."""
    return Path(shutil.copytree(tiny_dir("llama"), tmp_path / "model"))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A scratch fbn_prune cache (GGUF conversions, networks) per test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("FBN_PRUNE_CACHE", str(root))
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(r, fragment: str, code: int = 2) -> str:
    """The run failed with ``code`` and exactly one line on stderr, holding ``fragment``."""
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == code, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert fragment in lines[0], lines[0]
    return lines[0]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ----------------------------------------------------------------------------- outputs over inputs
@pytest.mark.parametrize("where", ["same", "parent", "inside", "symlink", "dotdot"])
def test_out_over_the_input_model_is_refused(model, calib_txt, tmp_path, monkeypatch, where):
    before = snapshot(model)
    if where == "symlink":
        (tmp_path / "link").symlink_to(model)
    monkeypatch.chdir(model)
    out = {"same": model, "parent": tmp_path, "inside": model / "pruned", "symlink": tmp_path / "link",
           "dotdot": Path("..") / "model" / "."}[where]
    how = {"parent": "contains", "inside": "lies inside"}.get(where, "is")
    r = invoke("prune", model, "--out", out, "--overwrite", "--calib", calib_txt, *FAST)
    one_line_error(r, f"{how} the input model folder")
    assert snapshot(model) == before and not (model / "pruned").exists()


def test_out_over_the_gguf_folder_is_refused(tmp_path, calib_txt):
    folder = tmp_path / "ggufs"
    folder.mkdir()
    (folder / "m.gguf").write_bytes(b"GGUF")  # never read: the paths are refused first
    r = invoke("prune", folder / "m.gguf", "--out", folder, "--overwrite", "--calib", calib_txt, *FAST)
    one_line_error(r, "is the folder of the input model file")
    assert (folder / "m.gguf").read_bytes() == b"GGUF"


@pytest.mark.parametrize("where", ["same", "inside", "contains", "in-model"])
def test_save_networks_over_out_or_model_is_refused_before_loading(model, calib_txt, tmp_path, monkeypatch, where):
    import fbn_prune.pipeline as pipeline

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the paths were checked")

    monkeypatch.setattr(pipeline, "_load", no_load)
    out = tmp_path / "o"
    net = {"same": out, "inside": out / "net", "contains": tmp_path, "in-model": model / "net"}[where]
    r = invoke("prune", model, "--out", out, "--save-networks", net, "--calib", calib_txt, *SMALL)
    one_line_error(r, {"in-model": "lies inside the input model folder"}.get(where, "--save-networks"))
    assert not out.exists() and not (model / "net").exists()


def test_out_containing_the_calibration_file_is_refused(model, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "fbn_prune.json").write_text("{}")  # an earlier output, so --overwrite would replace it
    (old / "calib.txt").write_text("some text " * 50)
    r = invoke("prune", model, "--out", old, "--overwrite", "--calib", old / "calib.txt", *FAST)
    one_line_error(r, "contains the calibration file")
    assert (old / "calib.txt").is_file()


def test_overwrite_never_replaces_a_foreign_folder(model, calib_txt, tmp_path):
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    r = invoke("prune", model, "--out", mine, "--overwrite", "--calib", calib_txt, *FAST)
    one_line_error(r, "is a folder fbn_prune did not write")
    assert (mine / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_networks_out_over_the_model_is_refused(model, calib_txt, tmp_path, where):
    before = snapshot(model)
    out = {"same": model, "inside": model / "net", "parent": tmp_path}[where]
    r = invoke("networks", model, "--out", out, "--calib", calib_txt, *SMALL)
    one_line_error(r, "the input model folder")
    assert snapshot(model) == before


@pytest.fixture(scope="module")
def artifact(tiny_dir, calib_txt, tmp_path_factory) -> Path:
    net = tmp_path_factory.mktemp("artifact") / "net"
    r = run("networks", tiny_dir("llama"), "--out", net, "--calib", calib_txt, *SMALL)
    assert r.exit_code == 0, r.output
    return net


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_select_out_over_the_networks_folder_is_refused(artifact, where):
    before = snapshot(artifact)
    out = {"same": artifact, "inside": artifact / "sel", "parent": artifact.parent}[where]
    r = invoke("select", artifact, "--out", out, "--overwrite")
    one_line_error(r, "the networks folder")
    assert snapshot(artifact) == before


# ----------------------------------------------------------------------------- one run per output
def test_a_second_run_to_a_locked_output_fails_at_once(model, calib_txt, tmp_path):
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / '.o.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        r = invoke("prune", model, "--out", out, "--calib", calib_txt, *FAST)
        one_line_error(r, f"another fbn-prune run is writing {out} (pid {holder.pid})")
        assert time.perf_counter() - start < 10 and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    r = invoke("prune", model, "--out", out, "--calib", calib_txt, *FAST)  # the holder died: the lock is free
    assert r.exit_code == 0, r.output
    assert not (tmp_path / ".o.lock").exists()


def test_lock_is_exclusive_within_a_process_and_removed_on_release(tmp_path):
    target = tmp_path / "o"
    with targets.TargetLock(target, "--out"):
        with pytest.raises(Exception, match=f"pid {os.getpid()}"):
            targets.TargetLock(target, "--out").acquire()
    assert not (tmp_path / ".o.lock").exists()
    with targets.TargetLock(target):  # free again
        pass


def test_leftovers_of_killed_runs_are_removed(model, calib_txt, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = [tmp_path / f".o.tmp-{dead.pid}-abc", tmp_path / ".o.tmp-legacy9", tmp_path / f".o.old-{dead.pid}-x"]
    for d in left:
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    other = tmp_path / f".other.tmp-{dead.pid}-abc"  # another target's: not ours to remove
    other.mkdir()
    r = invoke("prune", model, "--out", tmp_path / "o", "--calib", calib_txt, *FAST)
    assert r.exit_code == 0, r.output
    assert not any(d.exists() for d in left) and other.exists()


def test_replacing_an_output_is_one_atomic_exchange(tmp_path):
    from fbn_prune.export.checkpoint import move_into_place

    target, new = tmp_path / "o", tmp_path / ".o.tmp-1-x"
    target.mkdir()
    (target / "old.safetensors").write_text("old")
    new.mkdir()
    (new / "new.safetensors").write_text("new")
    move_into_place(new, target)
    assert sorted(os.listdir(target)) == ["new.safetensors"] and sorted(os.listdir(tmp_path)) == ["o"]


# ----------------------------------------------------------------------------- the networks cache
def _cal(text: str = "a") -> CalibrationSet:
    return CalibrationSet(runs=[[[1, 2, 3]]], holdout=[[4, 5]], source=text, sha256=text * 8)


@pytest.mark.parametrize("change, same", [
    ({"seed": 1}, False), ({"decomposition.components": 4}, False), ({"decomposition.runs": 2}, False),
    ({"calibration.seq_len": 32}, False), ({"dtype": "bfloat16"}, False), ({"decomposition.fun": "logcosh"}, False),
    ({"selection.ratio": 0.5}, True), ({"decomposition.jobs": 4}, True), ({"export.layout": "exact"}, True),
])
def test_networks_cache_key_follows_every_setting_that_shapes_the_networks(tmp_path, change, same):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"w")
    src = ModelSource("m", str(tmp_path / "m"), "m", True)
    base = Recipe().override({"decomposition.runs": 1, "calibration.samples": 4})
    key = lambda r, cal=_cal(): netcache.networks_key(r, src, None, cal, needs={"maps": True}, device="cpu")  # noqa: E731
    assert (key(base) == key(base.override(change))) is same
    assert key(base) != key(base, _cal("b"))  # other calibration texts
    before = key(base)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"other weights")  # the same folder, rewritten
    assert key(base) != before


def test_prune_keeps_its_networks_in_the_cache_and_removes_them_when_done(model, calib_txt, tmp_path, cache,
                                                                          monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmpdir"))
    (tmp_path / "tmpdir").mkdir()
    day_ago = time.time() - 2 * 86400
    stale_entry = cache / "networks" / "m-0123456789abcdef"
    legacy = tmp_path / "tmpdir" / "fbn-networks-abc"
    fresh_entry = cache / "networks" / "m-fedcba9876543210"  # a killed run's, from today: kept for resuming
    for d in (stale_entry, legacy, fresh_entry):
        (d / "capture").mkdir(parents=True)
    for d in (stale_entry, legacy):
        os.utime(d, (day_ago, day_ago))
    r = invoke("prune", model, "--out", tmp_path / "o", "--calib", calib_txt, *SMALL)
    assert r.exit_code == 0, r.output
    assert not stale_entry.exists() and not legacy.exists() and fresh_entry.exists()
    assert sorted(p.name for p in (cache / "networks").iterdir()) == [fresh_entry.name]  # its own entry is gone
    assert list((tmp_path / "tmpdir").iterdir()) == []


# ----------------------------------------------------------------------------- damaged models
def _damaged(model: Path, how: str) -> Path:
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    if how == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        weights.write_bytes(os.urandom(5000))
    elif how == "empty":
        weights.write_bytes(b"")
    elif how == "header-cut":
        weights.write_bytes(data[:20])
    return model


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "header-cut"])
def test_damaged_safetensors_is_one_line(model, calib_txt, tmp_path, how):
    r = invoke("prune", _damaged(model, how), "--out", tmp_path / "o", "--calib", calib_txt, *FAST)
    one_line_error(r, "damaged or incomplete")
    assert not (tmp_path / "o").exists()


def test_folder_with_only_config_says_weights_are_missing(model, calib_txt, tmp_path):
    for f in model.iterdir():
        if f.name != "config.json":
            f.unlink()
    one_line_error(invoke("prune", model, "--out", tmp_path / "o", "--calib", calib_txt, *FAST), "but no weights")


def test_folder_without_tokenizer_says_so(model, calib_txt, tmp_path):
    for f in model.glob("tokenizer*"):
        f.unlink()
    one_line_error(invoke("prune", model, "--out", tmp_path / "o", "--calib", calib_txt, *FAST), "tokenizer")


def test_pickle_weights_load_with_a_warning_and_provenance(model, calib_txt, tmp_path, caplog):
    from safetensors.torch import load_file

    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    with caplog.at_level("WARNING", logger="fbn_prune"):
        r = invoke("prune", model, "--out", tmp_path / "o", "--calib", calib_txt, *FAST)
    assert r.exit_code == 0, r.output
    assert any("pickle" in m and "weights_only=True" in m for m in caplog.messages), caplog.messages
    assert json.loads((tmp_path / "o" / "fbn_prune.json").read_text())["weights_format"] == "pickle"


def _gguf_without_tokenizer(path: Path) -> Path:
    import numpy as np

    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((w.add_block_count, 2), (w.add_context_length, 64), (w.add_embedding_length, 64),
                       (w.add_feed_forward_length, 96), (w.add_head_count, 4), (w.add_head_count_kv, 2)):
        add(value)
    w.add_tensor("token_embd.weight", np.zeros((512, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("how", ["no-tokenizer", "truncated", "garbage"])
def test_damaged_gguf_is_one_line(tmp_path, calib_txt, how):
    path = _gguf_without_tokenizer(tmp_path / "m.gguf")
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif how == "garbage":
        path.write_bytes(os.urandom(4000))
    r = invoke("prune", path, "--out", tmp_path / "o", "--calib", calib_txt, *FAST)
    one_line_error(r, "GGUF file is damaged, incomplete")


# ----------------------------------------------------------------------------- disk full, size limits
def test_file_size_limit_is_one_line_naming_the_folder(model, calib_txt, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, hard))  # the 760 kB weights cannot be written
    try:
        r = invoke("prune", model, "--out", tmp_path / "o", "--calib", calib_txt, *FAST)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    line = one_line_error(r, "ulimit -f")
    assert str(tmp_path / ".o.tmp-") in line
    assert not (tmp_path / "o").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".o")] == []


def test_full_disk_is_one_line(model, calib_txt, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        r = invoke("prune", model, "--out", small / "o", "--calib", calib_txt, *FAST)
        line = one_line_error(r, "no space left on the device")
        assert str(small / ".o.tmp-") in line and os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_disk_errors_without_a_file_name_are_named_by_the_folder_being_written(tmp_path):
    from safetensors import SafetensorError

    from fbn_prune.errors import disk_error_message, writing

    with pytest.raises(OSError) as e, writing(tmp_path):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert disk_error_message(e.value) == (f"no space left on the device: {tmp_path}; free space, or write elsewhere "
                                           "(--out, --save-networks, or FBN_PRUNE_CACHE for caches).")


# ----------------------------------------------------------------------------- option errors, -vv
@pytest.mark.parametrize("args, line", [
    (["prune", "m", "--layout", "x"], "error: --layout: 'x' is not one of uniform, padded, exact"),
    (["prune", "m", "--ratio", "abc"], "error: --ratio: 'abc' is not a valid float"),
    (["prune", "m", "--dtype", "x"], "error: --dtype: 'x' is not one of float32, bfloat16, float16"),
    (["select", "n", "--layout", "x"], "error: --layout: 'x' is not one of uniform, padded, exact"),
    (["networks", "m", "--out", "o", "--ica-engine", "x"], "error: --ica-engine: 'x' is not one of auto, sklearn, torch"),
    (["eval", "--pruned", "p", "--dtype", "x"], "error: --dtype: 'x' is not one of float32, bfloat16, float16"),
    (["prune", "m", "--nope"], "error: No such option"),
    (["prune", "m", "--runs"], "error: Option '--runs' requires an argument"),
    (["pruen"], "error: No such command 'pruen'"),
])
def test_bad_options_are_one_line(args, line):
    r = invoke(*args)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(line), r.stderr


def test_traceback_only_with_vv(tmp_path):
    assert "Traceback" not in invoke("prune", tmp_path / "nope", "--out", tmp_path / "o").output
    r = invoke("-vv", "prune", tmp_path / "nope", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "Traceback" in r.stderr and r.stderr.strip().splitlines()[-1].startswith("error: ")


def test_internal_bugs_keep_their_traceback(model, calib_txt, tmp_path, monkeypatch):
    import fbn_prune.pipeline as pipeline

    def bug(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pipeline, "_load", bug)
    with pytest.raises(ZeroDivisionError):
        CliRunner().invoke(cli, ["prune", str(model), "--out", str(tmp_path / "o"), *FAST], catch_exceptions=False)
