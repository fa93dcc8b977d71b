"""The provenance record of a pruned checkpoint (``fbn_prune.json``): what was pruned, how, and what it became.

:class:`Provenance` is the typed form of that file. Its shape is :data:`FORMAT` (``fbn_prune/1``), described
by the JSON Schema shipped beside this module (``provenance.schema.json``). The pipeline builds one
(:func:`build_provenance`); :func:`fbn_prune.export.checkpoint.write_checkpoint` adds the verification;
later steps add their own entry (``gguf``: ``prune --to-gguf``; ``evaluation``: ``fbn-prune eval``; ``search``:
``fbn-prune search``; ``healing``: ``fbn-prune heal``) and write the record back.

Reading never rejects a record for its content (:func:`read_provenance` only needs a JSON object): the
commands that need a key check it themselves, with their own message. Keys this version does not know are
kept (:attr:`Provenance.extra`) and written back where they were, and the keys of a record read from a file
keep their order, so rewriting a record changes only what was changed.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fbn_prune import __version__
from fbn_prune._io.atomic import atomic_write
from fbn_prune._runtime.versions import versions
from fbn_prune.errors import UserError
from fbn_prune.models.identity import identify
from fbn_prune.models.placement import devices
from fbn_prune.select.budget import achieved_ratio

PROVENANCE_FILE = "fbn_prune.json"
FORMAT = "fbn_prune/1"
SCHEMA_FILE = Path(__file__).with_name("provenance.schema.json")

# written by every new record, null or not (in this order); the rest only once set
_ALWAYS = ("format", "fbn_prune_version", "created", "base_model", "base_model_path", "base_model_type",
           "base_model_hub_id", "base_model_identity", "weights_format", "license", "layout", "seed", "calibration",
           "decomposition", "selection", "params", "original_widths", "widths", "stored_widths", "kept", "versions",
           "device", "dtype")


@dataclass(eq=False)
class Provenance:
    """fbn_prune.json as a record; every field is None when the file lacks it.

    Per-layer lists have one entry per transformer layer (L): ``original_widths[i]`` FFN channels of the
    base model, ``widths[i]`` channels kept, ``stored_widths[i]`` channels the saved tensors hold (larger
    than ``widths[i]`` only in the padded layout). ``kept[str(i)]``: the kept channels' original indices
    (``widths[i]`` ints, ascending).

    The nested entries are mappings as written (see provenance.schema.json for their keys):
    ``calibration`` (source, documents, tokens, sha256, licence...), ``selection`` (method, ratio or
    threshold, achieved_ratio, protected layers, compensation), ``params`` (before, after,
    after_effective, FFN channels before/after), ``timings`` (seconds per stage), ``verification``
    (ok, relative_diff, tolerance, tokens...), ``gguf`` (file, architecture, dtype), ``evaluation``
    (report, metrics, gate), ``search`` (grid, best, gate, steps), ``healing`` (steps, tokens, KL before/after...).
    """

    format: str | None = None
    fbn_prune_version: str | None = None
    created: str | None = None  # ISO 8601, UTC
    base_model: str | None = None  # as the user named it
    base_model_path: str | None = None  # a local base folder
    base_model_type: str | None = None  # transformers model_type
    base_model_hub_id: str | None = None
    base_model_identity: dict[str, Any] | None = None  # models.identity.ModelIdentity.to_dict()
    weights_format: str | None = None  # "safetensors" or "pickle"
    license: str | None = None  # the base model's, when known at pruning time
    layout: str | None = None  # a name in config/layouts.py: "uniform", "padded", "exact" or "deci"
    seed: int | None = None
    calibration: dict[str, Any] | None = None
    decomposition: str | None = None  # in words
    selection: dict[str, Any] | None = None
    params: dict[str, int] | None = None
    original_widths: list[int] | None = None  # (L,)
    widths: list[int] | None = None  # (L,)
    stored_widths: list[int] | None = None  # (L,)
    kept: dict[str, list[int]] | None = None  # layer index (str) -> (widths[i],) original channel indices
    versions: dict[str, Any] | None = None  # python, torch, transformers, ...
    device: str | None = None
    dtype: str | None = None  # the dtype the weights are saved in
    timings: dict[str, float] | None = None
    verification: dict[str, Any] | None = None
    verified: bool | None = None
    gguf: dict[str, str] | None = None
    evaluation: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    healing: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read
    _order: list[str] = field(default_factory=lambda: list(_ALWAYS), repr=False)  # key order as read

    # ------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """The record as fbn_prune.json holds it: the keys of the file it was read from, in their order
        (one unset since is left out, except those every record has), then the keys set since."""
        out: dict[str, Any] = {}
        for key in self._order:
            if key in _KNOWN:
                value = getattr(self, key)
                if value is not None or key in _ALWAYS:
                    out[key] = value
            elif key in self.extra:
                out[key] = self.extra[key]
        for key in _KNOWN:
            if key not in out and key not in self._order and getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """The record of a parsed fbn_prune.json (any JSON object: absent keys are None)."""
        record = cls(**{k: data[k] for k in _KNOWN if k in data},
                     extra={k: v for k, v in data.items() if k not in _KNOWN})
        record._order = list(data)
        return record

    def to_json(self) -> str:
        """The text of fbn_prune.json (indent 1, no trailing newline)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Provenance:
        """The record of fbn_prune.json's text; ValueError when it is not a JSON object."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls.from_dict(data)

    def copy(self) -> Provenance:
        """A deep copy (the nested mappings too)."""
        return copy.deepcopy(self)

    def has(self, key: str) -> bool:
        """Whether the record holds ``key`` (a field that is set, or a key this version does not know)."""
        return (key in _KNOWN and getattr(self, key) is not None) or key in self.extra

    def require(self, *keys: str) -> None:
        """KeyError naming the first of ``keys`` the record lacks (as a dict lookup would)."""
        for key in keys:
            if getattr(self, key, None) is None:
                raise KeyError(key)


_KNOWN = tuple(f.name for f in fields(Provenance) if f.name not in ("extra", "_order"))


def read_provenance(folder: str | os.PathLike) -> Provenance:
    """The provenance of an fbn_prune checkpoint; UserError when the folder is not one."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        raise UserError(f"{folder} is not an fbn_prune checkpoint (no {PROVENANCE_FILE}).")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged (not valid JSON: {e}); write the checkpoint again.") from e
    if not isinstance(info, dict):
        raise UserError(f"{path} is damaged (not a JSON object); write the checkpoint again.")
    return Provenance.from_dict(info)


