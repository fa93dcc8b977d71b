"""A test hook for fault injection, used by tests/test_faults.py and nothing else.

``FBN_PRUNE_TEST_KILL_AT=POINT`` (capture, decompose, export or heal) makes the process SIGKILL itself
at POINT (capture: before the second batch, the first one written; decompose: after the first
map file; export: after the weights were written into the temporary folder; heal: in the third
training step), exactly as an out-of-memory kill or ``kill -9`` would. ``FBN_PRUNE_TEST_KILL_SIGNAL=TERM``
(or INT) sends that signal instead, as ``docker stop`` or Ctrl-C would. Under torchrun
``FBN_PRUNE_TEST_KILL_RANK=K`` limits it to rank K. Unset, it costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "FBN_PRUNE_TEST_KILL_AT"
RANK_ENV = "FBN_PRUNE_TEST_KILL_RANK"
SIGNAL_ENV = "FBN_PRUNE_TEST_KILL_SIGNAL"
_seen: dict[str, int] = {}


def kill_point(name: str, at: int = 1) -> None:
    """SIGKILL this process (or send it $FBN_PRUNE_TEST_KILL_SIGNAL) on the ``at``-th call with ``name`` when
    $FBN_PRUNE_TEST_KILL_AT is ``name``."""
    if os.environ.get(KILL_ENV) != name:
        return
    if os.environ.get(RANK_ENV) not in (None, os.environ.get("RANK")):
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == at or (_seen[name] > at and not os.environ.get(SIGNAL_ENV)):
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get(SIGNAL_ENV, "KILL")))
