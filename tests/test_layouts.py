"""The padded layout says when it saves nothing (log, summary, card); inspect shows stored vs effective size."""

from __future__ import annotations

import logging

import pytest
from clitools import run

from fbn_prune.errors import UserError
from fbn_prune.export.padding import full_width_layers, padding_note


def test_padding_note_names_the_full_width_layers():
    note = padding_note("padded", kept=[96, 40, 96, 56], stored=[96] * 4, original=[96] * 4)
    assert note.startswith("padded layout saves nothing") and "layers 0, 2 kept full width" in note
    assert full_width_layers([96, 40], [96, 96]) == [0]


def test_padding_note_silent_when_padding_saves_something():
    assert padding_note("padded", kept=[88, 40], stored=[88, 88], original=[96, 96]) is None
    assert padding_note("exact", kept=[96, 40], stored=[96, 40], original=[96, 96]) is None
    # rounding up alone can reach the original width
    assert "rounded up" in padding_note("padded", kept=[90, 40], stored=[96, 96], original=[96, 96])


def test_padded_that_saves_nothing_warns_everywhere(tiny_dir, calib_txt, tmp_path, caplog):
    out = tmp_path / "padded"
    with caplog.at_level(logging.WARNING, logger="fbn_prune"):
        r = run("prune", tiny_dir("llama"), "--out", out, "--calib", calib_txt, "--calib-samples", 16, "--seq-len", 64,
                "--runs", 1, "--components", 4, "--method", "magnitude", "--layout", "padded", "--protect-first", 1,
                "--ratio", 0.25, "--no-progress", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert any("padded layout saves nothing" in m and "layer 0 kept full width" in m for m in caplog.messages)
    assert "WARNING        padded layout saves nothing" in r.output
    assert "> **Warning:** padded layout saves nothing" in (out / "README.md").read_text()
    summary = run("inspect", out).output
    assert "(0.0% fewer)" in summary and "effective (" in summary and "zero padding not counted" in summary


def test_inspect_shows_stored_and_effective_for_exact(tiny_dir, calib_txt, tmp_path):
    out = tmp_path / "exact"
    r = run("prune", tiny_dir("llama"), "--out", out, "--calib", calib_txt, "--calib-samples", 16, "--seq-len", 64,
            "--runs", 1, "--components", 4, "--method", "magnitude", "--layout", "exact", "--ratio", 0.25,
            "--no-progress", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "saves nothing" not in r.output
    line = next(x for x in run("inspect", out).output.splitlines() if x.strip().startswith("parameters"))
    stored, effective = (int(s.split()[0].replace(",", "")) for s in (line.split("->")[1], line.split("), ")[1]))
    assert stored == effective  # exact stores no padding


def test_the_layout_registry_is_the_one_list():
    from fbn_prune.cli.main import cli
    from fbn_prune.config.layouts import LAYOUT_NAMES, LAYOUTS, layout_for
    from fbn_prune.config.recipe import Recipe

    for command in ("prune", "select"):
        option = next(p for p in cli.commands[command].params if p.name == "layout")
        assert tuple(option.type.choices) == LAYOUT_NAMES
    assert Recipe().export.layout == LAYOUT_NAMES[0]
    assert all(f"`{name}`" in Recipe.__dataclass_fields__["export"].default_factory.__dataclass_fields__["layout"]
               .metadata["help"] for name in LAYOUT_NAMES)
    # what each flag promises: one width for all, or per layer; zero padding; the shipped loader
    assert [(x.per_layer, x.zero_padded, x.remote_code) for x in LAYOUTS.values()] == \
        [(False, False, False), (True, True, False), (True, False, True), (True, False, True)]
    with pytest.raises(UserError, match="bad.yaml: export: layout must be one of uniform, padded, exact, deci, got 'x'"):
        Recipe.from_dict({"export": {"layout": "x"}}, where="bad.yaml")
    with pytest.raises(UserError, match="use --layout padded or exact or deci"):
        Recipe.from_dict({"selection": {"threshold": 1.0}})
    assert layout_for("exact").remote_code
    # deci: widths in steps of 256 (vLLM's DeciLM formula), Llama only
    assert layout_for("deci").width_step == 256 and layout_for("deci").model_types == ("llama",)
    with pytest.raises(UserError, match="give --round-to and --min-width as multiples of it .e.g. 256., got 128 and 256"):
        Recipe.from_dict({"export": {"layout": "deci"}, "selection": {"round_to": 128, "min_width": 256}})
    Recipe.from_dict({"export": {"layout": "deci"}, "selection": {"round_to": 512, "min_width": 256}})
