#!/bin/bash
# The default job on the embedded SmolLM2-135M-Instruct, once in one process and once under
# `torchrun --nproc-per-node N` (default 2), same command; prints both runs' timings and whether the
# weights, the kept channels and the safetensors file are the same. Usage:
#   bash benchmarks/distributed_identity.sh [N] [WORK]
set -euo pipefail
N=${1:-2}
WORK=${2:-/tmp/fbn-distributed}
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 FBN_PRUNE_CACHE=$WORK/cache
mkdir -p "$WORK" && rm -rf "$WORK/one" "$WORK/two"
/usr/bin/time -v $PY -m fbn_prune prune smollm2 --out "$WORK/one" --no-progress > "$WORK/one.log" 2>&1
/usr/bin/time -v $PY -m torch.distributed.run --nproc-per-node "$N" --standalone -m fbn_prune prune smollm2 \
  --out "$WORK/two" --no-progress > "$WORK/two.log" 2>&1
grep -hE "timings|Elapsed|Maximum resident" "$WORK/one.log" "$WORK/two.log"
WORK=$WORK $PY - <<'PY'
import filecmp, json, os
from safetensors.torch import load_file
w = os.environ["WORK"]
a = load_file(f"{w}/one/model.safetensors"); b = load_file(f"{w}/two/model.safetensors")
same = sum(bool((a[k] == b[k]).all()) and a[k].dtype == b[k].dtype for k in a)
print("tensors identical:", same, "of", len(a), "keys equal:", sorted(a) == sorted(b))
ka = json.load(open(f"{w}/one/fbn_prune.json"))["kept"]; kb = json.load(open(f"{w}/two/fbn_prune.json"))["kept"]
print("kept identical:", ka == kb)
print("file bytes identical:", filecmp.cmp(f"{w}/one/model.safetensors", f"{w}/two/model.safetensors", shallow=False))
PY
