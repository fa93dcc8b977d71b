"""The ready recipes in recipes/: each parses and validates, states what it is and the hardware it
needs; the popular-model ones calibrate on a single lm-eval task and gate their result; and
`fbn-prune recipes` finds them in a checkout and where a wheel installs them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fbn_prune import cli_ship
from fbn_prune.cli import cli
from fbn_prune.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
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
            assert str(raw(REPO / "recipes" / f"{n}.yaml")["model"]).startswith(model), n


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
    assert yaml.safe_load(result.output) == raw(REPO / "recipes" / "llama-3.1-8b-arc.yaml")
    result = runner.invoke(cli, ["recipes", "llama-3.1-8b-arc.yaml", "--path"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.strip() == str(REPO / "recipes" / "llama-3.1-8b-arc.yaml")
    result = runner.invoke(cli, ["recipes", "lama-3.1-8b-arc"], catch_exceptions=False)
    assert result.exit_code == 2 and "did you mean 'llama-3.1-8b-arc'" in result.output


def test_recipes_are_found_where_a_wheel_installs_them(monkeypatch, tmp_path):
    """Outside a checkout, recipes come from <prefix>/share/fbn_prune/recipes (pyproject data-files)."""
    import sysconfig

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert data_files == {cli_ship.DATA_SUBDIR.as_posix(): ["recipes/*.yaml"]}

    prefix = tmp_path / "prefix"
    installed = prefix / cli_ship.DATA_SUBDIR
    installed.mkdir(parents=True)
    (installed / "only-installed.yaml").write_text("description: d d d d d\nhardware: h h h h h\nmodel: smollm2\n")
    (installed / "smollm2-135m.yaml").write_text("model: shadowed-by-the-checkout\n")
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(prefix) if name == "data" else None)
    names = {r.name: r for r in cli_ship.find_recipes()}
    assert names["only-installed"].path == installed / "only-installed.yaml"
    assert names["smollm2-135m"].model == "smollm2", "a checkout's recipes come first"

    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "smollm2-135m.yaml").write_text("model: my-own\n")
    monkeypatch.setenv(cli_ship.RECIPES_ENV, str(extra))
    assert {r.name: r for r in cli_ship.find_recipes()}["smollm2-135m"].model == "my-own", "$FBN_PRUNE_RECIPES first"
    assert sys.prefix  # the real prefixes are searched too (see cli_ship.recipe_dirs)
