"""Hostile inputs found by the independent before/after run: each is one line and exit 2, and no input changes."""

from __future__ import annotations

import json

from clitools import bad
from tiny import save_tiny

from fbn_prune._io.targets import TargetLock, side_name, temp_prefix


def test_network_weight_must_be_finite(tiny_dir, calib_txt, tmp_path):
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--calib", calib_txt, "--network-weight", "nan"],
        "must be a finite number")
    assert not (tmp_path / "o").exists()


def test_eval_on_damaged_provenance(tiny_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "fbn_prune.json").write_text("{bad json")
    bad(["eval", "--base", tiny_dir("llama"), "--pruned", ckpt, "--tasks", "piqa"], "is damaged")


def test_export_gguf_never_overwrites_a_file_that_is_not_gguf(tiny_dir, tmp_path):
    model = save_tiny("llama", tmp_path / "m")
    weights = model / "model.safetensors"
    before = weights.read_bytes()
    bad(["export-gguf", model, weights, "--overwrite"], "is not a GGUF file")
    assert weights.read_bytes() == before


def test_export_gguf_of_truncated_weights(tmp_path):
    model = save_tiny("llama", tmp_path / "m")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    bad(["export-gguf", model, tmp_path / "x.gguf"], "")
    assert not (tmp_path / "x.gguf").exists()


def test_inspect_plot_to_a_folder(tiny_dir, tmp_path):
    (tmp_path / "pic.png").mkdir()
    bad(["inspect", tiny_dir("llama"), "--plot", tmp_path / "pic.png"], "is a folder")


def test_weights_that_do_not_fit_the_config(calib_txt, tmp_path):
    model = save_tiny("llama", tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (model / "config.json").write_text(json.dumps(cfg))
    bad(["prune", model, "--out", tmp_path / "o", "--calib", calib_txt], "do not match")


def test_long_output_names_keep_their_lock_and_temporaries_within_the_name_limit(tmp_path):
    target = tmp_path / ("n" * 250)
    assert len(side_name(target).encode()) <= 200 and side_name(target) != side_name(tmp_path / ("n" * 249))
    assert len((temp_prefix(target) + "x" * 8).encode()) < 255
    with TargetLock(target) as lock:
        assert lock.path.exists()
    assert side_name(tmp_path / "short") == "short"
