"""The fbn-prune console entry point, which sets OMP_WAIT_POLICY before torch loads.

The ``fbn-prune`` console entry point: sets the process environment the command runs best in, before
torch loads, then runs the command group (fbn_prune/cli/main.py)."""

import os

PASSIVE_WAIT = ("OMP_WAIT_POLICY", "PASSIVE")
"""Idle OpenMP threads sleep instead of spinning. Measured with benchmarks/ica.py (3,000 tokens x 1,536
neurons, 64 components) on a 2-core machine shared with other busy processes: the reduction step took
1.0-1.2 s with PASSIVE and 3.1-16 s without. Set by the command (unless the user set it) before torch
loads, since OpenMP reads it once; importing fbn_prune as a library changes no environment."""

os.environ.setdefault(*PASSIVE_WAIT)  # here, at import: torch reads it once, when it loads

from fbn_prune.cli.main import cli  # noqa: E402  (after the environment is set)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="fbn-prune")
