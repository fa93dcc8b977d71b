"""Time fbn's selection step (compensated elimination, fbn_prune/select/eliminate.py) per layer shape.

    python benchmarks/selection_time.py                       # SmolLM2, Llama-7B shapes on the CPU
    python benchmarks/selection_time.py --shapes 4096x1024 --device cuda

For each ``width x hidden`` shape: a random well-conditioned Gram matrix (width, width) and
random down columns (width, hidden) go through ``elimination_scores`` (the real function, float64,
block = width // 128); prints seconds per layer, the effective GFLOP/s against
``resources.elimination_flops`` and the projection for the model's layer count, next to the
estimate ``fbn-prune --dry-run`` prints (``resources.selection_seconds``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # a shared CPU: no spinning threads

import torch  # noqa: E402

from fbn_prune._runtime import resources as res  # noqa: E402
from fbn_prune.select.eliminate import elimination_scores  # noqa: E402

# width x hidden : (model, layers)
KNOWN = {"1536x576": ("SmolLM2-135M", 30), "11008x4096": ("Llama-2-7B", 32), "13824x5120": ("Llama-2-13B", 40),
         "28672x8192": ("Llama-2-70B", 80)}


def layer_inputs(width: int, hidden: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gram matrix (width, width) float32 of correlated signals and down columns (width, hidden)."""
    g = torch.Generator().manual_seed(seed)
    rank = min(width, 512)
    mix = torch.randn(rank, width, generator=g) / rank**0.5
    gram = mix.T @ mix + 0.1 * torch.eye(width)  # low-rank shared signal plus private variance
    return gram, torch.randn(width, hidden, generator=g) / hidden**0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="1536x576,11008x4096", help="comma-separated width x hidden")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'shape':>12} {'model':>13} {'s/layer':>8} {'GFLOP/s':>8} {'layers':>6} {'measured total':>14} "
          f"{'dry-run estimate':>16}")
    for spec in args.shapes.split(","):
        width, hidden = (int(x) for x in spec.lower().split("x"))
        model, layers = KNOWN.get(f"{width}x{hidden}", ("-", 1))
        gram, cols = layer_inputs(width, hidden)
        times = []
        for _ in range(args.repeats):
            if kind == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            elimination_scores(gram, cols, device=args.device)
            if kind == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        per_layer = min(times)
        gflops = res.elimination_flops(width, hidden) / per_layer / 1e9
        estimate = res.selection_seconds([width] * layers, hidden, kind, eliminate=True, compensate=False)
        print(f"{spec:>12} {model:>13} {per_layer:8.2f} {gflops:8.1f} {layers:6d} {per_layer * layers:13.0f}s "
              f"{estimate:15.0f}s", flush=True)


if __name__ == "__main__":
    main()
