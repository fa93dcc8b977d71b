"""Command-line help shows the Recipe's own defaults: written once, in the dataclasses."""

from __future__ import annotations

import dataclasses

import click
import pytest

from fbn_prune.cli import options
from fbn_prune.cli.main import cli
from fbn_prune.config.recipe import Recipe

TABLES = (options.CALIBRATION_OPTIONS, options.DECOMPOSITION_OPTIONS, options.SELECTION_OPTIONS,
          options.EXPORT_OPTIONS, options.EVALUATION_OPTIONS, options.HEAL_OPTIONS, options.RUN_OPTIONS)


def test_recipe_default_reads_the_dataclasses():
    assert options.recipe_default("selection.ratio") == Recipe().selection.ratio == 0.2
    assert options.recipe_default("calibration.samples") == 128
    assert options.recipe_default("evaluation.tasks") == []


@pytest.mark.parametrize("flag,key", [(n, k) for t in TABLES for n, (k, _) in t.items()])
def test_each_flag_shows_the_recipe_default(flag, key):
    prune = cli.commands["prune"]
    option = next(p for p in prune.params if p.name == flag)
    default = options.recipe_default(key)
    if default in (None, [], ""):
        return
    assert option.help.endswith(f"[{default}].") or option.help.rstrip(".").endswith("]"), option.help


def test_a_changed_default_shows_in_the_help(monkeypatch):
    field = next(f for f in dataclasses.fields(Recipe().calibration.__class__) if f.name == "samples")
    monkeypatch.setattr(field, "default", 99)
    assert options.with_default("Calibration documents used.", "calibration.samples") == \
        "Calibration documents used [99]."
    assert options.with_default("Data folder [$FBN_PRUNE_DATA].", "data_dir") == "Data folder [$FBN_PRUNE_DATA]."
    assert isinstance(cli.commands["prune"], click.Command)
