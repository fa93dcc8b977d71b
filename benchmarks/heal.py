"""Healing by distillation: how much of the pruned model's perplexity gap comes back, at what cost.

For each step count: ``fbn-prune heal PRUNED --steps N`` on WikiText-2 validation text (the
data folder's, disjoint from the test articles), timed with its peak RSS, then ``fbn-prune
eval`` of the healed model against the original on the first K WikiText-2 test articles (and
optionally PIQA / ARC-Easy). Prints one row per step count; the healing record (held-out KL
before/after, tokens/s) comes from each healed checkpoint's fbn_prune.json.

    python benchmarks/heal.py --pruned DIR [--steps 250,500,1000] [--lr LR] [--batch-size 8] [--seq-len 256]
                              [--articles 20] [--tasks wikitext] [--work /tmp/fbn-heal]

Needs FBN_PRUNE_DATA (the evaluation data folder). Everything runs through the CLI, the path
users take.
A stopped run (Ctrl-C, SIGTERM) continues where it stopped when started again with the same
arguments: finished steps are skipped and `fbn-prune heal` resumes its saved training state.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml


def run(args: list[str]) -> tuple[float, float]:
    """Run ``fbn-prune ARGS``; (wall seconds, peak RSS of the child in GB)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fbn_prune", *args], check=True)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return time.perf_counter() - t, rss


def evaluate(base: str, model: Path, out: Path, tasks: str, articles: int) -> dict:
    """Word perplexity (and accuracies) of ``model`` next to the original's, from eval.json."""
    if not (out / "eval.json").is_file():
        run(["eval", "--base", base, "--pruned", str(model), "--tasks", tasks, "--limit",
             f"300,wikitext={articles}", "--max-length", "2048", "--out", str(out)])
    return json.loads((out / "eval.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pruned", required=True, help="a pruned checkpoint (fbn-prune prune ... --out DIR)")
    p.add_argument("--base", default=None, help="the original model [the checkpoint's recipe model]")
    p.add_argument("--steps", default="250,500,1000")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--mode", default="lora", choices=["lora", "full"])
    p.add_argument("--lr", default=None, help="peak learning rate [the heal command's default for the mode]")
    p.add_argument("--articles", type=int, default=20)
    p.add_argument("--tasks", default="wikitext")
    p.add_argument("--work", default="/tmp/fbn-heal")
    a = p.parse_args()
    data = os.environ.get("FBN_PRUNE_DATA")
    if not data:
        sys.exit("set FBN_PRUNE_DATA to the evaluation data folder")
    pruned = Path(a.pruned)
    info = json.loads((pruned / "fbn_prune.json").read_text())
    recipe = pruned / "recipe.yaml"
    base = a.base or (yaml.safe_load(recipe.read_text()) or {}).get("model") if recipe.is_file() else a.base
    base = base or info.get("base_model_path") or info["base_model"]
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    text = str(Path(data) / "wikitext2" / "valid.txt")
    rows = [("0 (pruned)", evaluate(base, pruned, work / "eval-0", a.tasks, a.articles), None)]
    for n in [int(s) for s in a.steps.split(",")]:
        out = work / f"healed-{n}"
        if not (out / "fbn_prune.json").is_file():
            mode = ["--full"] if a.mode == "full" else []
            mode += ["--lr", a.lr] if a.lr else []
            wall, rss = run(["heal", str(pruned), "--out", str(out), "--calib", text, "--steps", str(n),
                             "--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len), "--overwrite", *mode])
            print(f"healed {n} steps: {wall:.0f} s wall, peak RSS {rss:.2f} GB", flush=True)
        rows.append((str(n), evaluate(base, out, work / f"eval-{n}", a.tasks, a.articles),
                     json.loads((out / "fbn_prune.json").read_text())["healing"]))
    print("\n| steps | word ppl original | word ppl model | held-out KL | tokens/s | heal s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for steps, ev, h in rows:
        ppl = _metric(ev, "wikitext", "word_perplexity")
        kl = f"{h['heldout_kl_before']:.4f} -> {h['heldout_kl_after']:.4f}" if h else ""
        tps = f"{h['tokens_per_s']:.0f}" if h else ""
        secs = f"{h['seconds']:.0f}" if h else ""
        print(f"| {steps} | {ppl[0]} | {ppl[1]} | {kl} | {tps} | {secs} |")


def _metric(report: dict, task: str, metric: str) -> tuple[str, str]:
    """(original, pruned) values of ``metric`` from an eval.json, as printed text."""
    for row in report.get("metrics", []):
        if isinstance(row, dict) and row.get("task") == task and row.get("metric") == metric:
            return f"{row['original']:.2f}", f"{row['pruned']:.2f}"
    return "?", "?"


if __name__ == "__main__":
    main()
