"""MkDocs hooks (mkdocs.yml `hooks:`) for the fbn_prune site.

- `<!-- recipe-reference -->` in a page becomes the recipe reference rendered from the Recipe
  dataclasses (fbn_prune/cli/reference.py), so it always matches the code.
"""

from __future__ import annotations

import logging

from fbn_prune.cli.reference import markdown as recipe_reference

log = logging.getLogger("mkdocs.hooks.fbn_prune")

MARKER = "<!-- recipe-reference -->"


def on_page_markdown(markdown, page, config, files):
    """Fill in the generated recipe reference."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, recipe_reference())
    return markdown
