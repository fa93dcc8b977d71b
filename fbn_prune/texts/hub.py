"""Calibration text from a Hugging Face dataset (hf:DATASET[:CONFIG]:SPLIT[:FIELD]).

``hf:DATASET[:CONFIG]:SPLIT[:FIELD]``: calibration text from a Hugging Face dataset, through
``datasets.load_dataset`` (downloaded when online, read from its cache offline)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fbn_prune.errors import UserError
from fbn_prune.texts.files import _non_empty, paragraphs
from fbn_prune.texts.records import CalibrationText

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class HubDataset:
    """A parsed ``hf:DATASET[:CONFIG]:SPLIT[:FIELD]`` source (``datasets.load_dataset(dataset, config, split=split)``)."""

    dataset: str
    config: str | None
    split: str
    field: str

    @property
    def spec(self) -> str:
        return f"{HF_PREFIX}{self.dataset}:{self.config or ''}:{self.split}:{self.field}"


def parse_hf(spec: str, field: str = "text") -> HubDataset:
    """``hf:DATASET:SPLIT``, ``hf:DATASET:CONFIG:SPLIT`` or ``hf:DATASET:CONFIG:SPLIT:FIELD`` (CONFIG may be
    empty: ``hf:DATASET::SPLIT:FIELD``); ``field`` is the text column when the spec names none. SPLIT may
    be a slice in ``datasets``' syntax (``train[:2000]``, ``train[:10%]``).

    Raises UserError for any other shape.
    """
    parts = re.split(r":(?![^\[]*\])", spec[len(HF_PREFIX):])  # a colon inside a split slice (train[:2000]) stays
    usage = ("give hf:DATASET[:CONFIG]:SPLIT[:FIELD], e.g. hf:Salesforce/wikitext:wikitext-2-raw-v1:validation "
             "or hf:DATASET::train[:2000]:content")
    if len(parts) == 2:
        dataset, config, split = parts[0], None, parts[1]
    elif len(parts) == 3:
        dataset, config, split = parts
    elif len(parts) == 4:
        dataset, config, split, field = parts
    else:
        raise UserError(f"{spec!r}: {usage}.")
    dataset, split, field = dataset.strip(), split.strip(), field.strip()
    if not dataset or not split or not field:
        raise UserError(f"{spec!r}: {usage} (the dataset, split and field must not be empty).")
    return HubDataset(dataset, (config or "").strip() or None, split, field)


def read_hf(hub: HubDataset) -> CalibrationText:
    """The ``field`` texts of a Hugging Face dataset split, through ``datasets.load_dataset`` (downloaded when
    online; offline, from the cache). UserError with one line when it cannot be had."""
    import datasets  # heavy (pyarrow, pandas): only for hf: sources
    from huggingface_hub import constants as hub_constants

    try:
        ds = datasets.load_dataset(hub.dataset, hub.config, split=hub.split)
    except ConnectionError as e:
        offline = hub_constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE
        if offline:
            raise UserError(f"{hub.spec}: dataset {hub.dataset} is not in the datasets cache and offline mode is on "
                            "(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); load it once with network access.") from None
        raise UserError(f"{hub.spec}: cannot reach the Hugging Face Hub for dataset {hub.dataset} ({_first_line(e)}).") from None
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError) as e:
        hint = "; to name a field without a config: hf:DATASET::SPLIT:FIELD" if "BuilderConfig" in str(e) else ""
        raise UserError(f"{hub.spec}: cannot load dataset {hub.dataset}: {_first_line(e)}{hint}") from None
    if isinstance(ds, dict) or not hasattr(ds, "column_names"):
        raise UserError(f"{hub.spec}: name one split of {hub.dataset}.")
    if hub.field not in ds.column_names:
        raise UserError(f"{hub.spec}: {hub.dataset} has no {hub.field!r} column; its columns: "
                        f"{', '.join(ds.column_names)} (name one as the last part of the spec, or with --calib-field).")
    texts = [t for t in ds[hub.field] if isinstance(t, str) and t.strip()]
    docs = _non_empty(paragraphs(texts, jsonl=True), hub.spec)
    license_ = getattr(ds.info, "license", None) or None
    return CalibrationText(docs, hub.spec, license=license_)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
