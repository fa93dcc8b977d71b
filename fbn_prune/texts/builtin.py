"""``builtin:NAME``: calibration texts shipped inside the package (fbn_prune/data, with their licenses)."""

from __future__ import annotations

import gzip
from importlib import resources

from fbn_prune.data import BUILTIN, BUILTIN_PREFIX, BuiltinText
from fbn_prune.errors import UserError
from fbn_prune.texts.files import _decode, _is_jsonl, _non_empty, _split_text, paragraphs


def builtin(spec: str) -> BuiltinText:
    """The built-in text ``builtin:NAME`` names; UserError listing the known names otherwise."""
    name = spec[len(BUILTIN_PREFIX):] if spec.startswith(BUILTIN_PREFIX) else spec
    if name not in BUILTIN:
        raise UserError(f"unknown built-in calibration text {spec!r}; known: "
                        f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN)}.")
    return BUILTIN[name]


def read_builtin(text: BuiltinText) -> list[str]:
    """The documents of a built-in text, read from the package with :mod:`importlib.resources`."""
    raw = resources.files("fbn_prune.data").joinpath(text.file).read_bytes()
    if text.file.endswith(".gz"):
        raw = gzip.decompress(raw)
    jsonl = _is_jsonl(text.file)
    blocks = _split_text(_decode(raw, text.file, "built-in text"), text.file, "text", jsonl, "")
    return _non_empty(paragraphs(blocks, jsonl), BUILTIN_PREFIX + text.name)
