"""Evaluation limits: how many documents of each task to score (``200``, ``0.1``, ``200,wikitext=5``)."""

from __future__ import annotations

import math
from typing import Any

from fbn_prune.errors import UserError


def _limit_value(text: str, whole: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(
            f"limit {whole!r}: give a number of documents (200), a fraction below 1 (0.1) or TASK=N."
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"limit {whole!r} must be above 0.")
    if value < 1:
        return value
    if value != int(value):
        raise UserError(f"limit {whole!r}: a limit of 1 or more counts documents and must be a whole number.")
    return int(value)


def parse_limit(spec: Any) -> tuple[int | float | None, dict[str, int | float]]:
    """``"200"``, ``0.1``, ``"200,wikitext=5"`` or a list of such -> (default limit, per-task limits).

    Raises UserError for anything else (zero, negative, 2.5 documents, two defaults).
    """
    if spec is None:
        return None, {}
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    parts: list[str] = []
    for item in items:
        if isinstance(item, bool):
            raise UserError(f"limit {item!r} is not a number.")
        parts += [p.strip() for p in str(item).split(",") if p.strip()]
    default: int | float | None = None
    per_task: dict[str, int | float] = {}
    for part in parts:
        task, eq, value = part.rpartition("=")
        number = _limit_value(value.strip(), part)
        if eq:
            if not task.strip():
                raise UserError(f"limit {part!r}: name the task before '='.")
            per_task[task.strip()] = number
        elif default is not None:
            raise UserError(f"two default limits given ({default} and {part}); use TASK=N for per-task limits.")
        else:
            default = number
    return default, per_task
