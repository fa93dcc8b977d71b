"""MkDocs hooks (mkdocs.yml `hooks:`) for the fbn_prune site.

- `<!-- recipe-reference -->` in a page becomes the recipe reference rendered from the Recipe
  dataclasses (fbn_prune/cli/reference.py), so it always matches the code.
- `<!-- module-map -->` becomes the package tree, one row per module with the first line of its
  docstring (its job), read from the source with ast (nothing is imported), so it follows every move.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from fbn_prune.cli.reference import markdown as recipe_reference

log = logging.getLogger("mkdocs.hooks.fbn_prune")

MARKER = "<!-- recipe-reference -->"
MODULE_MAP = "<!-- module-map -->"
PACKAGE = Path(__file__).resolve().parents[1] / "fbn_prune"
NOT_MODULES = ("templates",)  # export/templates: a loader copied into checkpoints, not part of the package


def _summary(path: Path) -> str:
    """The first line of a module's docstring ('' without one)."""
    doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path)))
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


def module_map(root: Path = PACKAGE) -> str:
    """The package tree as a Markdown table: each package (its folder) and module with its docstring's first line."""
    files = [p for p in root.rglob("*.py") if not any(part in NOT_MODULES for part in p.relative_to(root).parts)]

    def order(p: Path) -> tuple[str, ...]:  # a package's own row first, then its members by name
        rel = p.relative_to(root)
        return rel.parts[:-1] + (("",) if p.name == "__init__.py" else (p.name,))

    rows = ["| module | job |", "|---|---|"]
    for path in sorted(files, key=order):
        rel = path.relative_to(root.parent)
        name = f"{rel.parent.as_posix()}/" if path.name == "__init__.py" else rel.as_posix()
        job = _summary(path).replace("|", "\\|") or "*(no docstring)*"
        rows.append(f"| `{name}` | {job} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown, page, config, files):
    """Fill in the generated recipe reference and the module map."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, recipe_reference())
    if MODULE_MAP in markdown:
        markdown = markdown.replace(MODULE_MAP, module_map())
    return markdown
