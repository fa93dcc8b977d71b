"""Capture and ICA for one full layer set of a 7B-shaped random Llama on a GPU; projects the
authors' full setting (80 runs x 32 layers).

Prepared for a CUDA machine; this project's machine has no GPU, so the figures it prints have
not been measured here (see README). ``--tiny`` runs the same code on the CPU at toy sizes (a
smoke test, ``tests/test_scale.py``).

What it does:
1. builds a Llama with Llama-2-7B's shapes (hidden 4096, FFN 11008, 32 heads, vocab 32000) and
   random bfloat16 weights on the GPU; ``--layers`` decoder layers (32 by default, ~13 GB; fewer
   fit smaller cards, the per-layer figures scale);
2. times ``fbn_prune.capture.activations.capture`` on ``--tokens`` random tokens (documents of ``--seq-len``),
   float16 signals streamed to ``--workdir`` (tokens x layers x 11008 x 2 bytes on disk);
3. times the torch ICA engine on the GPU for one (layer, run) job on the first ``--run-tokens``
   captured tokens of a layer, ``--components`` components, median of ``--repeat`` jobs;
4. times fbn's selection step (compensated elimination, float64 on the GPU) for one layer on
   the captured layer's Gram matrix and the down projection's columns;
5. projects 80 runs x 32 layers (the authors' setting: 2,560 ICA jobs, and a capture of
   80 x run-tokens tokens), next to their reported 43 h of CPU ICA / ~9 h on 6 GPUs.

    python benchmarks/gpu_7b.py                      # H100/H200/A100: one full layer set
    python benchmarks/gpu_7b.py --layers 8           # a 24 GB card
    python benchmarks/gpu_7b.py --tiny               # CPU smoke test, seconds
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fbn_prune.models.arch import adapter_for  # noqa: E402
from fbn_prune.texts.calibration import CalibrationSet  # noqa: E402
from fbn_prune.capture.activations import capture  # noqa: E402
from fbn_prune.decompose.gram import gram  # noqa: E402
from fbn_prune.select.eliminate import elimination_scores  # noqa: E402
from fbn_prune.decompose.ica import CanICA  # noqa: E402

SEVEN_B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
               vocab_size=32000, max_position_embeddings=4096)
TINY = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=4,
            vocab_size=512, max_position_embeddings=256)
PAPER_RUNS, PAPER_LAYERS = 80, 32


def build(layers: int, shape: dict, dtype: torch.dtype, device: str):
    """A random Llama with ``layers`` decoder layers of ``shape``, eval mode, on ``device``."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(num_hidden_layers=layers, **shape)
    with torch.device(device):  # initialised in place, in the target dtype (no float32 copy)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def documents(tokens: int, seq_len: int, vocab: int, runs: int) -> CalibrationSet:
    """``tokens`` random token ids in documents of ``seq_len``, split into ``runs`` runs."""
    g = torch.Generator().manual_seed(0)
    n_docs = max(runs, -(-tokens // seq_len))
    docs = [torch.randint(3, vocab, (seq_len,), generator=g).tolist() for _ in range(n_docs)]
    return CalibrationSet(runs=[docs[r::runs] for r in range(runs)], holdout=[], source="random", sha256="")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32, help="decoder layers built and captured [32]")
    ap.add_argument("--tokens", type=int, default=20_480, help="calibration tokens captured [20480]")
    ap.add_argument("--seq-len", type=int, default=1024, help="tokens per document [1024]")
    ap.add_argument("--batch-size", type=int, default=8, help="documents per forward pass [8]")
    ap.add_argument("--run-tokens", type=int, default=6_000,
                    help="tokens per run: the ICA job's rows, and 80 x this for the projected capture; the authors' "
                         "runs were 40 WikiText-2 paragraphs, ~6,000 tokens [6000]")
    ap.add_argument("--components", type=int, default=128, help="ICA components [128]")
    ap.add_argument("--repeat", type=int, default=3, help="ICA jobs timed (median) [3]")
    ap.add_argument("--workdir", default=None, help="where the capture is written [a temporary folder]")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu with --tiny) [cuda]")
    ap.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: a smoke test of this script")
    args = ap.parse_args()

    shape = dict(SEVEN_B)
    if args.tiny:
        shape = dict(TINY)
        args.device, args.layers, args.tokens, args.seq_len, args.components = "cpu", 2, 512, 64, 8
        args.run_tokens = 256
        args.repeat = min(args.repeat, 2)
    elif not torch.cuda.is_available():
        sys.exit("no CUDA device here: run on a GPU machine, or with --tiny for a CPU smoke test")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    card = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"

    t = time.perf_counter()
    model = build(args.layers, shape, dtype, args.device)
    build_s = time.perf_counter() - t
    adapter = adapter_for(model.config)
    cal = documents(args.tokens, args.seq_len, shape["vocab_size"], runs=1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fbn-gpu7b-"))
    try:
        sync(args.device)
        t = time.perf_counter()
        index = capture(model, adapter, cal, work / "capture", batch_size=args.batch_size, progress=False)
        sync(args.device)
        capture_s = time.perf_counter() - t
        tokens = index.n_tokens
        disk = sum(f.stat().st_size for f in (work / "capture").glob("*.f16"))
        peak_gpu = torch.cuda.max_memory_allocated() / 1e9 if args.device.startswith("cuda") else float("nan")
        columns = adapter.down_module(model, 0).weight.detach().float().T.cpu()  # (width, hidden)
        del model

        run_tokens = min(args.run_tokens, tokens)
        signal = torch.from_numpy(index.signal(0)[:run_tokens].copy())
        times, reduce_s, ica_s, iters = [], [], [], []
        CanICA(min(4, args.components), seed=0, engine="torch", device=args.device).fit(signal[:256])  # warm-up
        for r in range(args.repeat):
            sync(args.device)
            t = time.perf_counter()
            fit = CanICA(args.components, seed=r, engine="torch", device=args.device).fit(signal)
            sync(args.device)
            times.append(time.perf_counter() - t)
            reduce_s.append(fit.reduce_seconds_)
            ica_s.append(fit.ica_seconds_)
            iters.append(fit.n_iter_)
        layer_gram = gram(index.signal(0), device=args.device)  # (width, width), the pipeline's own Gram step
        sync(args.device)
        t = time.perf_counter()
        elimination_scores(layer_gram, columns, device=args.device)
        sync(args.device)
        select_s = time.perf_counter() - t
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    job = sorted(times)[len(times) // 2]
    per_token_layer = capture_s / (tokens * args.layers)
    paper_tokens = PAPER_RUNS * run_tokens
    proj_capture = per_token_layer * paper_tokens * PAPER_LAYERS
    proj_ica = job * PAPER_RUNS * PAPER_LAYERS
    width = shape["intermediate_size"]
    print(f"device: {card}; torch {torch.__version__}; model built in {build_s:.1f} s "
          f"({args.layers} layers, hidden {shape['hidden_size']}, FFN {width}, {dtype})")
    print("| step | measured | per unit | projected: 80 runs x 32 layers |")
    print("|---|---:|---:|---:|")
    print(f"| capture ({tokens:,} tokens x {args.layers} layers, {disk / 1e9:.2f} GB float16 on disk, peak GPU "
          f"{peak_gpu:.1f} GB) | {capture_s:.1f} s | {tokens / capture_s:,.0f} tokens/s | "
          f"{proj_capture / 60:.1f} min for {paper_tokens:,} tokens "
          f"({paper_tokens * PAPER_LAYERS * width * 2 / 1e9:.0f} GB) |")
    print(f"| ICA, one job ({run_tokens:,} tokens x {width:,} neurons, k = {args.components}, torch engine; "
          f"median of {len(times)}: reduce {sorted(reduce_s)[len(reduce_s) // 2]:.2f} s + FastICA "
          f"{sorted(ica_s)[len(ica_s) // 2]:.2f} s, {max(iters)} iterations max) | {job:.2f} s | "
          f"{PAPER_RUNS * PAPER_LAYERS:,} jobs | {proj_ica / 60:.1f} min |")
    proj_select = select_s * PAPER_LAYERS
    print(f"| selection, one layer (fbn's compensated elimination, {width:,} channels, float64) | {select_s:.2f} s | "
          f"{PAPER_LAYERS} layers | {proj_select / 60:.1f} min |")
    total = proj_capture + proj_ica + proj_select
    print(f"| total | | | {total / 60:.1f} min ({total / 3600:.2f} h; "
          "the authors: 43 h CPU ICA, ~9 h on 6 GPUs) |")


if __name__ == "__main__":
    main()
