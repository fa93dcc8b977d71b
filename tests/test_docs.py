"""The README's contract (a landing page, the first-run block CI runs) and the MkDocs hooks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_RUN = [
    "bash scripts/install.sh && .venv/bin/fbn-prune prune --recipe smollm2-135m --out smollm2-pruned",
    "bash scripts/test.sh",
]


def first_run_block(text: str) -> list[str]:
    """The lines of the first ```bash block after the `<!-- first-run -->` line."""
    lines = text.splitlines()
    start = lines.index("<!-- first-run -->")
    opening = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```bash"))
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i].startswith("```"))
    return lines[opening + 1:closing]


def test_readme_is_a_landing_page_with_the_two_first_run_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert first_run_block(text) == FIRST_RUN
    assert "2502.20408" in text and "2508.05239" in text


def _hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_reference_marker_is_replaced():
    hooks = _hooks()
    out = hooks.on_page_markdown("# Recipe\n\n<!-- recipe-reference -->\n", None, {"extra": {}}, None)
    assert "<!-- recipe-reference -->" not in out
    assert "### `selection`" in out and "`--ratio`" in out
