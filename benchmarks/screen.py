"""Screen selection methods on SmolLM2-135M-Instruct at equal size, with and without compensation.

Uses a networks artifact (created with `fbn-prune networks ... --out DIR` or by this script
when --networks does not exist yet) and evaluates masked models (mathematically the pruned
ones, see fbn_prune.export.verify.masked): WikiText-2 test token perplexity on a fixed prefix and,
optionally, ARC-Easy test acc_norm on the first N questions. Prints a Markdown table.

    python benchmarks/screen.py --networks /tmp/net-wt --ratios 0.2,0.4
    python benchmarks/screen.py --networks /tmp/net-arc --calib-task arc_easy --arc 200
    python benchmarks/screen.py --networks /tmp/net-wt --methods flap,fbn@0,fbn@1 --compensate lstsq

A method may carry its network weight: fbn@0 (no membership prior), fbn-act@0.25.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads on a shared CPU

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quick_eval import arc_easy_acc_norm, wikitext_ppl  # noqa: E402

from fbn_prune import pipeline  # noqa: E402
from fbn_prune.models.arch import adapter_for  # noqa: E402
from fbn_prune.config.recipe import Recipe  # noqa: E402
from fbn_prune.select.compensate import compensate  # noqa: E402
from fbn_prune.select.methods import layer_scores  # noqa: E402
from fbn_prune.select.budget import Budget, select  # noqa: E402
from fbn_prune.export.verify import masked  # noqa: E402

METHODS = ["fbn-paper", "random", "magnitude", "wanda-sp", "flap", "fbn-act", "fbn"]


def parse_variant(spec: str) -> tuple[str, float | None]:
    """"fbn@0.25" -> ("fbn", 0.25): a method and its network weight (None: the recipe's)."""
    method, _, weight = spec.partition("@")
    return method, float(weight) if weight else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", required=True, help="networks artifact folder (created if missing)")
    ap.add_argument("--recipe", default="smollm2-135m", help="recipe used to create the artifact")
    ap.add_argument("--calib-task", help="create the artifact from this lm-eval task's documents")
    ap.add_argument("--calib-chat", choices=["auto", "always", "never"], help="override calibration.chat")
    ap.add_argument("--data", default=os.environ.get("FBN_PRUNE_DATA"),
                    help="the evaluation data folder [$FBN_PRUNE_DATA]")
    ap.add_argument("--ratios", default="0.2,0.4")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--compensate", default="none,lstsq")
    ap.add_argument("--ppl-tokens", type=int, default=4096)
    ap.add_argument("--arc", type=int, default=0, help="ARC-Easy test questions (0: skip)")
    args = ap.parse_args()
    if not args.data:
        ap.error("give the evaluation data folder: --data or FBN_PRUNE_DATA")

    recipe = Recipe.load(args.recipe).override({"data_dir": args.data})
    if args.calib_task:
        recipe.calibration.source, recipe.calibration.task = None, args.calib_task
    if args.calib_chat:
        recipe.calibration.chat = args.calib_chat
    bundle = pipeline._load(recipe)
    _, model, tok = bundle
    art = pipeline.networks(recipe, args.networks, model_bundle=bundle)
    adapter = adapter_for(model.config)
    stats = art.stats()
    data = Path(args.data)
    base = {"ppl": wikitext_ppl(model, tok, data, args.ppl_tokens)}
    if args.arc:
        base["arc"] = arc_easy_acc_norm(model, tok, data, args.arc)
    print(f"unpruned: {base}", flush=True)
    cols = "| method | compensation | ratio removed | WikiText-2 ppl |" + (" ARC-Easy acc_norm |" if args.arc else "") + " seconds |"
    print(cols)
    print("|" + "---|" * (cols.count("|") - 1))
    cache: dict[str, list] = {}
    for ratio in [float(r) for r in args.ratios.split(",")]:
        budget = Budget(ratio=ratio, uniform=True, round_to=recipe.selection.round_to, min_width=recipe.selection.min_width)
        for method in args.methods.split(","):
            name, weight = parse_variant(method)
            if method not in cache:
                cache[method] = layer_scores(
                    name, model, adapter, stats=stats, maps_fn=art.maps, gram_fn=art.gram, seed=recipe.seed,
                    network_weight=recipe.selection.network_weight if weight is None else weight,
                    ridge=recipe.selection.ridge, cache=art.folder / "scores")
            kept = select(cache[method], budget)
            removed = 1 - sum(k.numel() for k in kept) / sum(s.numel() for s in cache[method])
            for comp in args.compensate.split(","):
                t = time.time()
                predictors = compensate(model, adapter, kept, art, recipe.selection.ridge).predictors if comp == "lstsq" else None
                with masked(model, adapter, kept, predictors):
                    row = f"| {method} | {comp} | {removed:.3f} | {wikitext_ppl(model, tok, data, args.ppl_tokens):.1f} |"
                    if args.arc:
                        row += f" {arc_easy_acc_norm(model, tok, data, args.arc):.3f} |"
                print(row + f" {time.time() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
