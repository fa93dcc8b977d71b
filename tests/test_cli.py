"""The command line through click's runner: help, the happy path, and every bad input (exit 2, one line)."""

from __future__ import annotations

import json
import os

import pytest
from clitools import bad, run


SMALL = ["--calib-samples", "24", "--seq-len", "64", "--runs", "2", "--components", "8", "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("command", ["prune", "networks", "select", "inspect"])
def test_help_is_complete(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    if command == "prune":
        for flag in ("--recipe", "--calib", "--calib-task", "--calib-samples", "--seq-len", "--runs", "--components",
                     "--ratio", "--threshold", "--protect-first", "--protect-last", "--round-to", "--layout",
                     "--seed", "--device", "--dtype", "--overwrite", "--out", "--method", "--max-ram", "--jobs",
                     "--ica-device", "--device-map", "--max-memory", "--dry-run"):
            assert flag in result.output, flag


def test_prune_networks_select_inspect(tiny_dir, calib_txt, tmp_path):
    model = tiny_dir("llama")
    out = tmp_path / "pruned"
    r = run("prune", model, "--out", out, "--calib", calib_txt, "--ratio", "0.25", *SMALL)
    assert r.exit_code == 0, r.output
    assert "verification   passed" in r.output
    assert json.loads((out / "fbn_prune.json").read_text())["verified"]

    net = tmp_path / "net"
    r = run("networks", model, "--out", net, "--calib", calib_txt, *SMALL)
    assert r.exit_code == 0, r.output
    r = run("select", net, "--out", tmp_path / "sel", "--ratio", "0.5", "--layout", "exact")
    assert r.exit_code == 0, r.output
    assert "exact layout" in r.output
    r = run("inspect", net, "--plot", tmp_path / "net.png")
    assert "networks artifact" in r.output and r.exit_code == 0, r.output
    r = run("inspect", tmp_path / "sel", "--json")
    assert json.loads(r.output)["layout"] == "exact"
    r = run("inspect", tmp_path / "sel", "--plot", tmp_path / "sel.svg")
    assert r.exit_code == 0, r.output
    for picture in ("net.png", "sel.svg"):  # real images, not empty files
        assert (tmp_path / picture).stat().st_size > 5000
    assert (tmp_path / "net.png").read_bytes()[:4] == b"\x89PNG"
    bad(["inspect", tmp_path / "sel", "--plot", tmp_path / "x.txt"], "needs a .png, .svg or .pdf")


def test_recipe_file_and_flag_override(tiny_dir, calib_txt, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {tiny_dir('gpt2')}\ncalibration:\n  source: {calib_txt}\n  samples: 24\n  seq_len: 64\n"
                      "decomposition:\n  runs: 2\n  components: 8\nselection:\n  ratio: 0.5\nexport:\n  layout: padded\n")
    r = run("prune", "--recipe", recipe, "--out", tmp_path / "o", "--ratio", "0.25", "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "o" / "fbn_prune.json").read_text())
    assert info["selection"]["ratio"] == 0.25 and info["layout"] == "padded"
    assert "ratio: 0.25" in (tmp_path / "o" / "recipe.yaml").read_text()


def test_missing_model(tmp_path):
    bad(["prune", tmp_path / "nope", "--out", tmp_path / "o"], "does not exist")


def test_unreadable_model(tiny_dir, tmp_path):
    if os.geteuid() == 0:
        folder = tmp_path / "m"
        folder.mkdir()  # a folder without config.json is equally unreadable as a model
        bad(["prune", folder, "--out", tmp_path / "o"], "no config.json")
    else:  # pragma: no cover
        folder = tiny_dir("llama")
        os.chmod(folder / "config.json", 0)
        bad(["prune", folder, "--out", tmp_path / "o"], "not readable")


def test_empty_calibration(tiny_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--calib", empty], "holds no text")


def test_missing_calibration(tiny_dir, tmp_path):
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--calib", tmp_path / "x.txt"], "does not exist")


def test_fewer_tokens_than_components(tiny_dir, calib_txt, tmp_path):
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--calib", calib_txt, "--calib-samples", "4",
         "--seq-len", "8", "--components", "64", "--runs", "2", "--no-progress"], "fewer than the 64 components")


@pytest.mark.parametrize("ratio", ["1.0", "-0.1", "1.5"])
def test_ratio_outside_range(tiny_dir, tmp_path, ratio):
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--ratio", ratio], "ratio must be in [0, 1)")


def test_unknown_layout(tiny_dir, tmp_path):
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--layout", "diagonal"], "'diagonal' is not one of")


def test_unknown_layout_in_recipe(tiny_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("export:\n  layout: diagonal\n")
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--recipe", recipe], "layout must be one of")


def test_unknown_recipe_key(tmp_path, tiny_dir):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("selection:\n  ration: 0.2\n")
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--recipe", recipe], "did you mean 'ratio'")


def test_unwritable_output(tiny_dir, tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "file"
        target.write_text("x")  # root can write anywhere: a file in the way is the unwritable case here
        bad(["prune", tiny_dir("llama"), "--out", target / "o"], "cannot write")
    else:  # pragma: no cover
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        bad(["prune", tiny_dir("llama"), "--out", ro / "o"], "cannot write")


def test_existing_output_needs_overwrite(tiny_dir, tmp_path):
    (tmp_path / "o").mkdir()
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o"], "--overwrite")


def test_unsupported_architecture(tmp_path):
    from transformers import BertConfig

    folder = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
    r = bad(["prune", folder, "--out", tmp_path / "o"], "not supported")
    assert "llama" in r.output and "gpt2" in r.output and "opt" in r.output


def test_ratio_and_threshold_conflict(tiny_dir, tmp_path):
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--ratio", "0.2", "--threshold", "3"], "not both")


def test_select_on_non_artifact(tmp_path):
    bad(["select", tmp_path, "--out", tmp_path / "o"], "not a networks artifact")


def test_inspect_unknown(tmp_path):
    bad(["inspect", tmp_path], "is not an fbn_prune checkpoint")
