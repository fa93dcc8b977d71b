"""The evaluation gate: the pass/fail rule a pruned model's metrics must meet (exit 3 when they do not)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fbn_prune.errors import UserError

GATE_ON = ("point", "ci")


@dataclass(frozen=True)
class Gate:
    """Pass/fail rule on the pruned model's metrics; give exactly one of ``max_drop`` and ``min_retention``.

    Attributes:
        max_drop: largest allowed fall of an accuracy-type metric, in percentage points (2 = 0.02 acc).
        min_retention: smallest allowed retention (pruned/original; original/pruned when lower is better).
        metrics: only these metric names are gated (e.g. ("acc_norm",)); None: all that the rule applies to.
        on: "point" (the measured values) or "ci" (the pessimistic bound of the 95% paired interval:
            the lower bound of the difference, or of the retention; a metric without an interval is
            not gated then).
    """

    max_drop: float | None = None
    min_retention: float | None = None
    metrics: tuple[str, ...] | None = None
    on: str = "point"

    @classmethod
    def make(cls, max_drop: float | None = None, min_retention: float | None = None,
             metrics: Any = None, on: str | None = None) -> Gate | None:
        """A validated gate, or None when neither threshold is given. Raises UserError for bad values."""
        on = on or "point"
        if on not in GATE_ON:
            raise UserError(f"--gate-on must be one of {', '.join(GATE_ON)}, got {on!r}.")
        if max_drop is not None and min_retention is not None:
            raise UserError("give one gate: --max-drop or --min-retention, not both.")
        if metrics is not None and max_drop is None and min_retention is None:
            raise UserError("--gate-metrics needs a gate: --max-drop or --min-retention.")
        if max_drop is None and min_retention is None:
            return None
        if max_drop is not None and not (math.isfinite(max_drop) and max_drop >= 0):
            raise UserError(f"--max-drop is in percentage points and must be >= 0, got {max_drop}.")
        if min_retention is not None and not (0 < min_retention <= 1):
            raise UserError(f"--min-retention is a fraction in (0, 1] (0.95 keeps 95%), got {min_retention}.")
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        return cls(max_drop, min_retention, tuple(metrics) if metrics else None, on)

    @property
    def rule(self) -> str:
        return "max_drop" if self.max_drop is not None else "min_retention"

    @property
    def threshold(self) -> float:
        return self.max_drop if self.max_drop is not None else self.min_retention  # type: ignore[return-value]

    def describe(self) -> str:
        which = f" on {', '.join(self.metrics)}" if self.metrics else ""
        bound = ", at the bound of the 95% paired interval" if self.on == "ci" else ""
        if self.max_drop is not None:
            return f"accuracy-type metrics{which} may fall at most {self.max_drop:g} points{bound}"
        return f"every metric{which} keeps at least {self.min_retention:.1%} of the original{bound}"
