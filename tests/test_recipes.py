"""The ready recipes (package data, fbn_prune/recipes/): each parses and validates, states what it is and
the hardware it needs; the popular-model ones calibrate on a single lm-eval task and gate their result;
`fbn-prune recipes` lists them and `--recipe NAME` finds them from any folder and from the built wheel,
which also holds the built-in calibration text and its license."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fbn_prune.config import recipe as recipe_module
from fbn_prune.cli.main import cli
from fbn_prune.errors import UserError
from fbn_prune.config.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "fbn_prune" / "recipes"
RECIPES = sorted(SHIPPED.glob("*.yaml"))
# the families the project ships a recipe for: file-name prefix -> Hub id prefix of the model
FAMILIES = {
    "smollm2-135m": "smollm2",
    "paper-vicuna-7b": "lmsys/vicuna-7b",
    "llama-3.1-8b-": "meta-llama/Llama-3.1-8B",
    "qwen2.5-7b-": "Qwen/Qwen2.5-7B",
    "mistral-7b-": "mistralai/Mistral-7B",
}
POPULAR = ("llama-3.1-8b-", "qwen2.5-7b-", "mistral-7b-")


def raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_every_family_has_a_recipe():
    names = [p.stem for p in RECIPES]
    for prefix, model in FAMILIES.items():
        found = [n for n in names if n.startswith(prefix)]
        assert found, f"no recipe {prefix}*"
        for n in found:
            assert str(raw(SHIPPED / f"{n}.yaml")["model"]).startswith(model), n


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_validates_and_states_its_hardware(path):
    recipe = Recipe.load(path)  # unknown keys, wrong types and bad combinations raise UserError
    data = raw(path)
    assert recipe.model, "a recipe names its model"
    for key in ("description", "hardware"):
        assert isinstance(data.get(key), str) and len(data[key].split()) >= 5, f"{key}: one informative line"
    # round trip: what fbn_prune saves next to a checkpoint loads back to the same recipe
    assert Recipe.from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()


@pytest.fixture(scope="module")
def task_index():
    from lm_eval.tasks import TaskManager

    return TaskManager().task_index


@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem.startswith(POPULAR)], ids=lambda p: p.stem)
def test_popular_model_recipes_are_task_specific_and_gated(path, task_index):
    from lm_eval.tasks._index import Kind

    recipe = Recipe.load(path)
    c, e = recipe.calibration, recipe.evaluation
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", recipe.model), "a Hub id"
    assert c.task and not c.source, "task-specific calibration (calibration.task)"
    assert c.task in task_index and task_index[c.task].kind in (Kind.TASK, Kind.PY_TASK), "one lm-eval task"
    assert c.task in e.tasks, "the gate scores the task the model was calibrated for"
    for task in e.tasks:
        assert task in task_index, f"unknown lm-eval task {task}"
    assert e.max_drop is not None or e.min_retention is not None, "a gate"
    assert recipe.export.layout == "uniform" and recipe.selection.ratio is not None
    assert recipe.dtype in ("bfloat16", "float16"), "a 7B model is handled in half precision"
    d = recipe.decomposition
    assert c.samples // d.runs >= 64 and d.components <= 128
    assert "GB" in raw(path)["hardware"] and "GPU" in raw(path)["hardware"]


# ----------------------------------------------------------------------------- fbn-prune recipes
def test_recipes_command_lists_every_recipe():
    result = CliRunner().invoke(cli, ["recipes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    listed = re.findall(r"^(\S+)$", result.output, re.M)
    assert listed == [p.stem for p in RECIPES]
    for p in RECIPES:
        assert f"  file         {p}" in result.output
        assert f"  hardware     {raw(p)['hardware']}" in result.output
    assert "  calibration  task arc_easy" in result.output


def test_recipes_command_prints_one(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["recipes", "llama-3.1-8b-arc"], catch_exceptions=False)
    assert result.exit_code == 0
    assert yaml.safe_load(result.output) == raw(SHIPPED / "llama-3.1-8b-arc.yaml")
    result = runner.invoke(cli, ["recipes", "llama-3.1-8b-arc.yaml", "--path"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.strip() == str(SHIPPED / "llama-3.1-8b-arc.yaml")
    result = runner.invoke(cli, ["recipes", "lama-3.1-8b-arc"], catch_exceptions=False)
    assert result.exit_code == 2 and "did you mean 'llama-3.1-8b-arc'" in result.output


def test_recipes_are_package_data_found_from_any_folder(monkeypatch, tmp_path):
    """`--recipe NAME` needs no checkout: the recipes are package data (no data-files, no prefix scanning)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "data-files" not in setuptools_cfg
    assert "recipes/*.yaml" in setuptools_cfg["package-data"]["fbn_prune"]
    assert recipe_module.shipped_recipes() == SHIPPED
    assert not (REPO / "recipes").exists(), "one copy of the recipes: the package's"

    monkeypatch.chdir(tmp_path)
    assert Recipe.load("smollm2-135m").model == "smollm2"
    assert Recipe.load("smollm2-135m.yaml").model == "smollm2"
    with pytest.raises(UserError, match=r"recipes/smollm2-135m.yaml does not exist; the ready recipe is named without "
                                        r"a folder: --recipe smollm2-135m"):
        Recipe.load("recipes/smollm2-135m.yaml")
    (tmp_path / "smollm2-135m.yaml").write_text("model: my-local-file\n")
    assert Recipe.load("smollm2-135m.yaml").model == "my-local-file", "an existing file wins over a ready recipe"


