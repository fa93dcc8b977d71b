"""Reading text files into documents: .txt by paragraph, .jsonl by line, gzip or not.

Text files -> documents: a .txt file (one document per paragraph) or a .jsonl file (one per line),
either gzip-compressed or not, checked to be a readable regular text file first."""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import zlib
from pathlib import Path

from fbn_prune.errors import UserError

MIN_WORDS = 8  # shorter paragraphs (headings, fragments) are skipped


MAX_FILE_BYTES = 512 * 2**20  # a calibration file is read whole; more text than this is never needed


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
