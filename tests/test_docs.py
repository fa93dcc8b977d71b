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


def test_module_map_lists_every_module_with_the_first_line_of_its_docstring():
    import archrules

    assert "<!-- module-map -->" in (ROOT / "docs" / "development.md").read_text()
    out = _hooks().on_page_markdown("# Development\n\n<!-- module-map -->\n", None, {"extra": {}}, None)
    assert "<!-- module-map -->" not in out
    rows = {line.split("|")[1].strip(" `"): line for line in out.splitlines() if line.startswith("| `")}
    pkg = archrules.scan(ROOT / "fbn_prune")
    expected = {("/".join(m.split(".")) + "/") if p.name == "__init__.py" else str(p.relative_to(ROOT).as_posix())
                for m, p in pkg.modules.items()}
    assert set(rows) == expected
    assert "fbn_prune/cli/main.py" in rows and not [r for r in rows if "templates" in r]
    for module, path in pkg.modules.items():
        row = rows[str(path.relative_to(ROOT).as_posix()) if path.name != "__init__.py" else module.replace(".", "/") + "/"]
        first = archrules.summary_line(pkg, module)
        assert (first or "*(no docstring)*").replace("|", "\\|") in row, (module, row)


def test_module_map_escapes_table_bars_and_orders_packages_first(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text('"""The package."""\n')
    (root / "a.py").write_text('"""Reads a | b.\n\nMore."""\n')
    (root / "sub" / "__init__.py").write_text('"""A sub-package."""\n')
    (root / "sub" / "b.py").write_text("x = 1\n")
    assert _hooks().module_map(root).splitlines()[2:] == [
        "| `pkg/` | The package. |",
        "| `pkg/a.py` | Reads a \\| b. |",
        "| `pkg/sub/` | A sub-package. |",
        "| `pkg/sub/b.py` | *(no docstring)* |",
    ]


def test_development_page_names_the_lazy_import_allow_list():
    import archrules

    text = " ".join((ROOT / "docs" / "development.md").read_text().split())
    listed = text.split("only when it is optional or heavy (")[1].split(")")[0]
    assert {name.strip() for name in listed.split(",")} == set(archrules.LAZY_ALLOWED)
