#!/usr/bin/env bash
# Paired comparison of fbn, FLAP and Wanda-sp at equal size on SmolLM2-135M-Instruct, through the
# user's own commands: one networks artifact (`fbn-prune networks`), one checkpoint per method and
# ratio from it (`fbn-prune select`, uniform layout, the same kept width per layer for every method),
# then one `fbn-prune eval` per ratio that scores the original and the three checkpoints on the same
# documents and prints paired intervals between every pair (eval.md in each report folder).
#
#   bash benchmarks/methods_paired.sh [CALIB=task|generic] [RATIOS="0.3 0.2 0.4"] [TASKS=arc_easy] \
#        [WORK=/tmp/methods-paired] [DTYPE=auto] [LIMIT=] [METHODS="fbn flap wanda-sp"] [BATCH=32]
#
# A METHODS entry METHOD@LAYOUT selects with that layout instead of uniform, e.g. fbn@exact (fbn's
# per-layer widths: the same number of FFN channels in all, spread over the layers by the scores).
# CALIB=task calibrates on ARC-Easy train (the task's own documents, `--calib-task arc_easy`);
# generic on the tool's default calibration (builtin:wikitext2-valid, the WikiText-2 sample shipped with
# fbn_prune, what `fbn-prune prune` uses without --calib). Evaluation data come from
# $FBN_PRUNE_DATA (full test sets unless LIMIT is given, e.g. LIMIT=arc_easy=500). Every step is
# skipped when its output exists, so an interrupted run resumes; the original's results come from
# the eval cache after the first ratio. Checkpoints are kept in WORK, so more tasks can be added
# later without a new selection (their earlier tasks come from the cache). The report of TASKS other
# than arc_easy is WORK/report-CALIB-RATIO-TASKS; WikiText-2 at context 2,048 wants BATCH=8 (the
# logits of 32 windows of 2,048 tokens take about 13 GB). DTYPE auto is bfloat16 where the machine
# multiplies it natively (a CPU with AVX512-BF16 or AMX, a GPU with bfloat16) and float32 elsewhere,
# where bfloat16 is emulated and many times slower.
set -euo pipefail
calib=${1:-task}
ratios=${2:-"0.3 0.2 0.4"}
tasks=${3:-arc_easy}
work=${4:-/tmp/methods-paired}
dtype=${5:-auto}
limit=${6:-}
methods=${7:-"fbn flap wanda-sp"}
batch=${8:-32}
: "${FBN_PRUNE_DATA:?set FBN_PRUNE_DATA to the evaluation data folder}"
export OMP_WAIT_POLICY=PASSIVE
if [ "$dtype" = auto ]; then
  dtype=$(python -c "import torch; from fbn_prune._runtime.devices import resolve_device; \
from fbn_prune._runtime.dtypes import native_bfloat16; \
print('bfloat16' if native_bfloat16(torch.device(resolve_device('auto'))) else 'float32')")
fi
mkdir -p "$work"
net="$work/networks-$calib"
case "$calib" in
  task) calib_args=(--calib-task arc_easy) ;;
  generic) calib_args=() ;;
  *) echo "CALIB is task or generic" >&2; exit 2 ;;
esac
if [ ! -f "$net/networks.json" ]; then
  /usr/bin/time -f "networks: %e s, peak RSS %M kB" fbn-prune networks smollm2 "${calib_args[@]}" \
    --out "$net" --no-progress > "$work/networks-$calib.log" 2>&1
  tail -1 "$work/networks-$calib.log"
fi
for ratio in $ratios; do
  pruned=()
  for spec in $methods; do
    method=${spec%@*}
    layout=uniform
    name="$method"
    if [[ "$spec" == *@* ]]; then layout=${spec#*@}; name="$method-$layout"; fi
    ckpt="$work/$calib-$name-$ratio"
    if [ ! -f "$ckpt/fbn_prune.json" ]; then
      fbn-prune select "$net" --out "$ckpt" --method "$method" --ratio "$ratio" --layout "$layout" \
        --overwrite --no-progress > "$work/select-$calib-$name-$ratio.log" 2>&1
    fi
    pruned+=(--pruned "$ckpt")
  done
  suffix=""
  [ "$tasks" != arc_easy ] && suffix="-${tasks//,/-}"
  report="$work/report-$calib-$ratio$suffix"
  args=(--base smollm2 "${pruned[@]}" --tasks "$tasks" --dtype "$dtype" --batch-size "$batch" --max-length 2048
        --data-dir "$FBN_PRUNE_DATA" --out "$report")
  [ -n "$limit" ] && args+=(--limit "$limit")
  /usr/bin/time -f "eval $calib $ratio: %e s, peak RSS %M kB" fbn-prune eval "${args[@]}" \
    > "$work/eval-$calib-$ratio$suffix.log" 2>&1 || true   # exit 1 only means a gate failed; there is none here
  tail -1 "$work/eval-$calib-$ratio$suffix.log"
  sed -n '/^| task | metric | comparison/,$p' "$report/eval.md"
done
