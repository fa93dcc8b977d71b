"""The recipe reference: every key of a Recipe as Markdown, read from the dataclasses themselves.

Each key's type and default come from its dataclass field in fbn_prune/config/recipe.py, its text from the
field's ``metadata["help"]``, and the command-line flag that overrides it from the options of
``fbn-prune prune``. The documentation build renders this (scripts/mkdocs_hooks.py), so the
reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Literal, get_args, get_origin

import click

from fbn_prune.cli import options
from fbn_prune.cli.prune import prune_command
from fbn_prune.config.layouts import LAYOUT_NAMES
from fbn_prune.config.recipe import Recipe
from fbn_prune.select.methods import method_names

# the option tables of cli/options.py: flag name -> (recipe key, click options)
_OPTION_TABLES = (options.CALIBRATION_OPTIONS, options.DECOMPOSITION_OPTIONS, options.SELECTION_OPTIONS,
                  options.EXPORT_OPTIONS, options.EVALUATION_OPTIONS, options.HEAL_OPTIONS,
                  options.RUN_OPTIONS)


@dataclass(frozen=True)
class KeyDoc:
    """One recipe key as the reference shows it."""

    key: str  # dotted, e.g. "selection.ratio"
    type: str  # e.g. "number or null", "`uniform` | `padded` | `exact`"
    default: str  # as YAML would write it, e.g. "0.2", "null", "[]"
    flag: str | None  # the `fbn-prune prune` flag that overrides it, e.g. "--ratio"
    help: str


@dataclass(frozen=True)
class SectionDoc:
    """A recipe section (``calibration``, ...) or the top level (name ``""``)."""

    name: str
    summary: str
    keys: list[KeyDoc]


def type_text(tp) -> str:
    """A field's type in words: ``int`` -> "integer", ``Literal["a", "b"]`` -> "`a` | `b`"."""
    origin = get_origin(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        text = " or ".join(type_text(a) for a in options)
        return text + " or null" if len(options) < len(get_args(tp)) else text
    if origin is list:
        (item,) = get_args(tp)
        return f"list of {type_text(item)}s"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, getattr(tp, "__name__", str(tp)))


def default_text(f: dataclasses.Field) -> str:
    """A field's default as it would appear in a recipe."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "[]" if value == [] else repr(value)
    if f.default is None:
        return "null"
    if isinstance(f.default, bool):
        return "true" if f.default else "false"
    return str(f.default)


def prune_flags() -> dict[str, str]:
    """Recipe key -> the `fbn-prune prune` flag or argument that sets it."""
    flags = {key: "--" + name.replace("_", "-") for table in _OPTION_TABLES for name, (key, _) in table.items()}
    top = {f.name for f in dataclasses.fields(Recipe)}
    for param in prune_command.params:
        if param.name in top:
            flags[param.name] = param.human_readable_name if isinstance(param, click.Argument) else max(param.opts, key=len)
    return flags


def sections(recipe_cls: type = Recipe) -> list[SectionDoc]:
    """The top-level keys, then one section per nested dataclass, in declaration order."""
    flags = prune_flags()
    hints = typing.get_type_hints(recipe_cls)
    top, nested = [], []
    for f in dataclasses.fields(recipe_cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub_hints = typing.get_type_hints(tp)
            keys = [_key(f"{f.name}.{g.name}", g, sub_hints[g.name], flags) for g in dataclasses.fields(tp)]
            nested.append(SectionDoc(f.name, _help(f), keys))
        else:
            top.append(_key(f.name, f, tp, flags))
    return [SectionDoc("", "Keys at the top of the recipe.", top), *nested]


def markdown(recipe_cls: type = Recipe) -> str:
    """The whole reference: one table per section (key, type, default, flag, meaning)."""
    out = []
    for section in sections(recipe_cls):
        out += [f"### `{section.name}`" if section.name else "### Top level", "", section.summary, "",
                "| key | type | default | flag | meaning |", "|---|---|---|---|---|"]
        for k in section.keys:
            name = k.key.split(".")[-1]
            flag = f"`{k.flag}`" if k.flag else ""
            out.append(f"| `{name}` | {k.type} | `{k.default}` | {flag} | {k.help} |")
        out.append("")
    return "\n".join(out)


def registry_choices() -> dict[str, tuple[str, ...]]:
    """Recipe keys whose values a registry lists (the recipe types them as plain strings)."""
    return {"selection.method": method_names(), "export.layout": LAYOUT_NAMES}


def _key(key: str, f: dataclasses.Field, tp, flags: dict[str, str]) -> KeyDoc:
    choices = registry_choices().get(key)
    kind = " \\| ".join(f"`{c}`" for c in choices) if choices else type_text(tp)
    return KeyDoc(key=key, type=kind, default=default_text(f), flag=flags.get(key), help=_help(f))


def _help(f: dataclasses.Field) -> str:
    if "help" not in f.metadata:
        raise ValueError(f"recipe field {f.name!r} has no metadata['help'] for the reference.")
    return f.metadata["help"].replace("|", "\\|")  # a bare | would end the table cell
