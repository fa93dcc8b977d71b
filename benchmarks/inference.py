"""Is the pruned checkpoint actually faster? Original vs pruned: prefill and KV-cache decode tokens/s
at several batch sizes, peak RSS, file size, next to the ideal speedup from the FLOPs removed.

Models are loaded the way a user loads them (exact layout: trust_remote_code), float32 on the
CPU with torch threads = the cores given to the process. Size, prefill speed and peak RSS come
from one subprocess per model (clean RSS). Decode speed comes from one subprocess holding every
model, timings interleaved round by round so that other load on a shared machine hits all
models alike; the speedup is the median over rounds of the per-round ratio. Decode is a plain
greedy loop with the KV cache (no ``generate`` bookkeeping): ``--prompt-len`` tokens of
prefill, then ``--new-tokens`` steps, for each batch size, after one warm-up.

The ideal speedup is the ratio of FLOPs per decoded token: 2 x every matrix a token multiplies
through (attention projections, FFN, LM head) plus attention over the cache (QK^T and AV:
4 x layers x heads x head_dim x context, at the mean decode context). Two readings of "how
much of the ideal shows up": speedup/ideal (measured speedup over the FLOP ratio) and gain
achieved = (speedup - 1) / (ideal - 1), the share of the ideal *gain*.

    python benchmarks/inference.py --base smollm2 --pruned /tmp/p30-uniform /tmp/p30-padded /tmp/p30-exact
    python benchmarks/inference.py --base smollm2 --pruned /tmp/p30-uniform --batch 1 8 32 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# OpenMP threads that spin while waiting stall every barrier when another process holds a core
# (2-50x slower on a shared machine); must be set before torch is imported, as the CLI does.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def matrix_params(model) -> int:
    """Parameters every token multiplies through: all >= 2-D weights but the embedding lookup,
    plus the LM head when it is tied to the embedding (it still multiplies)."""
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters() if p.dim() >= 2 and p is not embed)
    head = model.get_output_embeddings()
    if head is not None and head.weight is embed:
        total += embed.numel()
    return total


def flops_per_token(model, context: float) -> float:
    """FLOPs of one token attending to ``context`` cached tokens: 2 x matrix parameters + 4 x layers x
    heads x head_dim x context (scores and weighted values). Padded channels count: they are computed."""
    c = model.config
    layers = getattr(c, "num_hidden_layers", None) or c.n_layer
    heads = getattr(c, "num_attention_heads", None) or c.n_head
    hidden = getattr(c, "hidden_size", None) or c.n_embd
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    return 2 * matrix_params(model) + 4 * layers * heads * head_dim * context


def decode(model, prompt, new_tokens: int) -> float:
    """Seconds for ``new_tokens`` greedy steps after prefilling ``prompt`` (batch, prompt_len), KV cache on."""
    out = model(input_ids=prompt, use_cache=True)
    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(new_tokens):
        out = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return time.perf_counter() - start


def load(path: str):
    """(model, folder) loaded the way a user loads it, float32 on the CPU, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    from fbn_prune.models.sources import resolve

    folder = Path(resolve(path).path)
    trust = (folder / "modeling_fbn.py").is_file()
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=trust).eval(), folder


def static(path: str, prompt_len: int, new_tokens: int, repeats: int) -> dict:
    """One model alone in its process: size, FLOPs, prefill tokens/s (512 tokens, batch 1), peak RSS."""
    import torch

    model, folder = load(path)
    ids = torch.randint(100, model.config.vocab_size, (1, 512), generator=torch.Generator().manual_seed(0))
    prefill = []
    with torch.inference_mode():
        model(input_ids=ids[:, :64])  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            model(input_ids=ids)
            prefill.append(ids.shape[1] / (time.perf_counter() - t))
        decode(model, ids[:, :prompt_len], new_tokens)
    info = folder / "fbn_prune.json"
    return {"model": path, "layout": json.loads(info.read_text())["layout"] if info.is_file() else "original",
            "params": model.num_parameters(), "flops_per_token": flops_per_token(model, prompt_len + new_tokens / 2),
            "prefill_tok_s": statistics.median(prefill),
            "file_bytes": sum(f.stat().st_size for f in folder.glob("*.safetensors")),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def speeds(paths: list[str], batches: list[int], prompt_len: int, new_tokens: int, repeats: int) -> dict:
    """All models in one process, decode timings interleaved (model 0, 1, ..., 0, 1, ...) so that other
    load on the machine hits every model alike. Per batch size: median tokens/s of each model, and the
    median over repeats of each model's speedup over model 0 in the same round."""
    import torch

    models = [load(p)[0] for p in paths]
    g = torch.Generator().manual_seed(1)
    out = {}
    with torch.inference_mode():
        for b in batches:
            prompt = torch.randint(100, models[0].config.vocab_size, (b, prompt_len), generator=g)
            for m in models:
                decode(m, prompt, min(4, new_tokens))  # warm-up
            times = [[decode(m, prompt, new_tokens) for m in models] for _ in range(repeats)]
            out[b] = {"tok_s": [b * new_tokens / statistics.median(t[i] for t in times) for i in range(len(models))],
                      "speedup": [statistics.median(t[0] / t[i] for t in times) for i in range(len(models))]}
    return out


def child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    if args.one:
        return {**static(args.one, args.prompt_len, args.new_tokens, args.repeats), "threads": torch.get_num_threads()}
    return speeds([args.base, *args.pruned], args.batch, args.prompt_len, args.new_tokens, args.repeats)


def run_child(args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--base", args.base, "--pruned", *args.pruned, "--batch", *map(str, args.batch),
           "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats),
           *(["--threads", str(args.threads)] if args.threads else []), *extra]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--pruned", nargs="+", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="decode batch sizes [1 8 32]")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads [the process's cores]")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--speeds", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one or args.speeds:
        print(json.dumps(child(args)))
        return
    rows = [run_child(args, ["--one", p]) for p in [args.base, *args.pruned]]
    timing = {int(b): v for b, v in run_child(args, ["--speeds"]).items()}
    base = rows[0]
    print(f"float32, CPU, {base['threads']} threads; prompt {args.prompt_len} tokens, {args.new_tokens} decoded tokens with "
          f"KV cache, models interleaved, median of {args.repeats}; ideal = FLOPs per decoded token (matrices incl. LM "
          "head + attention), original / pruned")
    print("| model | layout | params | file MB | peak RSS MB | prefill tok/s (512 tokens, batch 1) | ideal (FLOPs) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['layout']} | {r['params']:,} | {r['file_bytes'] / 1e6:.0f} | "
              f"{r['peak_rss_bytes'] / 1e6:.0f} | {r['prefill_tok_s']:.0f} | "
              f"{base['flops_per_token'] / r['flops_per_token']:.3f} |")
    print()
    print("| layout | batch | decode tok/s original | decode tok/s pruned | speedup | ideal (FLOPs) | speedup/ideal "
          "| gain achieved |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rows[1:], 1):
        ideal = base["flops_per_token"] / r["flops_per_token"]
        for b in args.batch:
            t = timing[b]
            speed = t["speedup"][i]
            gain = (speed - 1) / (ideal - 1) if ideal > 1 else float("nan")
            print(f"| {r['layout']} | {b} | {t['tok_s'][0]:.1f} | {t['tok_s'][i]:.1f} | {speed:.3f} | {ideal:.3f} | "
                  f"{speed / ideal:.0%} | {gain:.0%} |")


if __name__ == "__main__":
    main()
