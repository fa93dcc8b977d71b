"""Calibration text -> tokenized documents split into disjoint runs.

Sources (``calibration.source``, ``--calib``; see docs/calibration.md):
- ``builtin:NAME``: a text shipped inside the package (:data:`BUILTIN`); the default is
  ``builtin:wikitext2-valid``, a WikiText-2 validation sample (CC BY-SA 3.0);
- a ``.txt`` file: one document per paragraph (blocks separated by blank lines;
  WikiText-style files, whose paragraphs are single lines, work as they are);
- a ``.jsonl`` file: one document per line, text in ``field``; either may be gzip-compressed (``.gz``);
- ``data:REL``: REL in the package's own data, else in the data folder (``--data-dir`` or
  ``$FBN_PRUNE_DATA``; see :mod:`fbn_prune.config.datadir`), so recipes name data portably;
- ``hf:DATASET[:CONFIG]:SPLIT[:FIELD]``: a Hugging Face dataset through ``datasets.load_dataset``
  (downloaded when online, read from its cache offline);
- ``generated``: text the model writes itself from a few neutral prompts;
- an lm-eval task (``calibration.task``, ``--calib-task``): the task's own documents rendered with
  its prompt format, so the networks found are the ones the task uses.

Everything but ``generated`` is read by :func:`prepare`, which needs no model: the pipeline calls
it before the weights load, so a bad source fails in seconds.

Each run is one "session" of the fMRI analogy: every token of every document in the
run is one time point.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import re
import stat
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from fbn_prune.config import datadir
from fbn_prune.data import BUILTIN, BUILTIN_PREFIX, DEFAULT_SOURCE, BuiltinText
from fbn_prune.config.datadir import DATA_PREFIX
from fbn_prune.errors import UserError
from fbn_prune.texts.tasks.documents import task_documents  # lm_eval itself loads only when a task is read
from fbn_prune.texts.tasks.manager import task_manager

log = logging.getLogger(__name__)

GENERATED = "generated"
HF_PREFIX = "hf:"
MIN_WORDS = 8  # shorter paragraphs (headings, fragments) are skipped
MAX_FILE_BYTES = 512 * 2**20  # a calibration file is read whole; more text than this is never needed

# Neutral openings for self-generated calibration text (general-purpose prose).
PROMPTS = (
    "The history of the city begins",
    "In mathematics, a function is",
    "Scientists have recently discovered that",
    "The recipe calls for",
    "Once upon a time, in a small village,",
    "The main causes of the war were",
    "To install the software, first",
    "Photosynthesis is the process by which",
    "The football match ended",
    "According to the report, the economy",
    "The museum's collection includes",
    "Question: Why do leaves change color in autumn?\nAnswer:",
    "The river flows through",
    "In his early career, the musician",
    "A healthy diet should include",
    "The following instructions explain how to",
)


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


@dataclass
class CalibrationText:
    """Calibration documents as read from their source, before any model is involved.

    Attributes:
        texts: the documents (None: ``generated``, the model writes them once it is loaded).
        source: a human-readable description of where the text came from.
        license: the text's license when known (built-in texts, Hugging Face datasets that state one).
        attribution: whom the text is due to, for built-in texts.
    """

    texts: list[str] | None
    source: str
    license: str | None = None
    attribution: str | None = None


@dataclass
class CalibrationSet:
    """Tokenized calibration documents.

    Attributes:
        runs: ``runs[r][d]`` is the token id list of document d of run r (disjoint runs).
        holdout: documents kept aside (verification, never used for selection).
        source: a human-readable description of where the text came from.
        sha256: hash of the exact texts used (in order), for provenance.
        license: the text's license when known.
        attribution: whom the text is due to, when known.
    """

    runs: list[list[list[int]]]
    holdout: list[list[int]]
    source: str
    sha256: str
    license: str | None = None
    attribution: str | None = None

    @property
    def n_tokens(self) -> int:
        return sum(len(d) for run in self.runs for d in run)

    def run_tokens(self) -> list[int]:
        return [sum(len(d) for d in run) for run in self.runs]


# ----------------------------------------------------------------------------- files
def check_file(path: str | Path, what: str = "calibration file") -> Path:
    """``path`` if it is a regular, readable file of at most MAX_FILE_BYTES; UserError saying what it is otherwise.

    A directory, a device (/dev/zero), a pipe or a socket is named as such, never "does not exist".
    """
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist.") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read: {e.strerror or e}.") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {path} is a directory, not a file; give a .txt or .jsonl file.")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a character device" if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
                else "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise UserError(f"{what} {path} is {kind}, not a regular file; give a .txt or .jsonl file.")
    if not os.access(p, os.R_OK):
        raise UserError(f"{what} {path} is not readable (permission denied).")
    if st.st_size > MAX_FILE_BYTES:
        raise UserError(f"{what} {path} is {st.st_size / 2**20:,.0f} MiB; calibration reads at most "
                        f"{MAX_FILE_BYTES // 2**20} MiB of text: give a sample of it (a few thousand documents are plenty).")
    return p


def _decode(raw: bytes, path: str | Path, what: str) -> str:
    """Bytes of a text file as text; UserError for binary content or invalid UTF-8."""
    if b"\x00" in raw[:65536]:
        raise UserError(f"{what} {path} is binary, not text (it holds NUL bytes); give a .txt or .jsonl file.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start}).") from None


def _file_text(path: str | Path, what: str) -> str:
    """The text of a checked file, gunzipped when its name ends in .gz."""
    p = check_file(path, what)
    try:
        raw = p.read_bytes()
        if p.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{what} {path} is not a valid gzip file ({e}).") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read: {e.strerror or e}.") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UserError(f"{what} {path} holds more than {MAX_FILE_BYTES // 2**20} MiB of text; give a sample of it.")
    return _decode(raw, path, what)


def _is_jsonl(path: str | Path) -> bool:
    name = Path(path).name
    return name.endswith(".jsonl") or name.endswith(".jsonl.gz")


def _split_text(raw: str, path: str | Path, field: str, jsonl: bool, hint: str) -> list[str]:
    """One document per line of a .jsonl (its ``field``), else the blocks between blank lines."""
    if not jsonl:
        return [b.strip() for b in re.split(r"\n[ \t]*\n", raw.replace("\r\n", "\n")) if b.strip()]
    docs = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {n}: not valid JSON ({e.msg}).") from e
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise UserError(f"{path}, line {n}: no {field!r} text field{hint}.")
        if record[field].strip():
            docs.append(record[field])
    return docs


def text_documents(path: str | Path, field: str = "text", what: str = "calibration file",
                   hint: str = "; choose the text field with --calib-field") -> list[str]:
    """Unfiltered documents of a file: one per line of a .jsonl (its ``field``), else the blocks
    between blank lines (``.gz`` files are decompressed first). Raises UserError for a missing,
    unreadable, non-regular, huge, binary or malformed file."""
    return _split_text(_file_text(path, what), path, field, _is_jsonl(path), hint)


def paragraphs(blocks: list[str], jsonl: bool) -> list[str]:
    """Calibration documents of a file's blocks: a block of several long lines (WikiText: one
    paragraph per line) is split into its lines; documents under MIN_WORDS words (headings,
    fragments) are skipped."""
    docs = []
    for block in blocks:
        lines = [ln.strip() for ln in block.split("\n") if ln.strip()]
        if not jsonl and len(lines) > 1 and all(len(ln.split()) >= 20 for ln in lines):
            docs.extend(lines)
        else:
            docs.append(" ".join(lines))
    return [d for d in docs if len(d.split()) >= MIN_WORDS]


def _non_empty(docs: list[str], source: str) -> list[str]:
    if not docs:
        raise UserError(f"calibration source {source} holds no text (paragraphs of at least {MIN_WORDS} words).")
    return docs


def read_documents(path: str | Path, field: str = "text") -> list[str]:
    """Calibration documents of a local .txt or .jsonl file (optionally .gz); see :func:`paragraphs`.

    Raises UserError when the file is missing, unreadable or holds no text.
    """
    return _non_empty(paragraphs(text_documents(path, field), _is_jsonl(path)), str(path))


# ----------------------------------------------------------------------------- built-in texts
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


# ----------------------------------------------------------------------------- Hugging Face datasets
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


def generate_documents(model, tokenizer, n: int, max_new_tokens: int, seed: int, batch_size: int = 16) -> list[str]:
    """``n`` texts the model writes itself, continuing ``PROMPTS`` with seeded sampling."""
    from tqdm.auto import tqdm

    from fbn_prune.models.placement import input_device

    device = input_device(model)
    gen = torch.Generator().manual_seed(seed)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts: list[str] = []
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            for start in tqdm(range(0, n, batch_size), desc="generate calibration", unit="batch"):
                chunk = prompts[start : start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
                out = model.generate(
                    **enc, do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
                texts += tokenizer.batch_decode(out, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return texts


CHAT_PROMPT = "Write a passage."


def as_chat(tokenizer, texts: list[str]) -> list[str]:
    """Each text as the assistant's reply in the tokenizer's chat template.

    An instruct model is served in its chat format; calibrating on bare text leaves out the
    neurons of the role and turn tokens (on SmolLM2 pruned that way, the model answers
    questions with an immediate end of turn).
    """
    return [tokenizer.apply_chat_template([{"role": "user", "content": CHAT_PROMPT}, {"role": "assistant", "content": t}],
                                          tokenize=False) for t in texts]


def build(
    tokenizer,
    texts: list[str],
    *,
    samples: int,
    runs: int,
    seq_len: int,
    holdout: int,
    seed: int,
    source: str,
) -> CalibrationSet:
    """Sample ``samples + holdout`` documents (seeded), tokenize, truncate, split into runs.

    Raises UserError when there are fewer documents than runs.
    """
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    chosen = [texts[i] for i in order[: samples + holdout]]
    used, held = chosen[:samples], chosen[samples:]
    if len(used) < runs:
        raise UserError(f"calibration has {len(used)} documents, fewer than the {runs} runs asked for.")
    if len(used) < samples:
        log.warning("calibration has %d documents; %d were asked for", len(used), samples)
    digest = hashlib.sha256("\n\x00".join(used).encode()).hexdigest()
    ids = [tokenizer(t, truncation=True, max_length=seq_len)["input_ids"] for t in used]
    ids = [d for d in ids if len(d) >= 2]
    held_ids = [d for d in (tokenizer(t, truncation=True, max_length=seq_len)["input_ids"] for t in held) if len(d) >= 2]
    # runs are disjoint; within a run, documents go longest first so batches carry little padding
    split = [sorted(ids[r::runs], key=len, reverse=True) for r in range(runs)]
    return CalibrationSet(runs=split, holdout=held_ids, source=source, sha256=digest)


def resolve_data_path(source: str, data_dir: str | None) -> str:
    """``data:REL`` -> the file it names (the package's own data first, then the data folder); other
    sources unchanged. See :func:`fbn_prune.config.datadir.resolve`."""
    if not source.startswith(DATA_PREFIX):
        return source
    return str(datadir.resolve(source, data_dir))


def prepare(recipe) -> CalibrationText:
    """Read the calibration text a recipe asks for, without any model (``generated``: no text yet).

    Called before the weights load, so every check of the source (file exists and is a readable
    regular text file, ``data:`` and ``builtin:`` names, ``hf:`` syntax and dataset, task name and
    data) fails in seconds. Raises UserError.
    """
    c = recipe.calibration
    if recipe.data_dir:
        datadir.find(recipe.data_dir)  # a --data-dir that was given must exist, whatever the source
    if c.task:
        tm = task_manager(data=recipe.data_dir)
        return CalibrationText(task_documents(c.task, split="train", seed=recipe.seed, tm=tm), f"lm-eval task {c.task}")
    spec = c.source or DEFAULT_SOURCE
    if spec == GENERATED:
        return CalibrationText(None, GENERATED)
    if spec.startswith(BUILTIN_PREFIX):
        text = builtin(spec)
        return CalibrationText(read_builtin(text), spec, license=text.license, attribution=text.attribution)
    if spec.startswith(HF_PREFIX):
        return read_hf(parse_hf(spec, c.field))
    path = resolve_data_path(spec, recipe.data_dir)
    docs = read_documents(path, c.field)
    return CalibrationText(docs, spec if spec.startswith(DATA_PREFIX) else str(Path(path).expanduser().resolve()))


def load(recipe, model, tokenizer, text: CalibrationText | None = None) -> CalibrationSet:
    """The calibration set a recipe asks for: ``text`` from :func:`prepare` (read now when None), or
    texts the model writes itself for ``generated``; wrapped in the chat template when the recipe asks."""
    c, seed = recipe.calibration, recipe.seed
    text = text if text is not None else prepare(recipe)
    texts, source = text.texts, text.source
    if texts is None:
        total = c.samples + c.holdout
        log.info("calibration source 'generated': the model writes %d calibration texts itself", total)
        texts = generate_documents(model, tokenizer, total, c.seq_len, seed)
    if c.chat == "always" or (c.chat == "auto" and getattr(tokenizer, "chat_template", None)):
        texts = as_chat(tokenizer, texts)
        source += " (chat template)"
    cal = build(
        tokenizer, texts, samples=c.samples, runs=recipe.decomposition.runs, seq_len=c.seq_len,
        holdout=c.holdout, seed=seed, source=source,
    )
    cal.license, cal.attribution = text.license, text.attribution
    k = recipe.decomposition.components
    short = [(r, t) for r, t in enumerate(cal.run_tokens()) if t < k] if recipe.selection.method in ("fbn", "fbn-paper") else []
    if short:
        r, t = short[0]
        raise UserError(
            f"run {r} has {t} calibration tokens, fewer than the {k} components; "
            "use more --calib-samples, a longer --seq-len, fewer --runs or fewer --components."
        )
    return cal
