"""The README's two first-run commands, so that CI runs exactly what a new user reads.

Contract with README.md: the commands are the only lines of the first ```bash fenced block
after a line containing ``<!-- first-run -->``; the first line sets up and runs the default job,
the second runs the tests.

Usage: python scripts/readme_commands.py [README] {first,test,out}
prints that command, or (out) the output folder the first command names with --out.
Exit 2 with one line on stderr when the README breaks the contract.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

MARKER = "<!-- first-run -->"


class ContractError(ValueError):
    """The README does not hold the first-run block as agreed."""


@dataclass(frozen=True)
class FirstRun:
    first: str  # sets up and runs the default job
    test: str  # runs the tests

    @property
    def out(self) -> str:
        """The folder the first command writes its checkpoint to (its ``--out``/``-o`` value)."""
        words = shlex.split(self.first)
        for flag in ("--out", "-o"):
            if flag in words[:-1]:
                return words[words.index(flag) + 1]
        outs = [w.split("=", 1)[1] for w in words if w.startswith("--out=")]
        if not outs:
            raise ContractError(f"the first command names no --out folder: {self.first}")
        return outs[0]


def extract(text: str) -> FirstRun:
    """The two commands of the first ```bash block after the first-run marker."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if MARKER in line)
    except StopIteration:
        raise ContractError(f"no line containing {MARKER}") from None
    try:
        fence = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```bash")
    except StopIteration:
        raise ContractError(f"no ```bash block after {MARKER}") from None
    body = []
    for line in lines[fence + 1:]:
        if line.strip().startswith("```"):
            break
        body.append(line)
    else:
        raise ContractError(f"the ```bash block after {MARKER} is not closed")
    commands = [line.strip() for line in body if line.strip()]
    if len(commands) != 2 or any(c.startswith("#") or c.endswith("\\") for c in commands):
        raise ContractError(f"the ```bash block after {MARKER} must hold exactly two one-line commands, "
                            f"found {len(commands)} lines: {commands}")
    return FirstRun(first=commands[0], test=commands[1])


def main(argv: list[str]) -> int:
    if len(argv) == 1:
        argv = ["README.md", *argv]
    if len(argv) != 2 or argv[1] not in ("first", "test", "out"):
        print("usage: python scripts/readme_commands.py [README] {first,test,out}", file=sys.stderr)
        return 2
    try:
        print(getattr(extract(Path(argv[0]).read_text(encoding="utf-8")), argv[1]))
    except (OSError, ContractError) as e:
        print(f"readme_commands: {argv[0]}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
