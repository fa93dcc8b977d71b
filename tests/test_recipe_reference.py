"""The generated recipe reference: every Recipe key with its type, default, flag and help."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

import pytest

from fbn_prune.select.methods import method_names
from fbn_prune.cli import reference as ref
from fbn_prune.config.recipe import Recipe


def test_every_recipe_key_is_documented_with_help():
    docs = {k.key: k for s in ref.sections() for k in s.keys}
    expected = set()
    for name, tp in typing.get_type_hints(Recipe).items():
        if dataclasses.is_dataclass(tp):
            expected |= {f"{name}.{g.name}" for g in dataclasses.fields(tp)}
        else:
            expected.add(name)
    assert set(docs) == expected
    assert all(k.help.strip() for k in docs.values())


def test_types_defaults_and_flags():
    docs = {k.key: k for s in ref.sections() for k in s.keys}
    assert docs["selection.ratio"].type == "number or null"
    assert docs["selection.ratio"].default == "0.2"
    assert docs["selection.ratio"].flag == "--ratio"
    assert docs["export.layout"].type == "`uniform` \\| `padded` \\| `exact` \\| `deci`"
    assert docs["selection.method"].type == " \\| ".join(f"`{m}`" for m in method_names())
    assert docs["export.dtype"].default == "null"
    assert docs["evaluation.tasks"].type == "list of strings"
    assert docs["evaluation.tasks"].default == "[]"
    assert docs["evaluation.tasks"].flag == "--eval-tasks"
    assert docs["decomposition.jobs"].type == "integer or string"
    assert docs["model"].flag == "MODEL"
    assert docs["out"].flag == "--out"
    assert docs["calibration.holdout"].flag is None  # recipe only


def test_markdown_has_one_table_per_section_with_whole_rows():
    text = ref.markdown()
    for name in ("calibration", "decomposition", "selection", "export", "evaluation"):
        assert f"### `{name}`" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == sum(len(s.keys) for s in ref.sections())
    # a help text with |z| must not split its row into extra cells
    for row in rows:
        assert row.replace("\\|", "").count("|") == 6, row
    assert "\\|z\\|" in text


@dataclass
class Inner:
    documented: int = field(default=1, metadata={"help": "yes"})
    bare: Literal["a", "b"] = "a"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner, metadata={"help": "a section"})


def test_a_field_without_help_is_refused():
    with pytest.raises(ValueError, match="'bare' has no metadata"):
        ref.sections(Outer)
