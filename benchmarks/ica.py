"""Benchmark the per-layer decomposition (fbn_prune.decompose.ica) against plain scikit-learn FastICA.

Generates a synthetic layer block shaped like one 7B FFN layer for one run (default
20,000 tokens x 11,008 neurons, float32): sparse heavy-tailed spatial sources with
heavy-tailed time courses, mixed, plus Gaussian noise (seeded). Times
``fbn_prune.decompose.ica.CanICA`` (z-score + randomized SVD, then FastICA on neurons x k) for
every engine available, then plain ``sklearn.decomposition.FastICA(n_components=k)`` on
the same matrix (tokens as samples, neurons as features) in a subprocess that is killed
after ``--sklearn-timeout`` seconds.

    python benchmarks/ica.py --skip-sklearn
    python benchmarks/ica.py --tokens 4000 --neurons 2048

Not a test: prints figures. On a machine shared with other busy processes, run with
``OMP_WAIT_POLICY=PASSIVE`` (or ``--threads 1``): torch's spinning OpenMP threads otherwise
slow the randomized SVD down 2-50x. Peak RSS: ``resource.getrusage`` (whole process, includes the
data) and, on Linux, the peak while decomposing (VmHWM after resetting it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fbn_prune.decompose.ica import CanICA  # noqa: E402

N_SOURCES = 256


def make_signal(tokens: int, neurons: int, seed: int = 0, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic (tokens, neurons) float32 activations and the (N_SOURCES, neurons) planted maps.

    Maps: ~5% of neurons each, Laplace loadings; time courses: Laplace; noise: N(0, 1).
    Built in token chunks so the peak memory is the output plus small temporaries.
    """
    g = torch.Generator().manual_seed(seed)
    laplace = torch.distributions.Laplace(0.0, 1.0)
    sources = min(N_SOURCES, neurons)
    u = torch.rand(sources, neurons, generator=g).clamp_(1e-7, 1 - 1e-7)
    maps = laplace.icdf(u) * (torch.rand(sources, neurons, generator=g) < 0.05)
    out = torch.empty(tokens, neurons, dtype=torch.float32)
    for start in range(0, tokens, chunk):
        stop = min(start + chunk, tokens)
        v = torch.rand(stop - start, sources, generator=g).clamp_(1e-7, 1 - 1e-7)
        torch.matmul(laplace.icdf(v), maps, out=out[start:stop])
        out[start:stop].add_(torch.randn(stop - start, neurons, generator=g))
    return out, maps


