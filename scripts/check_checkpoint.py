"""Whether a folder holds a pruned checkpoint that passed fbn_prune's verification (CI's check).

    python scripts/check_checkpoint.py FOLDER

Reads FOLDER/fbn_prune.json (written by ``fbn-prune prune``): exit 0 and one summary line when it
records a passed verification, else exit 1 with the reason on stderr. Standard library only, so that
it runs on a CI runner's system Python next to a Docker engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROVENANCE = "fbn_prune.json"


class NotVerified(Exception):
    """The folder holds no checkpoint whose verification passed."""


def verified_checkpoint(folder: Path) -> str:
    """A one-line summary of the verified checkpoint in ``folder``; raises NotVerified otherwise."""
    path = Path(folder) / PROVENANCE
    if not path.is_file():
        raise NotVerified(f"{path} missing: no checkpoint was written")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise NotVerified(f"{path} is not JSON: {e}") from None
    result = info.get("verification") or {}
    if info.get("verified") is not True or result.get("ok") is not True:
        raise NotVerified(f"{path}: verification did not pass: {result or 'no verification recorded'}")
    weights = sorted(p.name for p in Path(folder).glob("*.safetensors"))
    if not weights:
        raise NotVerified(f"{folder}: no *.safetensors weights beside {PROVENANCE}")
    return (f"{folder}: verified checkpoint ({', '.join(weights)}; relative diff "
            f"{result.get('relative_diff', float('nan')):.2g}, top-1 agreement {result.get('top1_agreement', float('nan')):.4f})")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/check_checkpoint.py FOLDER", file=sys.stderr)
        return 2
    try:
        print(verified_checkpoint(Path(argv[0])))
    except NotVerified as e:
        print(f"check_checkpoint: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
