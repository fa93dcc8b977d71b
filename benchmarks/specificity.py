"""Task specificity of functional networks on SmolLM2-135M-Instruct.

Networks are found four times with the default recipe, from disjoint halves of two tasks'
documents: WikiText-2 valid paragraphs (even / odd) and ARC-Easy train questions rendered with
lm-eval's prompt (even / odd). Per layer, a "network" is the set of channels with the highest
membership (max |z| over runs and maps; the top --top fraction) and, second, every channel with
|z| > --threshold in some map. The table gives the mean (± sd over layers) intersection over union
of two sets: same task from disjoint samples vs different tasks. Task-specific networks overlap
more within a task than across tasks.

    python benchmarks/specificity.py                # about 8 min on 2 cores; writes docs/results/specificity.md
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads on a shared CPU

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fbn_prune import pipeline  # noqa: E402
from fbn_prune.texts.files import read_documents  # noqa: E402
from fbn_prune.select.scores import membership  # noqa: E402
from fbn_prune.config.recipe import Recipe  # noqa: E402
from fbn_prune.texts.tasks.documents import task_documents  # noqa: E402
from fbn_prune.texts.tasks.manager import task_manager  # noqa: E402


def halves(work: Path, data: str) -> dict[str, Path]:
    """Four calibration files: {wikitext,arc}-{a,b}.jsonl, disjoint halves (even / odd documents)."""
    wt = read_documents(str(Path(data) / "wikitext2" / "valid.txt"))
    arc = task_documents("arc_easy", split="train", tm=task_manager(data=data))
    files = {}
    for name, docs in (("wikitext", wt), ("arc", arc)):
        for part, sub in (("a", docs[0::2]), ("b", docs[1::2])):
            path = work / f"{name}-{part}.jsonl"
            path.write_text("".join(json.dumps({"text": t}) + "\n" for t in sub))
            files[f"{name}-{part}"] = path
    return files


def sets(maps: torch.Tensor, top: float, threshold: float) -> tuple[set, set]:
    """(top-fraction set, |z| > threshold set) of one layer's maps (runs, k, width)."""
    m = membership(maps)
    n = max(1, round(top * m.numel()))
    return set(torch.topk(m, n).indices.tolist()), set(torch.nonzero(m > threshold).flatten().tolist())


def iou(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="smollm2-135m")
    ap.add_argument("--data", default=os.environ.get("FBN_PRUNE_DATA"),
                    help="the evaluation data folder [$FBN_PRUNE_DATA]")
    ap.add_argument("--work", default="/tmp/fbn-specificity")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "specificity.md"))
    ap.add_argument("--top", type=float, default=0.2, help="fraction of channels with the highest membership")
    ap.add_argument("--threshold", type=float, default=3.0, help="|z| threshold of the paper's rule")
    args = ap.parse_args()
    if not args.data:
        ap.error("give the evaluation data folder: --data or FBN_PRUNE_DATA")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = Recipe.load(args.recipe).override({"data_dir": args.data})
    bundle = pipeline._load(base)
    arts = {}
    for name, path in halves(work, args.data).items():
        r = base.override({"calibration.source": str(path)})
        arts[name] = pipeline.networks(r, work / f"networks-{name}", model_bundle=bundle, progress=False)
        print(f"{name}: {arts[name].meta.calibration['tokens']:,} tokens", flush=True)
    n_layers = arts["wikitext-a"].n_layers
    layer_sets = {name: [sets(a.maps(i), args.top, args.threshold) for i in range(n_layers)] for name, a in arts.items()}
    rows = []
    for x, y in itertools.combinations(sorted(arts), 2):
        kind = "same task" if x.split("-")[0] == y.split("-")[0] else "different tasks"
        cols = []
        for which in (0, 1):
            v = torch.tensor([iou(layer_sets[x][i][which], layer_sets[y][i][which]) for i in range(n_layers)])
            cols.append(f"{v.mean():.3f} ± {v.std():.3f}")
        sizes = sum(len(layer_sets[x][i][1]) for i in range(n_layers)) / n_layers
        rows.append(f"| {x} vs {y} | {kind} | {cols[0]} | {cols[1]} | {sizes:.0f} |")
    rows.sort(key=lambda r: "different" in r)
    md = "\n".join([
        "# Task specificity of functional networks (SmolLM2-135M-Instruct)", "",
        "Made by `python benchmarks/specificity.py`. Networks from disjoint halves (even / odd documents) of "
        "WikiText-2 valid and ARC-Easy train, default recipe (4 runs x 64 components, chat format). "
        f"IoU per layer, mean ± sd over {n_layers} layers.", "",
        f"| networks | pair | IoU, top {args.top:.0%} membership | IoU, \\|z\\| > {args.threshold:g} | "
        "channels with \\|z\\| > T per layer (first) |",
        "|---|---|---|---|---|", *rows, ""])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
