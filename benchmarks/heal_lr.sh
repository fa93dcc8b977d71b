#!/usr/bin/env bash
# Which learning rate heals fastest: short `fbn-prune heal` runs of one pruned checkpoint with LoRA
# and with every weight training, each at a few peak learning rates, compared by the held-out KL to
# the original that every healed checkpoint records (10% of the text's documents, never trained on).
#
#   bash benchmarks/heal_lr.sh PRUNED [STEPS=25] [WORK=/tmp/heal-lr] [CONFIGS="lora:5e-4 lora:2e-3 ..."]
#
# PRUNED: a pruned checkpoint (e.g. `fbn-prune prune smollm2 --ratio 0.3 --out p30`). The text is
# WikiText-2 validation from $FBN_PRUNE_DATA. Each run is skipped when its output exists.
set -euo pipefail
pruned=${1:?a pruned checkpoint}
steps=${2:-25}
work=${3:-/tmp/heal-lr}
configs=${4:-"lora:5e-4 lora:2e-3 lora:5e-3 full:2e-5 full:1e-4"}
: "${FBN_PRUNE_DATA:?set FBN_PRUNE_DATA to the evaluation data folder}"
mkdir -p "$work"
for cfg in $configs; do
  mode=${cfg%%:*}; lr=${cfg#*:}
  out="$work/$mode-$lr-$steps"
  extra=()
  [ "$mode" = full ] && extra=(--full)
  if [ ! -f "$out/fbn_prune.json" ]; then
    /usr/bin/time -f "$mode $lr: %e s wall, peak RSS %M kB" fbn-prune heal "$pruned" --out "$out" \
      --calib "$FBN_PRUNE_DATA/wikitext2/valid.txt" --steps "$steps" --lr "$lr" "${extra[@]}" \
      --overwrite --no-progress > "$out.log" 2>&1
    tail -1 "$out.log"
  fi
done
echo "| what trains | peak lr | held-out KL before | after $steps steps | training s | tokens/s |"
echo "|---|---:|---:|---:|---:|---:|"
for cfg in $configs; do
  mode=${cfg%%:*}; lr=${cfg#*:}
  python - "$work/$mode-$lr-$steps/fbn_prune.json" "$mode" "$lr" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))["healing"]
what = "LoRA, rank %d" % h["settings"]["lora_rank"] if sys.argv[2] == "lora" else "every weight"
print(f"| {what} | {sys.argv[3]} | {h['heldout_kl_before']:.4f} | {h['heldout_kl_after']:.4f} | "
      f"{h['seconds']:.0f} | {h['tokens_per_s']:.0f} |")
PY
done
