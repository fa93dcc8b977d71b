"""MkDocs hooks (mkdocs.yml `hooks:`) for the fbn_prune site.

- `<!-- recipe-reference -->` in a page becomes the recipe reference rendered from the Recipe
  dataclasses (fbn_prune/recipe_reference.py), so it always matches the code.
- Pages in LATER_PAGES are written alongside the rest of the documentation and may be absent
  from a checkout: while one is absent, its nav entry is dropped and links to it are shown as
  plain text, so `mkdocs build --strict` still checks every other page and link. Once the page
  exists, both appear as written.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from fbn_prune.recipe_reference import markdown as recipe_reference

log = logging.getLogger("mkdocs.hooks.fbn_prune")

MARKER = "<!-- recipe-reference -->"
LATER_PAGES = frozenset({
    "safety.md", "errors.md", "hub.md", "calibration.md",
    "docker.md", "serving.md", "gguf.md", "statistics.md",
})
_LINK = re.compile(r"\[([^\]]+)\]\(((?:\.\./)*)([a-z0-9_-]+\.md)(#[^)]*)?\)")


def on_config(config):
    """Drop nav entries of LATER_PAGES that this checkout does not have."""
    docs = Path(config["docs_dir"])
    missing = {p for p in LATER_PAGES if not (docs / p).is_file()}
    if missing:
        log.info("pages not in this checkout, left out of the nav: %s", ", ".join(sorted(missing)))
        config["nav"] = _prune_nav(config["nav"], missing)
    config["extra"]["fbn_missing_pages"] = sorted(missing)
    return config


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, recipe_reference())
    missing = set(config["extra"].get("fbn_missing_pages", []))
    if missing:
        def unlink(m: re.Match) -> str:
            return m.group(1) if m.group(3) in missing else m.group(0)

        markdown = _LINK.sub(unlink, markdown)
    return markdown


def _prune_nav(nav, missing: set[str]):
    """The nav without entries pointing at a missing page (sections left empty go too)."""
    out = []
    for item in nav or []:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                value = _prune_nav(value, missing)
                if value:
                    out.append({title: value})
            elif value not in missing:
                out.append(item)
        elif item not in missing:
            out.append(item)
    return out
