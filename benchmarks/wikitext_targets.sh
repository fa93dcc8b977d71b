#!/usr/bin/env bash
# The generic perplexity targets on a larger WikiText-2 sample, through the user's own commands:
# `fbn-prune select` (same networks artifact, same budget for every method) + `fbn-prune eval`
# (lm-eval word perplexity on the first ARTICLES WikiText-2 test articles, context 2048). The
# original's results come from the eval cache after the first run.
#
#   bash benchmarks/wikitext_targets.sh /tmp/fbn-quality/networks-generic [ARTICLES=20] [WORK=/tmp/wikitext-targets]
#
# The networks artifact is the quality grid's generic one (python benchmarks/quality.py makes it).
# Prints one line per method and ratio: word perplexity of the original and the pruned model.
set -euo pipefail
net=${1:?usage: wikitext_targets.sh NETWORKS_DIR [ARTICLES] [WORK]}
articles=${2:-20}
work=${3:-/tmp/wikitext-targets}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$work"
for ratio in 0.2 0.3; do
  for method in fbn wanda-sp flap; do
    ckpt="$work/ckpt-$method-$ratio"
    fbn-prune select "$net" --out "$ckpt" --method "$method" --ratio "$ratio" --round-to 64 --min-width 64 \
      --compensate lstsq --layout uniform --overwrite --no-progress > "$work/select-$method-$ratio.log" 2>&1
    fbn-prune eval --base smollm2 --pruned "$ckpt" --tasks wikitext --limit "wikitext=$articles" --max-length 2048 \
      --batch-size 16 --out "$work/report-$method-$ratio" > "$work/eval-$method-$ratio.log" 2>&1
    rm -rf "$ckpt"
    python - "$work/report-$method-$ratio/eval.json" "$method" "$ratio" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
m = d["metrics"]
row = next(r for r in m if r.get("task") == "wikitext" and r.get("metric") == "word_perplexity")
print(f"{sys.argv[2]:>9} {float(sys.argv[3]):.0%}: word ppl original {row['original']:.2f}, pruned {row['pruned']:.2f}")
PY
  done
done
