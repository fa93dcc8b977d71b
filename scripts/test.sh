#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run the whole test suite, slow tests included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
# Tests that need evaluation data read the folder named by FBN_PRUNE_DATA; when it is unset and a
# development data folder lies beside the checkout (../shared/data), that one is used. Without
# either, those tests are skipped (tests/conftest.py's SHARED_DATA follows the same rule).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
VENV=${VENV:-.venv}
if [ -z "${FBN_PRUNE_DATA:-}" ] && [ -d ../shared/data ]; then
  FBN_PRUNE_DATA=$(cd ../shared/data && pwd)
  export FBN_PRUNE_DATA
fi
echo "test data: ${FBN_PRUNE_DATA:-none (tests that need it are skipped)}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
