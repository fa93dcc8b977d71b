"""The ``ppl:FILE`` task: the perplexity of a local text file, computed by lm-eval itself.

A small rolling-loglikelihood task is rendered for the file (like lm-eval's ``wikitext``: word
perplexity, byte perplexity, bits per byte, aggregated over all documents weighted by words/bytes).
The task's YAML is ``yaml.safe_dump`` of a dict (:func:`ppl_config`), so any path or name is quoted
correctly; it and the file's documents (``data.jsonl``) are rendered once per file content under
``<fbn_prune cache>/eval/ppl/``.

Public API: :data:`PPL_PREFIX`, :func:`ppl_task`, :func:`ppl_config`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from fbn_prune._io.atomic import atomic_dir
from fbn_prune._runtime.cache import cache_dir
from fbn_prune.errors import UserError
from fbn_prune.models.identity import file_sha256
from fbn_prune.texts.calibration import resolve_data_path
from fbn_prune.texts.files import text_documents

PPL_PREFIX = "ppl:"
"""Task-name prefix for the perplexity of a local text file: ``ppl:/path/file.txt``."""

_HEADER = """\
# Rendered by fbn_prune for a ppl: file (sha256 {digest}); its path is metadata.source.
# Rolling loglikelihood over each document, like lm-eval's wikitext task: word perplexity,
# byte perplexity and bits per byte, aggregated over all documents (weighted by words/bytes).
"""


def _ppl_documents(path: Path) -> list[str]:
    """A text file's documents: .jsonl -> the "text" field of each line; else blocks between blank lines."""
    docs = text_documents(path, "text", "perplexity file", hint="")
    if not docs:
        raise UserError(f"perplexity file {path} holds no text.")
    return docs


def ppl_config(name: str, source: Path, digest: str, data: Path) -> dict:
    """The lm-eval task config of ``ppl:source`` (documents in the JSON-lines file ``data``)."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "should_decontaminate": True,
        "doc_to_decontamination_query": "{{text}}",
        "metric_list": [
            {"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
        ],
        "metadata": {"version": 1.0, "source": str(source), "sha256": digest},
    }


def ppl_task(spec: str, data_dir: str | None = None) -> tuple[str, Path]:
    """Render the rolling-perplexity task of ``ppl:FILE``; return (task name, YAML path).

    FILE may be ``data:REL`` (a file in the data folder). Documents: the "text" field of each
    line of a .jsonl file, or the blocks of a text file separated by blank lines (each block
    is scored on its own, as lm-eval scores each WikiText article). The task is named
    ``ppl_<file stem>`` and rendered once per file content under ``<cache>/eval/ppl/``.

    Raises UserError for a missing, unreadable or empty file.
    """
    raw = spec[len(PPL_PREFIX):] if spec.startswith(PPL_PREFIX) else spec
    if not raw.strip():
        raise UserError("ppl: needs a file, e.g. ppl:notes.txt.")
    path = Path(resolve_data_path(raw.strip(), data_dir)).expanduser()
    if not path.is_file():
        raise UserError(f"missing data file {raw} for task {PPL_PREFIX}{raw}.")
    path = path.resolve()
    docs = _ppl_documents(path)
    digest = file_sha256(path)
    name = "ppl_" + (re.sub(r"[^0-9a-zA-Z]+", "_", path.stem).strip("_").lower() or "file")
    final = cache_dir() / "eval" / "ppl" / f"{name}-{digest[:16]}"
    yaml_path = final / f"{name}.yaml"
    if yaml_path.is_file():
        return name, yaml_path

    def fill(tmp: Path) -> None:
        with (tmp / "data.jsonl").open("w", encoding="utf-8") as fh:
            for doc in docs:
                fh.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
        config = ppl_config(name, path, digest, final / "data.jsonl")
        text = _HEADER.format(digest=digest) + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        (tmp / f"{name}.yaml").write_text(text, encoding="utf-8")

    atomic_dir(final, fill, prefix=".ppl-")  # rendered meanwhile by another process: theirs is the same
    return name, yaml_path