def test_own_recipe_folders_come_first(monkeypatch, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "smollm2-135m.yaml").write_text("model: my-own\n")
    (mine / "only-mine.yaml").write_text("description: d d d d d\nhardware: h h h h h\nmodel: smollm2\n")
    monkeypatch.setenv(recipe_module.RECIPES_ENV, str(mine))
    names = {r.name: r for r in recipe_module.ready_recipes()}
    assert names["smollm2-135m"].model == "my-own" and names["only-mine"].path == mine / "only-mine.yaml"
    assert names["llama-3.1-8b-arc"].path == SHIPPED / "llama-3.1-8b-arc.yaml"


def test_wheel_holds_the_recipes_and_the_calibration_text(tmp_path):
    """Build the wheel (no network), install it outside the checkout, and run from an empty folder:
    the ready recipe and the built-in calibration text come from the installed package."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(REPO / "fbn_prune", src / "fbn_prune", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("fbn_prune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"fbn_prune/recipes/{p.name}" for p in RECIPES} <= names
    assert {"fbn_prune/data/wikitext2-valid-sample.txt.gz", "fbn_prune/data/wikitext2-valid-sample.LICENSE.md"} <= names
    assert not any(n.startswith("share/") or ".data/" in n for n in names), "no data-files"

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    empty = tmp_path / "empty"
    empty.mkdir()
    script = ("import fbn_prune, sys; from fbn_prune.config.recipe import Recipe; from fbn_prune.texts import calibration as c\n"
              "r = Recipe.load('smollm2-135m'); t = c.prepare(r)\n"
              "print(fbn_prune.__file__); print(r.calibration.source, len(t.texts), t.license)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FBN_PRUNE_DATA", "FBN_PRUNE_RECIPES")}
    out = subprocess.run([sys.executable, "-c", script], cwd=empty, env={**env, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    where, line = out.stdout.strip().splitlines()[-2:]
    assert Path(where).is_relative_to(site)
    source, n, license_ = line.split(" ", 2)
    assert source == "builtin:wikitext2-valid" and int(n) > 300 and license_ == "CC BY-SA 3.0"


def test_validate_changes_nothing_and_canonical_is_a_new_recipe():
    raw = Recipe(selection=Recipe().selection.__class__(threshold=2.0), export=Recipe().export.__class__(layout="padded"))
    raw.decomposition.jobs = "3"
    raw.evaluation.tasks = "piqa, arc_easy"
    before = raw.to_dict()
    canon = raw.canonical()
    assert raw.to_dict() == before, "canonical() must not change the recipe it is called on"
    assert canon.selection.ratio is None and canon.calibration.source == "builtin:wikitext2-valid"
    assert canon.decomposition.jobs == 3 and canon.evaluation.tasks == ["piqa", "arc_easy"]
    snapshot = canon.to_dict()
    canon.validate()
    assert canon.to_dict() == snapshot, "validate() only checks"
    assert Recipe.from_dict(before).to_dict() == snapshot
