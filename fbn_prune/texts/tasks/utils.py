"""Convert the local evaluation files into the fields lm-eval's built-in tasks expect.

lm-eval 0.4.13's built-in ``piqa``, ``arc_easy`` and ``wikitext`` read Hugging Face
datasets (``baber/piqa``, ``allenai/ai2_arc``, ``EleutherAI/wikitext_document_level``).
The files we have offline are the original releases, in other shapes:

- PIQA: ``valid.jsonl`` (goal, sol1, sol2) with the labels in a separate, line-aligned
  ``valid-labels.lst``;
- ARC: AI2's nested format (``question.stem``, ``question.choices[{text, label}]``);
- WikiText-2: the tokenized ``wiki.*.tokens`` text, one paragraph per line.

Each converter below writes JSON lines with exactly the Hugging Face fields, so the task
YAMLs next to this module can keep lm-eval's own ``doc_to_text`` / ``doc_to_target`` /
``doc_to_choice`` unchanged. Converters run once per data version, when the templates
are rendered (see :func:`fbn_prune.texts.tasks.render`); nothing here is imported by lm-eval.

The output file names are the ones the YAML templates point at (``@RENDERED@/data/...``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fbn_prune.errors import UserError


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping blank lines."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines (UTF-8, not ASCII-escaped); return how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def convert_piqa(data: Path, out: Path) -> None:
    """Merge ``piqa/valid.jsonl`` with ``piqa/valid-labels.lst`` into ``out/piqa/validation.jsonl``.

    Output rows have the ``baber/piqa`` fields: ``goal``, ``sol1``, ``sol2``, ``label`` (int).
    """
    docs = _read_jsonl(data / "piqa" / "valid.jsonl")
    with (data / "piqa" / "valid-labels.lst").open(encoding="utf-8") as fh:
        labels = [int(line) for line in fh if line.strip()]
    if len(docs) != len(labels):
        raise UserError(
            f"piqa/valid-labels.lst has {len(labels)} labels but piqa/valid.jsonl has {len(docs)} records in {data}."
        )
    _write_jsonl(
        out / "piqa" / "validation.jsonl",
        ({"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": y} for d, y in zip(docs, labels)),
    )


def arc_from_ai2(row: dict[str, Any]) -> dict[str, Any]:
    """One AI2-format ARC record in ``allenai/ai2_arc`` form.

    ``{"id", "question": {"stem", "choices": [{"text", "label"}, ...]}, "answerKey"}`` becomes
    ``{"id", "question": stem, "choices": {"text": [...], "label": [...]}, "answerKey"}``.
    """
    choices = row["question"]["choices"]
    return {
        "id": row["id"],
        "question": row["question"]["stem"],
        "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
        "answerKey": row["answerKey"],
    }


ARC_EASY_SPLITS = {"train": "ARC-Easy-Train.jsonl", "validation": "ARC-Easy-Dev.jsonl", "test": "ARC-Easy-Test.jsonl"}


def convert_arc_easy(data: Path, out: Path) -> None:
    """Write ``out/arc_easy/{train,validation,test}.jsonl`` from AI2's ``ARC-Easy-{Train,Dev,Test}.jsonl``."""
    for split, name in ARC_EASY_SPLITS.items():
        _write_jsonl(out / "arc_easy" / f"{split}.jsonl", map(arc_from_ai2, _read_jsonl(data / "arc_easy" / name)))


def _is_article_title(line: str) -> bool:
    """True for a top-level heading line `` = Title = `` (not `` = = Section = = ``)."""
    collapsed = line.replace("= = =", "===").replace("= =", "==").strip()
    return collapsed.startswith("= ") and collapsed.endswith(" =")


def wikitext_pages(text: str) -> Iterator[str]:
    """Split a WikiText file (one paragraph per line) into whole articles.

    Same rule as the ``EleutherAI/wikitext_document_level`` dataset that lm-eval's built-in
    ``wikitext`` task reads: a new page starts at each top-level `` = Title = `` line; lines are
    joined back with ``\\n`` unchanged (blank lines and the leading space kept), a page with
    only whitespace before the first title is dropped, and the last page keeps the file's
    trailing newline.
    """
    page: list[str] = []
    for line in text.split("\n"):
        if _is_article_title(line):
            if "\n".join(page).strip():
                yield "\n".join(page)
            page = []
        page.append(line)
    yield "\n".join(page)


WIKITEXT_SPLITS = {"validation": "valid.txt", "test": "test.txt"}


def convert_wikitext(data: Path, out: Path) -> None:
    """Write ``out/wikitext/{validation,test}.jsonl`` (``{"page": ...}`` rows) from ``wikitext2/{valid,test}.txt``."""
    for split, name in WIKITEXT_SPLITS.items():
        text = (data / "wikitext2" / name).read_text(encoding="utf-8")
        _write_jsonl(out / "wikitext" / f"{split}.jsonl", ({"page": p} for p in wikitext_pages(text)))
