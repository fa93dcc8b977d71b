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

import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from fbn_prune.config import datadir
from fbn_prune.config.datadir import DATA_PREFIX
from fbn_prune.data import BUILTIN_PREFIX, DEFAULT_SOURCE
from fbn_prune.errors import UserError
from fbn_prune.texts.builtin import builtin, read_builtin
from fbn_prune.texts.files import read_documents
from fbn_prune.texts.generated import GENERATED, generate_documents
from fbn_prune.texts.hub import HF_PREFIX, parse_hf, read_hf
from fbn_prune.texts.records import CalibrationText
from fbn_prune.texts.tasks.documents import task_documents  # lm_eval itself loads only when a task is read
from fbn_prune.texts.tasks.manager import task_manager

log = logging.getLogger(__name__)



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



# ----------------------------------------------------------------------------- built-in texts



# ----------------------------------------------------------------------------- Hugging Face datasets




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
    return cal


def check_run_tokens(cal: CalibrationSet, components: int) -> None:
    """UserError unless every run of ``cal`` has at least ``components`` tokens (ICA needs as many).
    Called, by the pipeline, for methods that need ICA maps."""
    short = [(r, t) for r, t in enumerate(cal.run_tokens()) if t < components]
    if short:
        r, t = short[0]
        raise UserError(
            f"run {r} has {t} calibration tokens, fewer than the {components} components; "
            "use more --calib-samples, a longer --seq-len, fewer --runs or fewer --components."
        )
