"""The console entry point sets OMP_WAIT_POLICY before torch loads (OpenMP reads it once, at load)."""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = """
import os, sys
seen = {}
class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "torch" not in seen:
            seen["torch"] = os.environ.get("OMP_WAIT_POLICY")
        return None
sys.meta_path.insert(0, Probe())
import fbn_prune.cli.entry
print(seen.get("torch"))
"""


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_passive_wait_is_set_before_torch_loads():
    assert _run(_PROBE) == "PASSIVE"


def test_the_users_own_wait_policy_is_kept():
    assert _run(_PROBE, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_importing_the_library_changes_no_environment():
    assert _run("import os, fbn_prune.pipeline, fbn_prune.cli.main; print(os.environ.get('OMP_WAIT_POLICY'))") == "None"
