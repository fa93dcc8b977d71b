"""Running the command line in tests: the happy path and the one-line bad-input path."""

from __future__ import annotations

from click.testing import CliRunner

from fbn_prune.cli.main import cli


def run(*args):
    """Invoke ``fbn-prune ARGS``; exceptions propagate (a crash is a test failure, not an exit code)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def bad(args, fragment, code=2):
    """Invoke ``fbn-prune ARGS`` expecting exit ``code`` and ``fragment`` in one clean message."""
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == code, r.output
    assert fragment in r.output, r.output
    assert "Traceback" not in r.output
    return r
