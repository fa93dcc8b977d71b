"""Sizes, budgets and rough rates: how much RAM, disk and time a run needs.

All figures are bytes (int) or seconds (float). The memory model of one run:

- host RAM = runtime (Python, torch, transformers) + the weights that sit in host memory
  + the largest transient working set of the steps, which run one after the other:
  capture (one batch of activations), Gram matrices (one layer), ICA (one job per worker);
- disk = the float16 capture (tokens x sum(widths) x 2) + Gram matrices (layers x width^2 x 4)
  + ICA maps (layers x runs x components x width x 2).

Rates are deliberately rough (within ~2x): they turn FLOPs into minutes for a plan, and
are never used to decide anything that changes results.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fbn_prune._runtime.sizes import gb
from fbn_prune.errors import UserError

RUNTIME_BYTES = 500_000_000
"""Resident size of Python + torch + transformers + scikit-learn before any model (measured 0.41 GB)."""

def free_disk(path: str | Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def cpu_cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def current_rss() -> int:
    """Resident bytes of this process now (Linux /proc; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- sizes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What the estimates need to know about a model and a calibration set."""

    params: int
    hidden: int
    heads: int
    widths: tuple[int, ...]
    dtype_bytes: int

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes


def capture_disk(widths: list[int] | tuple[int, ...], tokens: int) -> int:
    """Bytes of the float16 capture: every token's signal in every layer."""
    return 2 * tokens * sum(widths)


def gram_disk(widths: list[int] | tuple[int, ...]) -> int:
    """Bytes of the float32 Gram matrices (one width x width per layer)."""
    return sum(4 * w * w for w in widths)


def maps_disk(widths: list[int] | tuple[int, ...], runs: int, components: int) -> int:
    """Bytes of the float16 ICA maps (components x width per layer and run)."""
    return sum(2 * runs * components * w for w in widths)


ALLOCATOR_FACTOR = 2
"""Peak RSS over live tensors during a CPU forward (allocator caching and fragmentation): a
batch of 2,048 SmolLM2 tokens in float32 raised the peak by ~210 KB per token, twice the ~100 KB
of tensors alive at once."""


def forward_bytes_per_token(shape: Shape, seq_len: int) -> int:
    """Memory per token of a batch at the peak of one decoder layer, with the capture hook's
    temporaries, times ``ALLOCATOR_FACTOR``.

    Live in the layer: residual, normed input, q/k/v, attention output (~8 hidden), gate, up and
    their product (3 width), one row of attention scores and probabilities (2 heads x seq_len).
    The hook adds ~34 bytes per channel of its layer (float64 copy, squares and |x|, float16 copy).
    """
    w = max(shape.widths)
    live = shape.dtype_bytes * (8 * shape.hidden + 3 * w + 2 * shape.heads * seq_len) + 34 * w
    return ALLOCATOR_FACTOR * live


def hook_bytes_per_token(shape: Shape) -> int:
    """Host memory per token the capture hook needs when the model runs on a GPU (float16 rows)."""
    return 2 * max(shape.widths)


def capture_bytes_per_token(shape: Shape, seq_len: int, host_model: bool) -> int:
    """Host RAM per token of a batch: the whole forward when the model runs on the CPU, else the hook's copy."""
    return forward_bytes_per_token(shape, seq_len) if host_model else hook_bytes_per_token(shape)


def ica_job_bytes(tokens: int, width: int, components: int) -> int:
    """Working set of one (layer, run) decomposition: the float16 signal pages (2 T w), its
    float32 z-scored copy (4 T w), randomized-SVD blocks (~4 x T x (k + 10) x 4) and maps."""
    sketch = components + 10
    return 6 * tokens * width + 16 * tokens * sketch + 16 * width * sketch


def gram_bytes(width: int, chunk: int = 4096) -> int:
    """Working set of one layer's Gram matrix: float64 accumulator, float32 product and its
    float64 copy (20 w^2), plus a float32 chunk of rows."""
    return 20 * width * width + 4 * chunk * width


# ---- the capture's batch under a RAM budget ------------------------------------------------


def batch_under_budget(max_ram: int, resident: int, per_token: int, seq_len: int, batch_size: int) -> int:
    """The largest batch (documents of up to ``seq_len`` tokens, at most ``batch_size``) whose
    capture fits ``max_ram`` next to ``resident`` bytes (runtime + weights in host memory).

    Raises UserError (one line) when not even one document fits.
    """
    one = per_token * seq_len
    fits = (max_ram - resident) // one if max_ram > resident else 0
    if fits < 1:
        raise UserError(
            f"--max-ram {gb(max_ram)} is below what the capture needs: {gb(resident)} for the model and runtime "
            f"+ {gb(one)} for one batch of {seq_len} tokens = {gb(resident + one)}; raise --max-ram, "
            "lower --seq-len, or load the model on a GPU (--device cuda / --device-map auto).")
    return int(min(batch_size, fits))


def jobs_under_budget(jobs: int, max_ram: int | None, resident: int, per_job: int) -> int:
    """At most ``jobs`` parallel ICA jobs, fewer when ``max_ram`` cannot hold that many working sets."""
    if max_ram is None:
        return jobs
    return max(1, min(jobs, (max_ram - resident) // max(per_job, 1)))


# ---- rough rates (seconds) -----------------------------------------------------------------

CPU_FLOPS_PER_CORE = {"forward": 50e9, "gram": 80e9, "ica": 25e9, "select": 11e9}
"""Effective FLOP/s per core, measured on this project's 2-core machine (SmolLM2
capture ~500 tokens/s, Gram 13 s and 120 ICA jobs 35 s for the default recipe; a 7B-sized
ICA block 5-10 s; float64 elimination of an 11,008-wide layer 120 s, benchmarks/selection_time.py)."""

SELECT_FULL_RATE_WIDTH = 11_008
"""The elimination reaches the "select" rate at this width; narrower layers run slower per FLOP
(many small steps): rate x (width / 11,008)^0.7, measured 7 / 11 / 23 GFLOP/s on 2 cores at
widths 1,536 / 4,096 / 11,008."""

GPU_FLOPS = {"forward": 200e12, "gram": 40e12, "ica": 20e12, "select": 5e12}
"""Effective FLOP/s of one H100-class GPU: bf16/fp16 forward at capture batch sizes, float32
Gram and randomized SVD (TF32 off), float64 elimination (well under the FP64 peak: many
small steps)."""

DISK_BYTES_PER_S = 1e9
"""Sequential write/read rate assumed for the capture (a local NVMe does 1-3 GB/s)."""

FASTICA_ITERATIONS = 100
"""Typical parallel FastICA iterations to converge at tol 1e-4 (the maximum is max_iter)."""


def rate(step: str, device: str, cores: int | None = None) -> float:
    """FLOP/s assumed for ``step`` (forward, gram, ica) on a device kind (cpu or cuda)."""
    if device.startswith("cuda"):
        return GPU_FLOPS[step]
    return CPU_FLOPS_PER_CORE[step] * (cores or cpu_cores())


def capture_seconds(shape: Shape, tokens: int, device: str) -> float:
    """Forward FLOPs (2 x parameters per token) or writing the capture, whichever is slower."""
    compute = 2 * shape.params * tokens / rate("forward", device)
    return max(compute, capture_disk(shape.widths, tokens) / DISK_BYTES_PER_S)


def gram_seconds(widths: list[int] | tuple[int, ...], tokens: int, device: str) -> float:
    """Gram matrices: 2 T w^2 per layer (on the ICA device), or reading the capture, whichever is slower."""
    compute = sum(2 * tokens * w * w for w in widths) / rate("gram", device)
    return max(compute, capture_disk(widths, tokens) / DISK_BYTES_PER_S)


def elimination_flops(width: int, hidden: int) -> float:
    """fbn's compensated elimination of one layer (eliminate.py): the Cholesky inverse (~n^3) plus
    the shrinking joint updates (~2/3 n^3 + n^2 hidden), n = width."""
    return width**3 + 2 / 3 * width**3 + width**2 * hidden


def selection_seconds(widths: list[int] | tuple[int, ...], hidden: int, device: str, eliminate: bool,
                      compensate: bool, ratio: float = 0.2) -> float:
    """Scoring and compensation after the maps: fbn's elimination on every layer and/or the
    least-squares predictors (one k x k solve with r right-hand sides per layer, k + r = width)."""
    seconds = 0.0
    for w in widths:
        flops = elimination_flops(w, hidden) if eliminate else 0.0
        if compensate:
            k = w * (1 - ratio)
            flops += 2 / 3 * k**3 + 2 * k * k * (w - k)
        seconds += flops / (rate("select", device) * min(1.0, (w / SELECT_FULL_RATE_WIDTH) ** 0.7))
    return seconds


def ica_job_flops(tokens: int, width: int, components: int, power_iterations: int = 3) -> float:
    """Randomized SVD (2 (2 q + 2) T w l) plus FastICA (~4 k^2 w per iteration)."""
    sketch = components + 10
    return 2 * tokens * width * sketch * (2 * power_iterations + 2) + FASTICA_ITERATIONS * 4 * components**2 * width


def ica_seconds(widths: list[int] | tuple[int, ...], tokens: int, runs: int, components: int, device: str,
                jobs: int = 1) -> float:
    """All (layer, run) jobs: ``tokens`` calibration tokens split over ``runs``, ``jobs`` at a time
    (parallel CPU jobs share the cores; parallel GPU jobs use one GPU each)."""
    per_run = tokens / max(runs, 1)
    flops = sum(runs * ica_job_flops(int(per_run), w, components) for w in widths)
    read = capture_disk(widths, tokens) / DISK_BYTES_PER_S
    if device.startswith("cuda"):
        return flops / (rate("ica", device) * jobs) + read
    return flops / rate("ica", "cpu") + read