def rss_peak_gb() -> float:
    """Process peak RSS so far (ru_maxrss, kB on Linux) in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (Linux /proc/self/clear_refs, value 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def hwm_gb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return None


def matched_abs_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of a, its |corr| with the row of b assigned to it (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    a = (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-12)
    b = (b - b.mean(1, keepdims=True)) / (b.std(1, keepdims=True) + 1e-12)
    corr = np.abs(a @ b.T) / a.shape[1]
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols]


def run_ours(
    signal: torch.Tensor, truth: torch.Tensor, k: int, engines: list[tuple[str, str]], repeat: int = 1,
    max_iter: int = 300, tol: float = 1e-4,
) -> dict[str, CanICA]:
    """Time CanICA for each (engine, device), ``repeat`` times each; returns the fastest fit of each."""
    quiet = logging.getLogger("fbn_prune.decompose")  # ica.py and fastica.py
    quiet.setLevel(logging.ERROR)
    for engine in ("torch", "sklearn"):  # warm up kernels and imports
        CanICA(4, engine=engine, device="cpu").fit(torch.randn(256, 64))
    quiet.setLevel(logging.NOTSET)
    fits: dict[str, CanICA] = {}
    for engine, device in [e for _ in range(repeat) for e in engines]:
        name = f"{engine}@{device}"
        can_hwm = reset_hwm()
        start = time.perf_counter()
        model = CanICA(k, seed=0, engine=engine, device=device, max_iter=max_iter, tol=tol).fit(signal)
        total = time.perf_counter() - start
        hwm = hwm_gb() if can_hwm else None
        hit = matched_abs_corr(model.maps_.numpy().astype(np.float64), truth.numpy().astype(np.float64))
        print(
            f"ours [{name:>12}]: total {total:6.2f} s = reduce {model.reduce_seconds_:6.2f} s + ICA "
            f"{model.ica_seconds_:6.2f} s | FastICA {model.n_iter_} it, converged={model.converged_} | "
            f"kept variance {model.explained_variance_ratio_:.3f} | map-to-planted-source |corr| median "
            f"{np.median(hit):.2f} | peak RSS while decomposing "
            + (f"{hwm:.2f} GB" if hwm is not None else "n/a")
        )
        model.total_seconds_ = total  # type: ignore[attr-defined]
        if name not in fits or total < fits[name].total_seconds_:  # type: ignore[attr-defined]
            fits[name] = model
    names = list(fits)
    for other in names[1:]:
        corr = matched_abs_corr(fits[names[0]].maps_.numpy(), fits[other].maps_.numpy())
        print(f"engine agreement {names[0]} vs {other}: matched |corr| min {corr.min():.4f}, "
              f"median {np.median(corr):.4f}, share > 0.99: {(corr > 0.99).mean():.2f}")
    return fits


def run_sklearn_child(args: argparse.Namespace) -> None:
    """Subprocess body: build the same matrix, then fit plain FastICA and print JSON."""
    import warnings

    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    signal, _ = make_signal(args.tokens, args.neurons, args.seed)
    x = signal.numpy()
    print("READY", flush=True)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        ica = FastICA(n_components=args.components, random_state=args.seed).fit(x)
    seconds = time.perf_counter() - start
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    print(json.dumps({"seconds": seconds, "n_iter": int(ica.n_iter_), "converged": converged,
                      "peak_rss_gb": rss_peak_gb()}), flush=True)


def run_sklearn(args: argparse.Namespace) -> tuple[float | None, str]:
    """Returns (seconds or None when killed, description)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_sklearn-child", "--tokens", str(args.tokens),
           "--neurons", str(args.neurons), "--components", str(args.components), "--seed", str(args.seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks while the child builds the data
    if line.strip() != "READY":
        proc.wait()
        return None, f"child failed before fitting (exit {proc.returncode})"
    start = time.perf_counter()
    try:
        out, _ = proc.communicate(timeout=args.sklearn_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, f"did not finish in {args.sklearn_timeout:g} s (killed after {time.perf_counter() - start:.0f} s)"
    if proc.returncode != 0:
        return None, f"failed (exit {proc.returncode})"
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["seconds"]), (
        f"{result['seconds']:.2f} s, {result['n_iter']} it, converged={result['converged']}, child peak RSS {result['peak_rss_gb']:.2f} GB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--neurons", type=int, default=11_008)
    parser.add_argument("--components", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sklearn-timeout", type=float, default=900.0)
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--max-iter", type=int, default=300, help="FastICA iterations for ours")
    parser.add_argument("--tol", type=float, default=1e-4, help="FastICA tolerance for ours (tiny: worst case)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeat", type=int, default=1, help="time each engine this many times (best is used)")
    parser.add_argument("--_sklearn-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._sklearn_child:
        run_sklearn_child(args)
        return
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"cuda {torch.cuda.is_available()}, load average {os.getloadavg()[0]:.2f}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    start = time.perf_counter()
    signal, truth = make_signal(args.tokens, args.neurons, args.seed)
    print(f"data: {args.tokens} tokens x {args.neurons} neurons float32 ({signal.numel() * 4 / 1e9:.2f} GB), "
          f"{truth.shape[0]} planted sources, built in {time.perf_counter() - start:.1f} s; "
          f"k = {args.components}; process peak RSS so far {rss_peak_gb():.2f} GB")

    engines = [("sklearn", "cpu"), ("torch", "cpu")]
    if torch.cuda.is_available():
        engines.append(("torch", "cuda"))
    fits = run_ours(signal, truth, args.components, engines, args.repeat, args.max_iter, args.tol)
    print(f"process peak RSS (getrusage): {rss_peak_gb():.2f} GB")

    if args.skip_sklearn:
        return
    del signal
    seconds, text = run_sklearn(args)
    print(f"plain sklearn FastICA(n_components={args.components}) on tokens x neurons: {text}")
    for name, model in fits.items():
        ours = model.total_seconds_  # type: ignore[attr-defined]
        if seconds is not None:
            print(f"speed-up of ours [{name}] over plain sklearn: {seconds / ours:.1f}x")
        else:
            print(f"speed-up of ours [{name}] over plain sklearn: > {args.sklearn_timeout / ours:.0f}x")


if __name__ == "__main__":
    main()
