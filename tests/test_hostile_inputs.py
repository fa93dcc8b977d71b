"""Hostile inputs to networks artifacts and checkpoints (issue 11): a damaged, foreign or stale artifact and a
damaged fbn_prune.json give one line and exit 2 naming the file, never a traceback; an artifact is reused only
for the settings it records. Tiny Llama, 2 runs x 4 components: seconds."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from clitools import bad, run
from safetensors.torch import load_file, save_file
from tiny import save_tiny

from fbn_prune import pipeline
from fbn_prune.decompose import networks, settings
from fbn_prune.errors import UserError
from fbn_prune.decompose.networks import Networks
from fbn_prune.config.recipe import Recipe

SMALL = ["--calib-samples", "16", "--seq-len", "48", "--runs", "2", "--components", "4", "--no-progress",
         "--device", "cpu"]
MAP = "maps/layer001_run000.safetensors"
GRAM = "gram/layer002.safetensors"


def recipe(model, calib, **decomposition) -> Recipe:
    return Recipe.from_dict({
        "model": str(model), "device": "cpu",
        "calibration": {"source": str(calib), "samples": 16, "seq_len": 48, "batch_size": 8, "holdout": 2},
        "decomposition": {"runs": 2, "components": 4, **decomposition},
        "selection": {"ratio": 0.25},
    })


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_dir, calib_txt):
    """(model folder, networks artifact, checkpoint selected from it), made once."""
    root = tmp_path_factory.mktemp("hostile")
    model = tiny_dir("llama")
    art = pipeline.networks(recipe(model, calib_txt), root / "net", progress=False)
    r = recipe(model, calib_txt).override({"out": str(root / "ck")})
    ck = pipeline.select(r, art)
    return model, art.folder, ck


@pytest.fixture
def net(made, tmp_path) -> Path:
    return Path(shutil.copytree(made[1], tmp_path / "net"))


@pytest.fixture
def ck(made, tmp_path) -> Path:
    return Path(shutil.copytree(made[2], tmp_path / "ck"))


def one_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


# ----------------------------------------------------------------------------- damaged networks.json
def _edit_meta(folder: Path, change) -> None:
    path = folder / "networks.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


META_DAMAGE = {
    "invalid JSON": lambda p: (p / "networks.json").write_text("{not json"),
    "empty file": lambda p: (p / "networks.json").write_text(""),
    "binary garbage": lambda p: (p / "networks.json").write_bytes(b"\xff\xfe\x00garbage" * 8),
    "a JSON list": lambda p: (p / "networks.json").write_text("[1, 2]"),
    "missing widths": lambda p: _edit_meta(p, lambda m: m.pop("widths")),
    "missing calibration": lambda p: _edit_meta(p, lambda m: m.pop("calibration")),
    "widths a string": lambda p: _edit_meta(p, lambda m: m.update(widths="96")),
    "runs negative": lambda p: _edit_meta(p, lambda m: m.update(runs=-1)),
    "components a string": lambda p: _edit_meta(p, lambda m: m.update(components="four")),
    "settings malformed": lambda p: _edit_meta(p, lambda m: m.update(settings={"ica": {}})),
    "widths disagree with settings": lambda p: _edit_meta(p, lambda m: m.update(widths=[64] * 4)),
}


@pytest.mark.parametrize("damage", list(META_DAMAGE))
def test_damaged_metadata_is_one_line(net, tmp_path, damage):
    META_DAMAGE[damage](net)
    for args in (["select", net, "--out", tmp_path / "o"], ["inspect", net], ["inspect", net, "--plot", tmp_path / "x.png"]):
        r = bad(args, "networks.json")
        assert "fresh folder" in one_line(r), r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.png").exists()


def test_unknown_metadata_keys_are_ignored(net):
    _edit_meta(net, lambda m: m.update(written_by_a_newer_version=1))
    assert Networks(net).meta.widths == [96] * 4


# ----------------------------------------------------------------------------- damaged tensors
def _trunc(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _tensor(key, t):
    return lambda p: save_file({key: t}, str(p))


TENSOR_DAMAGE = {
    "maps truncated": (MAP, _trunc, "is damaged"),
    "maps garbage": (MAP, lambda p: p.write_bytes(os.urandom(300)), "is damaged"),
    "maps empty file": (MAP, lambda p: p.write_bytes(b""), "is damaged"),
    "maps wrong components": (MAP, _tensor("maps", torch.randn(3, 96).half()), "shape (3, 96)"),
    "maps wrong width": (MAP, _tensor("maps", torch.randn(4, 64).half()), "shape (4, 64)"),
    "maps NaN": (MAP, _tensor("maps", torch.full((4, 96), float("nan")).half()), "NaN or infinite"),
    "maps inf": (MAP, _tensor("maps", torch.full((4, 96), float("inf")).half()), "NaN or infinite"),
    "maps wrong key": (MAP, _tensor("weights", torch.randn(4, 96).half()), "holds no 'maps'"),
    "gram truncated": (GRAM, _trunc, "is damaged"),
    "gram NaN": (GRAM, _tensor("gram", torch.full((96, 96), float("nan"))), "NaN or infinite"),
    "gram wrong shape": (GRAM, _tensor("gram", torch.randn(96, 95)), "shape (96, 95)"),
}


@pytest.mark.parametrize("damage", list(TENSOR_DAMAGE))
def test_damaged_tensors_are_one_line_naming_the_file(net, tmp_path, damage):
    rel, make, fragment = TENSOR_DAMAGE[damage]
    make(net / rel)
    r = bad(["select", net, "--out", tmp_path / "o"], fragment)
    assert str(net / rel) in one_line(r) and "rerun `fbn-prune networks`" in r.output
    assert not (tmp_path / "o").exists()
    if rel.startswith("maps"):
        r = bad(["inspect", net, "--plot", tmp_path / "x.png"], fragment)
        assert str(net / rel) in one_line(r)


@pytest.mark.parametrize("damage", ["truncated", "NaN", "missing key", "wrong width", "deleted"])
def test_damaged_statistics_are_one_line(net, tmp_path, damage):
    path = net / "stats.safetensors"
    stats = load_file(str(path))
    if damage == "truncated":
        _trunc(path)
    elif damage == "NaN":
        save_file({k: torch.full_like(v, float("nan")) for k, v in stats.items()}, str(path))
    elif damage == "missing key":
        save_file({k: v for k, v in stats.items() if k != "sum.1"}, str(path))
    elif damage == "wrong width":
        save_file({k: (v[:50] if k.startswith("sum") else v) for k, v in stats.items()}, str(path))
    else:
        path.unlink()
    r = bad(["select", net, "--out", tmp_path / "o", "--method", "flap"], "stats.safetensors")
    one_line(r)


@pytest.mark.parametrize("damage", ["invalid", "deleted", "missing key"])
def test_damaged_holdout_is_one_line(net, tmp_path, damage):
    path = net / "holdout.json"
    path.unlink() if damage == "deleted" else path.write_text("{" if damage == "invalid" else "{}")
    one_line(bad(["select", net, "--out", tmp_path / "o"], "holdout.json"))


def test_damaged_score_cache_is_recomputed(net, made, tmp_path):
    r = run("select", net, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    cached = sorted((net / "scores").glob("*.safetensors"))
    assert cached
    for path in cached[:2]:
        _trunc(path)
    for path in cached[2:]:
        save_file({"score": torch.full((96,), float("nan"), dtype=torch.float64)}, str(path))
    r = run("select", net, "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    kept = [json.loads((tmp_path / x / "fbn_prune.json").read_text())["kept"] for x in ("a", "b")]
    assert kept[0] == kept[1]
    assert all(torch.isfinite(load_file(str(p))["score"]).all() for p in cached), "rewritten"


# ----------------------------------------------------------------------------- wrong folders, foreign artifacts
def test_wrong_folders(net, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    bad(["select", tmp_path / "empty", "--out", tmp_path / "o"], "not a networks artifact")
    bad(["select", tmp_path / "file", "--out", tmp_path / "o"], "is a file")
    bad(["inspect", tmp_path / "file"], "is a file")
    bad(["inspect", tmp_path / "file", "--plot", tmp_path / "x.png"], "is a file")
    (net / "networks.json").unlink()
    (net / "networks.json").mkdir()
    bad(["select", net, "--out", tmp_path / "o"], "is a folder")


def test_foreign_model_is_refused(made, tmp_path):
    _, net, _ = made
    same_widths = save_tiny("llama", tmp_path / "other", seed=1)
    narrower = save_tiny("llama", tmp_path / "narrow", intermediate_size=64)
    r = bad(["select", net, "--model", same_widths, "--out", tmp_path / "o1"], "is another model (sha256")
    assert "--model" in one_line(r)
    bad(["select", net, "--model", narrower, "--out", tmp_path / "o2"], "has widths [64, 64, 64, 64]")
    copy = Path(shutil.copytree(made[0], tmp_path / "copy"))  # the same model elsewhere: fine
    assert run("select", net, "--model", copy, "--out", tmp_path / "o3").exit_code == 0
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------- damaged fbn_prune.json
def _edit_info(folder: Path, change) -> None:
    path = folder / "fbn_prune.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


INFO_DAMAGE = {
    "invalid JSON": lambda p: (p / "fbn_prune.json").write_text("{oops"),
    "a JSON list": lambda p: (p / "fbn_prune.json").write_text("[]"),
    "binary garbage": lambda p: (p / "fbn_prune.json").write_bytes(b"\xff" * 40),
    "missing params": lambda p: _edit_info(p, lambda i: i.pop("params")),
    "missing selection": lambda p: _edit_info(p, lambda i: i.pop("selection")),
    "params.before a string": lambda p: _edit_info(p, lambda i: i["params"].update(before="many")),
    "widths empty": lambda p: _edit_info(p, lambda i: i.update(widths=[])),
    "kept out of range": lambda p: _edit_info(p, lambda i: i["kept"].update({"0": [0, 10_000]})),
    "kept not a mapping": lambda p: _edit_info(p, lambda i: i.update(kept=[1, 2])),
    "calibration a string": lambda p: _edit_info(p, lambda i: i.update(calibration="x")),
}


@pytest.mark.parametrize("damage", list(INFO_DAMAGE))
def test_damaged_provenance_is_one_line(ck, tmp_path, damage):
    INFO_DAMAGE[damage](ck)
    for args in (["inspect", ck], ["inspect", ck, "--plot", tmp_path / "x.png"]):
        assert "fbn_prune.json" in one_line(bad(args, "fbn_prune.json"))


def test_damaged_model_config_is_one_line(made, tmp_path):
    folder = Path(shutil.copytree(made[0], tmp_path / "m"))
    (folder / "config.json").write_text("{")
    bad(["inspect", folder], "config.json is not valid JSON")


# ----------------------------------------------------------------------------- reuse only with the same settings
@pytest.mark.parametrize("flags, fragment", [
    (["--components", "8"], "components=4, this run asks 8"),
    (["--seed", "7"], "seed=0, this run asks 7"),
    (["--runs", "4"], "runs=2, this run asks 4"),
    (["--seq-len", "40"], "seq_len=48, this run asks 40"),
    (["--calib-samples", "20"], "calibration=documents sha256"),
    (["--dtype", "bfloat16"], "dtype=float32, this run asks bfloat16"),
    (["--ica-engine", "torch"], "ica engine=sklearn, this run asks torch"),
])
def test_reuse_with_other_settings_is_refused(made, net, tmp_path, calib_txt, flags, fragment):
    model = made[0]
    before = {p.name: p.stat().st_mtime_ns for p in net.rglob("*")}
    args = list(SMALL)
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    r = bad(["prune", model, "--out", tmp_path / "o", "--calib", calib_txt, "--save-networks", net, *args], fragment)
    assert "use a fresh --save-networks folder" in one_line(r)
    bad(["networks", model, "--out", net, "--calib", calib_txt, *args], "use a fresh --out folder")
    assert {p.name: p.stat().st_mtime_ns for p in net.rglob("*")} == before, "a refused run writes nothing"
    assert not (tmp_path / "o").exists()


def test_reuse_with_another_model_or_calibration_is_refused(made, net, tmp_path, calib_txt):
    other = save_tiny("llama", tmp_path / "other", seed=1)
    bad(["prune", other, "--out", tmp_path / "o", "--calib", calib_txt, "--save-networks", net, *SMALL],
        "were made with model=")
    calib2 = tmp_path / "c2.txt"
    calib2.write_text(calib_txt.read_text().replace("the", "a"))
    bad(["networks", made[0], "--out", net, "--calib", calib2, *SMALL], "were made with calibration=")


def test_reuse_with_the_same_settings_runs_no_ica(made, net, tmp_path, calib_txt, monkeypatch):
    from fbn_prune.decompose import ica

    monkeypatch.setattr(ica, "decompose", lambda *a, **k: pytest.fail("a complete artifact must be reused"))
    r = run("prune", made[0], "--out", tmp_path / "o", "--calib", calib_txt, "--save-networks", net, "--ratio", "0.25",
            *SMALL)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "fbn_prune.json").read_text())["kept"] == \
        json.loads((made[2] / "fbn_prune.json").read_text())["kept"]


def test_a_non_artifact_folder_is_not_filled(made, tmp_path, calib_txt):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "mine.txt").write_text("x")
    bad(["networks", made[0], "--out", tmp_path / "home", "--calib", calib_txt, *SMALL], "is not empty")
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["mine.txt"]


def test_legacy_artifact_is_selectable_but_not_reused(made, net, tmp_path, calib_txt):
    _edit_meta(net, lambda m: m.pop("settings"))
    assert run("select", net, "--out", tmp_path / "s").exit_code == 0
    bad(["prune", made[0], "--out", tmp_path / "o", "--calib", calib_txt, "--save-networks", net, *SMALL],
        "record no settings")


def test_select_recipe_cannot_contradict_the_artifact(made, tmp_path):
    net = made[1]
    r1 = tmp_path / "r1.yaml"
    r1.write_text("decomposition:\n  components: 8\n")
    bad(["select", net, "--out", tmp_path / "o", "--recipe", r1], "components=4, the recipe")
    r2 = tmp_path / "r2.yaml"
    r2.write_text("seed: 7\n")
    bad(["select", net, "--out", tmp_path / "o", "--recipe", r2], "seed=0, the recipe")
    r3 = tmp_path / "r3.yaml"  # says nothing about the networks: their settings are taken from the artifact
    r3.write_text("selection:\n  ratio: 0.5\n")
    assert run("select", net, "--out", tmp_path / "o", "--recipe", r3).exit_code == 0
    info = json.loads((tmp_path / "o" / "fbn_prune.json").read_text())
    assert info["seed"] == 0 and "2 runs x 4 ICA components" in info["decomposition"]
    assert "components: 4" in (tmp_path / "o" / "recipe.yaml").read_text()


# ----------------------------------------------------------------------------- the settings record
def test_settings_are_recorded_and_keyed(made):
    meta = networks.read_meta(made[1])
    s = meta.settings
    assert isinstance(s, settings.NetworkSettings)
    assert (s.components, s.runs, s.seed, s.seq_len, s.dtype, s.ica.engine) == (4, 2, 0, 48, "float32", "sklearn")
    assert s.model_hash and len(s.model_hash) == 64 and s.calibration_sha256 == meta.calibration["sha256"]
    assert s.widths == (96,) * 4 and "llama" in s.signal
    assert settings.NetworkSettings.from_dict(s.to_dict()) == s and len(s.key()) == 16
    from dataclasses import replace

    assert replace(s, model="/elsewhere/same-bytes").key() == s.key(), "a copy of the model is the same model"
    for changed in (replace(s, components=8), replace(s, seed=1), replace(s, calibration_sha256="0" * 64),
                    replace(s, ica=replace(s.ica, tol=1e-3)), replace(s, model_hash="f" * 64)):
        assert changed.key() != s.key()
        with pytest.raises(UserError, match="were made with"):
            settings.check_reuse(made[1], s, changed, "--save-networks")
    settings.check_reuse(made[1], s, s)
