#!/usr/bin/env bash
# Build the documentation site with `mkdocs build --strict` (any warning fails the build).
#   VENV=path   the environment to use (default: .venv in the repository; made by scripts/install.sh)
#   SITE=path   where the site goes (default: a temporary folder, removed afterwards)
# The pinned documentation tools (the `docs` extra; versions in constraints.txt) are installed
# into the environment when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "error: no environment at $VENV; run scripts/install.sh first (or set VENV)." >&2
  exit 2
fi
if ! "$VENV/bin/python" -c "import mkdocs, material, mkdocs_click" 2>/dev/null; then
  # the docs extra's tools only, pinned by constraints.txt; fbn_prune itself is already installed
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt \
    mkdocs mkdocs-material mkdocs-click
fi
if [ -n "${SITE:-}" ]; then
  site=$SITE
else
  site=$(mktemp -d)
  trap 'rm -rf "$site"' EXIT
fi
# the hooks and mkdocs-click import fbn_prune from this checkout
NO_MKDOCS_2_WARNING=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m mkdocs build --strict -q -d "$site"
echo "docs: mkdocs build --strict passed${SITE:+ (site in $SITE)}"
