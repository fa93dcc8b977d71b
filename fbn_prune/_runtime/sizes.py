"""Sizes the user types: ``4GB``, ``8GiB``, ``512MB``, and ``--max-memory`` maps (``0=70GiB,cpu=200GiB``)."""

from __future__ import annotations

import re

from fbn_prune.errors import UserError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int | float, what: str = "size") -> int:
    """``"4GB"`` -> 4_000_000_000, ``"4GiB"`` -> 4 * 2**30, ``"512MB"``, ``"1.5G"``, ``123`` (bytes).

    Raises UserError for anything else.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text <= 0:
            raise UserError(f"{what} must be positive, got {text!r}.")
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise UserError(f"{what} must be a size such as 4GB, 512MB or 8GiB, got {text!r}.")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def gb(n: float) -> str:
    """Bytes as a short human figure: ``'35.2 GB'``, ``'512 MB'``."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def parse_max_memory(text: str) -> dict[int | str, int]:
    """``"70GiB"`` (each GPU) -> ``{"gpu": bytes}``; ``"0=70GiB,1=70GiB,cpu=200GiB"`` -> ``{0: .., 1: .., "cpu": ..}``.

    Raises UserError for anything else.
    """
    out: dict[int | str, int] = {}
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        if "=" not in part:
            if out:
                raise UserError(f"max_memory (--max-memory): give one size for every GPU or DEVICE=SIZE pairs, got {text!r}.")
            out["gpu"] = parse_size(part, "max_memory (--max-memory)")
            continue
        key, size = (s.strip() for s in part.split("=", 1))
        if not re.fullmatch(r"\d+|cpu", key):
            raise UserError(f"max_memory (--max-memory): devices are GPU numbers or cpu, got {key!r}.")
        out[int(key) if key.isdigit() else key] = parse_size(size, "max_memory (--max-memory)")
    if not out:
        raise UserError(f"max_memory (--max-memory) is empty: {text!r}.")
    return out
