"""fbn_prune.json as a typed record: a real checkpoint's file validates against the shipped JSON Schema, reading and
writing it back changes no byte, keys this version does not know stay where they were, and damaged files are one
UserError naming the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fbn_prune import pipeline
from fbn_prune.config.recipe import Recipe
from fbn_prune.errors import UserError
from fbn_prune.export.provenance import FORMAT, PROVENANCE_FILE, SCHEMA_FILE, Provenance, read_provenance


# ----------------------------------------------------------------------------- a tiny JSON Schema validator
# jsonschema is not a dependency: this checks the subset of draft 2020-12 the schema uses
# (type, enum, required, properties, additionalProperties, items, minimum).
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
USED = {"$schema", "$id", "title", "description", "type", "enum", "required", "properties", "additionalProperties",
        "items", "minimum"}


def _is(value, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[kind])


def errors(value, schema: dict, where: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (empty: valid)."""
    assert set(schema) <= USED, f"{where}: the validator does not know {set(schema) - USED}"
    out = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return [f"{where}: {value!r} is not {' or '.join(kinds)}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and _is(value, "number") and value < schema["minimum"]:
        out.append(f"{where}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        out += [f"{where}: lacks {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                out += errors(v, props[k], f"{where}.{k}")
            elif extra is False:
                out.append(f"{where}: unexpected {k!r}")
            elif isinstance(extra, dict):
                out += errors(v, extra, f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += errors(v, schema["items"], f"{where}[{i}]")
    return out


def test_the_validator_rejects():
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer", "minimum": 0}},
              "additionalProperties": {"type": "array", "items": {"type": "string"}}}
    assert errors({"a": 1, "b": ["x"]}, schema) == []
    assert errors({"a": True}, schema) and errors({"a": -1}, schema) and errors({}, schema)
    assert errors({"a": 1, "b": [1]}, schema) and errors([], schema)


# ----------------------------------------------------------------------------- a real checkpoint
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_dir, calib_txt) -> Path:
    out = tmp_path_factory.mktemp("provenance") / "tiny-pruned"
    recipe = Recipe.from_dict({
        "model": str(tiny_dir("llama")), "out": str(out), "device": "cpu",
        "calibration": {"source": str(calib_txt), "samples": 16, "seq_len": 64, "batch_size": 8, "holdout": 2},
        "selection": {"method": "magnitude", "ratio": 0.25},
    })
    return pipeline.prune(recipe, progress=False)


def test_the_schema_is_package_data():
    assert SCHEMA_FILE.is_file() and SCHEMA_FILE.parent.name == "export"
    assert "export/provenance.schema.json" in (Path(__file__).parents[1] / "pyproject.toml").read_text()


def test_a_checkpoints_record_validates_against_the_schema(checkpoint):
    schema = json.loads(SCHEMA_FILE.read_text())
    info = json.loads((checkpoint / PROVENANCE_FILE).read_text())
    assert errors(info, schema) == []
    assert info["format"] == FORMAT and set(schema["required"]) <= set(info)
    assert set(info) <= set(schema["properties"]), "every key the pipeline writes is described"
    broken = {**info, "layout": "diagonal", "params": {**info["params"], "before": "many"}}
    assert len(errors(broken, schema)) == 2


def test_reading_and_writing_back_changes_no_byte(checkpoint):
    text = (checkpoint / PROVENANCE_FILE).read_text()
    record = read_provenance(checkpoint)
    assert record.to_json() == text and Provenance.from_json(text).to_json() == text
    assert record.layout == "uniform" and record.verified is True and record.widths == [len(k) for k in record.kept.values()]
    assert record.timings["total_s"] >= 0 and record.selection["method"] == "magnitude"


def test_keys_keep_their_place(checkpoint):
    data = json.loads((checkpoint / PROVENANCE_FILE).read_text())
    data = {"from_the_future": [1], **data, "evaluation": {"gate": None}, "later": "x"}
    record = Provenance.from_dict(data)
    assert record.extra == {"from_the_future": [1], "later": "x"}
    assert list(record.to_dict()) == list(data) and record.to_dict() == data
    record.evaluation = None  # a key unset since is left out
    record.gguf = {"file": "m.gguf", "architecture": "llama", "dtype": "f16"}  # a new one comes last
    keys = list(record.to_dict())
    assert "evaluation" not in keys and keys[-1] == "gguf" and keys[0] == "from_the_future"
    assert record.copy().to_dict() == record.to_dict()


def test_a_new_record_writes_every_base_key():
    fresh = Provenance(format=FORMAT, layout="exact").to_dict()
    assert list(fresh)[:3] == ["format", "fbn_prune_version", "created"] and fresh["base_model_path"] is None
    assert "timings" not in fresh and "verified" not in fresh


def test_require_names_the_missing_key():
    with pytest.raises(KeyError, match="params"):
        Provenance.from_dict({"layout": "uniform"}).require("layout", "params")


@pytest.mark.parametrize("content, why", [("{oops", "not valid JSON"), ("[]", "not a JSON object"),
                                          (b"\xff" * 8, "not valid JSON")])
def test_a_damaged_record_is_one_user_error(tmp_path, content, why):
    path = tmp_path / PROVENANCE_FILE
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=re.escape(why)):
        read_provenance(tmp_path)
    with pytest.raises(UserError, match="is not an fbn_prune checkpoint"):
        read_provenance(tmp_path / "nothing")
