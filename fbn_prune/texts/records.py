"""What a text source yields: its documents and where they came from (with the license to cite)."""

from __future__ import annotations

from dataclasses import dataclass


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
