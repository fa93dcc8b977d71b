"""Is the pruned checkpoint actually faster? Original vs pruned: prefill and decode tokens/s, peak RSS,
file size, next to the ideal speedup from the FLOPs removed. "speedup/ideal" is the measured speedup over the FLOP ratio;
"gain achieved" is (speedup - 1) / (ideal - 1), the share of the ideal gain that shows up.

Each model is measured in its own subprocess (clean peak RSS), loaded the way a user loads it
(exact layout: trust_remote_code). Decode is greedy with a fixed number of new tokens, batch 1.

    python benchmarks/inference.py --base smollm2 --pruned /tmp/p30-uniform /tmp/p30-padded /tmp/p30-exact
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def flops_per_token(model) -> int:
    """2 x the parameters every token multiplies through (all matrices but the embedding lookup)."""
    embed = model.get_input_embeddings().weight
    total = 0
    for p in model.parameters():
        if p.dim() >= 2 and p is not embed:
            total += p.numel()
    head = model.get_output_embeddings()
    if head is not None and head.weight is embed:  # tied: the head still multiplies
        total += embed.numel()
    return 2 * total


def measure(path: str, prompt_len: int, new_tokens: int, repeats: int, threads: int | None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from fbn_prune.models import resolve

    if threads:
        torch.set_num_threads(threads)
    folder = Path(resolve(path).path)
    trust = (folder / "modeling_fbn.py").is_file()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=trust).eval()
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prefill_ids = torch.randint(100, vocab, (1, 512), generator=g)
    prompt = torch.randint(100, vocab, (1, prompt_len), generator=g)
    with torch.inference_mode():
        model(input_ids=prefill_ids[:, :64])  # warm-up
        best_prefill = best_decode = 0.0
        for _ in range(repeats):
            t = time.perf_counter()
            model(input_ids=prefill_ids)
            best_prefill = max(best_prefill, prefill_ids.shape[1] / (time.perf_counter() - t))
            t = time.perf_counter()
            model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=model.config.eos_token_id if model.config.pad_token_id is None else model.config.pad_token_id)
            best_decode = max(best_decode, new_tokens / (time.perf_counter() - t))
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return {"model": path, "layout": json.loads((folder / "fbn_prune.json").read_text())["layout"]
            if (folder / "fbn_prune.json").is_file() else "original",
            "params": model.num_parameters(), "flops_per_token": flops_per_token(model),
            "prefill_tok_s": best_prefill, "decode_tok_s": best_decode, "file_bytes": size,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--pruned", nargs="+", required=True)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.prompt_len, args.new_tokens, args.repeats, args.threads)))
        return
    rows = []
    for path in [args.base, *args.pruned]:
        cmd = [sys.executable, __file__, "--base", args.base, "--pruned", "x", "--one", path,
               "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
    base = rows[0]
    print("| model | layout | params | file MB | peak RSS MB | prefill tok/s | decode tok/s | decode speedup | ideal (FLOPs) | speedup/ideal | gain achieved |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speed = r["decode_tok_s"] / base["decode_tok_s"]
        ideal = base["flops_per_token"] / r["flops_per_token"]
        print(f"| {r['model']} | {r['layout']} | {r['params']:,} | {r['file_bytes'] / 1e6:.0f} | {r['peak_rss_bytes'] / 1e6:.0f} "
              f"| {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | {speed:.3f} | {ideal:.3f} | {speed / ideal:.0%} | "
              f"{(speed - 1) / (ideal - 1) if ideal > 1 else float('nan'):.0%} |")


if __name__ == "__main__":
    main()
