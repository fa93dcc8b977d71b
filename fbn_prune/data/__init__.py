"""Data files shipped inside the package, and the registry of built-in calibration texts.

A built-in text is named ``builtin:NAME`` as a calibration source (``--calib``, ``calibration.source``);
its file, license and attribution live here, next to the text itself. Any file of this folder can
also be named ``data:FILE`` (see :mod:`fbn_prune.config.datadir`).
"""

from __future__ import annotations

from dataclasses import dataclass

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinText:
    """A calibration text shipped in this folder."""

    name: str
    file: str
    """The text file in this folder (.txt or .jsonl, optionally .gz)."""
    description: str
    license: str
    attribution: str
    license_file: str
    """The file in this folder with the full license and attribution."""

    @property
    def spec(self) -> str:
        return BUILTIN_PREFIX + self.name


BUILTIN: dict[str, BuiltinText] = {
    t.name: t
    for t in (
        BuiltinText(
            name="wikitext2-valid",
            file="wikitext2-valid-sample.txt.gz",
            description="every fourth article of the WikiText-2 validation split (15 Wikipedia articles)",
            license="CC BY-SA 3.0",
            attribution="WikiText-2 (Merity, Xiong, Bradbury and Socher, 2016, arXiv:1609.07843); "
                        "text by the contributors to Wikipedia",
            license_file="wikitext2-valid-sample.LICENSE.md",
        ),
    )
}
"""The built-in calibration texts, by name."""

DEFAULT_SOURCE = BUILTIN_PREFIX + "wikitext2-valid"
"""The calibration source of a recipe that names neither a source nor a task."""
