#!/usr/bin/env bash
# The largest ratio that keeps ARC-Easy acc_norm within 2 points of the original at the 95% paired
# interval's bound (`--gate-on ci`), per method, on SmolLM2-135M-Instruct: one `fbn-prune search` per
# method through the user's own command, then a table of every probe.
#
#   bash benchmarks/search_methods.sh [METHODS="fbn flap wanda-sp"] [WORK=/tmp/search-methods] \
#        [STEP=0.05] [MAX_RATIO=0.4] [LIMIT=]
#
# Each method is calibrated on ARC-Easy train (`--calib-task arc_easy`) and gated on the full ARC-Easy
# test (2,376 questions, from $FBN_PRUNE_DATA) unless LIMIT is given (e.g. 500). The probes are
# evaluated in bfloat16 with context 2,048 and batch 32, the settings of benchmarks/methods_paired.sh,
# so a probe whose checkpoint that script already evaluated comes from the evaluation cache. An
# interrupted run resumes (each search keeps its history); a finished method is skipped.
set -euo pipefail
methods=${1:-"fbn flap wanda-sp"}
work=${2:-/tmp/search-methods}
step=${3:-0.05}
max_ratio=${4:-0.4}
limit=${5:-}
: "${FBN_PRUNE_DATA:?set FBN_PRUNE_DATA to the evaluation data folder}"
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$work"
for method in $methods; do
  out="$work/search-$method"
  [ -f "$out/search.json" ] || [ -f "$work/$method.failed" ] && continue
  args=(smollm2 --tasks arc_easy --max-drop 2 --gate-on ci --gate-metrics acc_norm --calib-task arc_easy
        --method "$method" --step "$step" --max-ratio "$max_ratio" --eval-dtype bfloat16 --eval-max-length 2048
        --batch-size 32 --data-dir "$FBN_PRUNE_DATA" --out "$out" --no-progress)
  [ -n "$limit" ] && args+=(--limit "$limit")
  rc=0
  /usr/bin/time -f "search $method: %e s, peak RSS %M kB" fbn-prune search "${args[@]}" \
    > "$work/search-$method.log" 2>&1 || rc=$?
  [ "$rc" -eq 3 ] && touch "$work/$method.failed"   # no ratio on the grid holds the gate: a result too
  [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { tail -5 "$work/search-$method.log"; exit "$rc"; }
  tail -1 "$work/search-$method.log"
done
python3 - "$work" $methods <<'PYTHON'
import json, sys
from pathlib import Path
work, methods = Path(sys.argv[1]), sys.argv[2:]
print("| method | largest ratio holding | probes: ratio (removed) acc_norm change [95% interval] |")
print("|---|---:|---|")
for m in methods:
    curve = work / f"search-{m}" / "search.json"
    history = work / f".search-{m}.search" / "history.json"
    data = json.loads(curve.read_text()) if curve.is_file() else json.loads(history.read_text())
    probes = []
    for s in sorted(data["steps"], key=lambda s: s["ratio"]):
        row = next(r for r in s["metrics"] if r["metric"] == "acc_norm")
        probes.append(f"{s['ratio']:.2f}: {100 * row['delta']:+.1f} [{100 * row['delta_low']:+.1f}, "
                      f"{100 * row['delta_high']:+.1f}] {'holds' if s['passed'] else 'fails'}")
    best = data.get("best")
    print(f"| {m} | {'none' if best is None else f'{best:.2f}'} | " + "; ".join(probes) + " |")
PYTHON
