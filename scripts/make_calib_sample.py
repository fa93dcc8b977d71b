"""Rebuild fbn_prune/data/wikitext2-valid-sample.txt.gz, the built-in calibration sample.

The sample is every fourth article (the 1st, 5th, 9th, ...) of the WikiText-2 validation split
(the tokenized release, wiki.valid.tokens), lines copied verbatim, gzip-compressed without a
timestamp so the file is byte-reproducible.

    python scripts/make_calib_sample.py PATH/TO/wikitext2/valid.txt
"""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "fbn_prune" / "data" / "wikitext2-valid-sample.txt.gz"
EVERY = 4


def articles(text: str) -> list[list[str]]:
    """The file's articles: each starts at a top-level heading line `` = Title = ``."""
    found: list[list[str]] = []
    for line in text.split("\n"):
        if re.fullmatch(r" = [^=].* = ", line):
            found.append([line])
        elif found:
            found[-1].append(line)
    return found


def main(source: str) -> None:
    chosen = articles(Path(source).read_text(encoding="utf-8"))[::EVERY]
    text = "\n".join(line for article in chosen for line in article) + "\n"
    OUT.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    print(f"{OUT}: {len(chosen)} articles, {len(text.encode()):,} bytes of text, {OUT.stat().st_size:,} compressed")


if __name__ == "__main__":
    main(sys.argv[1])
