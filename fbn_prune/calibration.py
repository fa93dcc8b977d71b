"""Calibration text -> tokenized documents split into disjoint runs.

Sources:
- a ``.txt`` file: one document per paragraph (blocks separated by blank lines;
  WikiText-style files, whose paragraphs are single lines, work as they are);
- a ``.jsonl`` file: one document per line, text in ``field``;
- an lm-eval task (``task``): the task's own documents rendered with its prompt
  format, so the networks found are the ones the task uses;
- ``data:REL``: a file REL inside the data folder (``--data-dir``, ``$FBN_PRUNE_DATA`` or
  ``../shared/data``), so recipes name data portably;
- ``generated``: text the model writes itself from a few neutral prompts (no data
  needed, so the embedded default runs anywhere).

Each run is one "session" of the fMRI analogy: every token of every document in the
run is one time point.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

log = logging.getLogger(__name__)

GENERATED = "generated"
DATA_PREFIX = "data:"
MIN_WORDS = 8  # shorter paragraphs (headings, fragments) are skipped

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


@dataclass
class CalibrationSet:
    """Tokenized calibration documents.

    Attributes:
        runs: ``runs[r][d]`` is the token id list of document d of run r (disjoint runs).
        holdout: documents kept aside (verification, never used for selection).
        source: a human-readable description of where the text came from.
        sha256: hash of the exact texts used (in order), for provenance.
    """

    runs: list[list[list[int]]]
    holdout: list[list[int]]
    source: str
    sha256: str

    @property
    def n_tokens(self) -> int:
        return sum(len(d) for run in self.runs for d in run)

    def run_tokens(self) -> list[int]:
        return [sum(len(d) for d in run) for run in self.runs]


def text_documents(path: str | Path, field: str = "text", what: str = "calibration file",
                   hint: str = "; choose the text field with --calib-field") -> list[str]:
    """Unfiltered documents of a file: one per line of a .jsonl (its ``field``), else the blocks
    between blank lines. Raises UserError for a missing, unreadable or malformed file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{what} {path} does not exist.")
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} cannot be read as UTF-8 text: {e}") from e
    if p.suffix != ".jsonl":
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


def read_documents(path: str, field: str = "text") -> list[str]:
    """Calibration documents of a local .txt or .jsonl file. Raises UserError when missing or empty.

    A text block of several long lines (WikiText: one paragraph per line) is split into its lines;
    documents under MIN_WORDS words (headings, fragments) are skipped.
    """
    docs = []
    for block in text_documents(path, field):
        lines = [ln.strip() for ln in block.split("\n") if ln.strip()]
        if Path(path).suffix != ".jsonl" and len(lines) > 1 and all(len(ln.split()) >= 20 for ln in lines):
            docs.extend(lines)
        else:
            docs.append(" ".join(lines))
    docs = [d for d in docs if len(d.split()) >= MIN_WORDS]
    if not docs:
        raise UserError(f"calibration file {path} holds no text (paragraphs of at least {MIN_WORDS} words).")
    return docs


def generate_documents(model, tokenizer, n: int, max_new_tokens: int, seed: int, batch_size: int = 16) -> list[str]:
    """``n`` texts the model writes itself, continuing ``PROMPTS`` with seeded sampling."""
    from tqdm.auto import tqdm

    from .placement import input_device

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
    """``data:REL`` names REL inside the data folder (--data-dir, $FBN_PRUNE_DATA or ../shared/data)."""
    if not source.startswith(DATA_PREFIX):
        return source
    from .tasks import data_dir as find_data

    return str(find_data(data_dir) / source[len(DATA_PREFIX):])


def load(recipe, model, tokenizer) -> CalibrationSet:
    """The calibration set a recipe asks for (file, lm-eval task, or self-generated)."""
    c, seed = recipe.calibration, recipe.seed
    total = c.samples + c.holdout
    if c.task:
        from .tasks import task_documents, task_manager

        tm = task_manager(data=recipe.data_dir)
        texts = task_documents(c.task, split="train", seed=seed, tm=tm)
        source = f"lm-eval task {c.task}"
    elif c.source and c.source != GENERATED:
        path = resolve_data_path(c.source, recipe.data_dir)
        texts = read_documents(path, c.field)
        source = c.source if c.source.startswith(DATA_PREFIX) else str(Path(path).expanduser().resolve())
    else:
        log.info("no calibration source given: the model writes %d calibration texts itself", total)
        texts = generate_documents(model, tokenizer, total, c.seq_len, seed)
        source = GENERATED
    if c.chat == "always" or (c.chat == "auto" and getattr(tokenizer, "chat_template", None)):
        texts = as_chat(tokenizer, texts)
        source += " (chat template)"
    cal = build(
        tokenizer, texts, samples=c.samples, runs=recipe.decomposition.runs, seq_len=c.seq_len,
        holdout=c.holdout, seed=seed, source=source,
    )
    k = recipe.decomposition.components
    short = [(r, t) for r, t in enumerate(cal.run_tokens()) if t < k] if recipe.selection.method in ("fbn", "fbn-paper") else []
    if short:
        r, t = short[0]
        raise UserError(
            f"run {r} has {t} calibration tokens, fewer than the {k} components; "
            "use more --calib-samples, a longer --seq-len, fewer --runs or fewer --components."
        )
    return cal
