"""Peak RSS of the capture vs the number of calibration tokens: it should stay flat.

Each size runs in a fresh subprocess: load the model (float32, CPU), tokenize WikiText-2
paragraphs (valid, then test, cycled when more tokens are asked for than they hold; bare text,
truncated at ``--seq-len``), then ``fbn_prune.capture.activations.capture`` into a temporary folder that is
deleted afterwards. Capture only, no ICA. Reported per size: the process's peak RSS
(``ru_maxrss``: model loading included), the peak during the capture alone (Linux ``VmHWM``
after resetting it once the model is loaded), disk written, seconds and tokens/s.

    python benchmarks/capture_memory.py                             # smollm2, 10k / 50k / 200k tokens
    python benchmarks/capture_memory.py --tokens 10000 50000 --max-ram 3GB
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def hwm_bytes() -> int | None:
    """The kernel's peak-RSS mark of this process (VmHWM), if readable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def documents(tok, n_tokens: int, seq_len: int, data: Path) -> list[list[int]]:
    """Token id lists of WikiText-2 paragraphs (valid then test, cycled) adding up to exactly ``n_tokens``."""
    from fbn_prune.texts.files import read_documents

    texts = read_documents(str(data / "wikitext2" / "valid.txt")) + read_documents(str(data / "wikitext2" / "test.txt"))
    ids = [d for d in (tok(t, truncation=True, max_length=seq_len)["input_ids"] for t in texts) if len(d) >= 2]
    out, total, i = [], 0, 0
    while total < n_tokens:
        d = ids[i % len(ids)][: n_tokens - total]
        if len(d) >= 2:
            out.append(d)
            total += len(d)
        i += 1
    return out


def one(args: argparse.Namespace, n_tokens: int) -> dict:
    """Subprocess body: load, capture ``n_tokens``, report."""
    import torch

    from fbn_prune._runtime import resources as res
    from fbn_prune._runtime import sizes
    from fbn_prune.models.arch import adapter_for
    from fbn_prune.texts.calibration import CalibrationSet
    from fbn_prune.capture.activations import capture
    from fbn_prune.models.sources import load_model, resolve
    from fbn_prune.models.placement import resident_bytes
    from fbn_prune.plan import model_shape
    from fbn_prune.texts.tasks.registry import data_dir

    torch.set_num_threads(args.threads or torch.get_num_threads())
    model, tok = load_model(resolve(args.model), "float32", "cpu")
    adapter = adapter_for(model.config)
    docs = documents(tok, n_tokens, args.seq_len, data_dir(args.data_dir))
    docs.sort(key=len, reverse=True)
    cal = CalibrationSet(runs=[docs[r::4] for r in range(4)], holdout=[], source="wikitext2", sha256="")
    batch = args.batch_size
    if args.max_ram:
        shape = model_shape(model.config, adapter.channel_widths(model), model.num_parameters(), "float32")
        per_token = res.capture_bytes_per_token(shape, args.seq_len, host_model=True)
        batch = res.batch_under_budget(sizes.parse_size(args.max_ram), resident_bytes(model), per_token, args.seq_len, batch)
    loaded_rss = res.current_rss()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the capture's own peak from here
        can_reset = True
    except OSError:
        can_reset = False
    work = Path(tempfile.mkdtemp(prefix="fbn-capmem-", dir=args.workdir))
    try:
        start = time.perf_counter()
        index = capture(model, adapter, cal, work, batch_size=batch, pad_id=tok.pad_token_id or 0, progress=False)
        seconds = time.perf_counter() - start
        disk = sum(f.stat().st_size for f in work.glob("layer_*.f16"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"tokens": index.n_tokens, "documents": len(docs), "batch": batch, "seconds": seconds, "disk": disk,
            "loaded_rss": loaded_rss, "capture_peak": hwm_bytes() if can_reset else None,
            "process_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "expected_disk": res.capture_disk(adapter.channel_widths(model), index.n_tokens)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tokens", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-ram", default=None, help="derive the batch size from this budget, as --max-ram does")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--workdir", default=None, help="where the temporary capture goes [$TMPDIR]")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args, args.one)))
        return
    rows = []
    for n in args.tokens:
        cmd = [sys.executable, __file__, "--one", str(n), "--model", args.model, "--seq-len", str(args.seq_len),
               "--batch-size", str(args.batch_size)]
        for flag, value in (("--max-ram", args.max_ram), ("--threads", args.threads), ("--data-dir", args.data_dir),
                            ("--workdir", args.workdir)):
            if value:
                cmd += [flag, str(value)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {r['tokens']:,} tokens done in {r['seconds']:.0f} s", file=sys.stderr, flush=True)
    mb = lambda b: f"{b / 1e6:,.0f}" if b is not None else "n/a"  # noqa: E731
    print(f"model {args.model}, float32 on the CPU, seq_len {args.seq_len}")
    print("| tokens | documents | batch | RSS after load MB | peak RSS during capture MB | process peak RSS MB "
          "| disk GB (= tokens x sum(widths) x 2) | seconds | tokens/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        assert r["disk"] == r["expected_disk"]
        print(f"| {r['tokens']:,} | {r['documents']:,} | {r['batch']} | {mb(r['loaded_rss'])} | {mb(r['capture_peak'])} | "
              f"{mb(r['process_peak'])} | {r['disk'] / 1e9:.2f} | {r['seconds']:.0f} | {r['tokens'] / r['seconds']:,.0f} |")


if __name__ == "__main__":
    main()