def add_total_time(folder: Path, total: float) -> None:
    """Record the whole run's seconds (``timings.total_s``) in ``folder``'s fbn_prune.json, replaced atomically."""
    info = read_provenance(folder)
    info.timings["total_s"] = round(total, 2)  # type: ignore[index]
    atomic_write(folder / PROVENANCE_FILE, info.to_json())


def build_provenance(recipe, source, model, pruned, adapter, kept, scores, artifact, budget, *,
                     uses_network_weight: bool) -> Provenance:
    """Everything fbn_prune.json records about a checkpoint just built (before verification and timings).

    ``kept[i]``: (widths[i],) kept channel indices of layer i; ``scores[i]``: (original_widths[i],) channel
    scores (only their count is read); ``budget``: the select.budget.Budget used; ``uses_network_weight``:
    whether the method reads ``selection.network_weight`` (its registry entry says), else it is recorded as null."""
    original = [int(s.numel()) for s in scores]
    stored = adapter.channel_widths(pruned)
    ppc = adapter.params_per_channel(model.config)
    before = model.num_parameters()
    after = pruned.num_parameters()
    s = recipe.selection
    layers = budget.pruned_layers(len(original))
    return Provenance(
        format=FORMAT,
        fbn_prune_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        base_model=source.base_model,
        base_model_path=source.path if source.local else None,
        base_model_type=model.config.model_type,
        base_model_hub_id=source.hub_id,
        base_model_identity=identify(source).to_dict(),  # checked by `fbn-prune eval --base`
        weights_format=source.weights_format,
        license=source.license,
        layout=recipe.export.layout,
        seed=recipe.seed,
        calibration=artifact.meta.calibration,
        decomposition=(f"{artifact.meta.runs} runs x {artifact.meta.components} ICA components per layer, "
                       f"FastICA fun={artifact.meta.ica['fun']}" if artifact.meta.runs else "none (method needs no ICA)"),
        selection={"method": s.method, "ratio": s.ratio, "ratio_of": s.ratio_of, "threshold": s.threshold,
                   "channel_ratio": budget.ratio, "achieved_ratio": achieved_ratio(kept, original, layers),
                   "protect_first": s.protect_first, "protect_last": s.protect_last,
                   "round_to": s.round_to, "min_width": s.min_width,
                   "network_weight": s.network_weight if uses_network_weight else None,
                   "compensate": s.compensate, "ridge": s.ridge if s.compensate != "none" else None},
        params={"before": before, "after": after,
                "after_effective": before - ppc * sum(o - k.numel() for o, k in zip(original, kept)),
                "ffn_channels_before": sum(original), "ffn_channels_after": sum(k.numel() for k in kept)},
        original_widths=original,
        widths=[int(k.numel()) for k in kept],
        stored_widths=[int(w) for w in stored],
        kept={str(i): k.tolist() for i, k in enumerate(kept)},
        versions=versions(),
        device=", ".join(devices(model)),
        dtype=recipe.export.dtype or recipe.dtype,
    )
