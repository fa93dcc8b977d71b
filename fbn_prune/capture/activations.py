"""Record every layer's FFN neuron signal (the down projection's input) to disk.

For each layer ``i`` the capture folder holds ``layer_{i:03d}.f16``: a float16 matrix of
shape (tokens, width_i) written row-block by row-block as batches go through the
model, so RAM stays at the model plus one batch whatever the number of tokens (the batch
size can be derived from a RAM budget: ``resources.batch_under_budget``).
Runs are contiguous row ranges (``run_offsets``). A capture may hold only some of the runs
(``runs``: under torch.distributed each rank captures a contiguous block of them, see
_runtime/world.py); :class:`CaptureSet` reads run r's rows from whichever capture holds them.

Per-channel statistics (sum, sum of squares, sum of |x|) go to ``stats.safetensors`` per run, in
float64: ``layer.{i}`` of shape (runs held, 3, width_i). The networks artifact's totals are their sum in
run order (find_networks, :func:`fbn_prune._runtime.world.ordered_sum`), the same bits for one process or several.

The model may be spread over several devices (accelerate ``device_map``): each hook reduces
its layer's rows where they were computed (statistics in float64 there) and moves only the
float16 rows to the CPU.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from fbn_prune._io.testhook import kill_point
from fbn_prune._runtime import world
from fbn_prune.models.arch import Adapter
from fbn_prune.models.placement import input_device
from fbn_prune.texts.calibration import CalibrationSet

log = logging.getLogger(__name__)


@dataclass
class CaptureIndex:
    """What a capture folder holds: the runs ``runs`` (global run numbers; None: every run, 0..), whose
    rows are ``run_offsets[k]:run_offsets[k+1]`` for the k-th of them."""

    folder: str
    widths: list[int]
    run_offsets: list[int]
    runs: list[int] | None = None

    @property
    def n_tokens(self) -> int:
        return self.run_offsets[-1]

    @property
    def held(self) -> list[int]:
        """The global run numbers this capture holds, in row order."""
        return list(self.runs) if self.runs is not None else list(range(len(self.run_offsets) - 1))

    def signal(self, layer: int, run: int | None = None) -> np.ndarray:
        """Memory-mapped signal of one layer: (tokens, width) float16, or only run ``run``'s rows."""
        m = np.memmap(Path(self.folder) / f"layer_{layer:03d}.f16", dtype=np.float16, mode="r",
                      shape=(self.n_tokens, self.widths[layer]))
        return m if run is None else m[slice(*self.run_rows(run))]

    def run_rows(self, run: int) -> tuple[int, int]:
        """(first, end) row of run ``run`` (a global run number this capture holds) in its files."""
        k = self.held.index(run)
        return self.run_offsets[k], self.run_offsets[k + 1]

    def run_stats(self, layer: int) -> torch.Tensor:
        """Per-run sums of one layer, (runs held, 3, width) float64: sum, sum of squares, sum of |x|."""
        return load_file(str(Path(self.folder) / "stats.safetensors"))[f"layer.{layer}"]

    @classmethod
    def open(cls, folder: str | Path) -> "CaptureIndex":
        return cls(**json.loads((Path(folder) / "capture.json").read_text()))


@dataclass
class CaptureSet:
    """Every capture of one networks folder (one per rank under torch.distributed, else one): run r's rows
    from the capture that holds them."""

    shards: list[CaptureIndex]

    @property
    def widths(self) -> list[int]:
        return self.shards[0].widths

    def _shard(self, run: int) -> CaptureIndex:
        for s in self.shards:
            if run in s.held:
                return s
        raise KeyError(f"no capture holds run {run}")

    def signal(self, layer: int, run: int) -> np.ndarray:
        """Run ``run``'s rows of layer ``layer``: (run tokens, width) float16, memory-mapped."""
        return self._shard(run).signal(layer, run)

    def run_tokens(self, run: int) -> int:
        first, end = self._shard(run).run_rows(run)
        return end - first


def _batches(docs: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Documents grouped into batches in their given order (keeps runs and tokens contiguous)."""
    return [docs[i : i + batch_size] for i in range(0, len(docs), batch_size)]


@torch.inference_mode()
def capture(model, adapter: Adapter, cal: CalibrationSet, folder: str | Path, batch_size: int = 8,
            pad_id: int = 0, progress: bool = True, runs: list[int] | None = None) -> CaptureIndex:
    """Run the calibration documents through ``model`` and stream each layer's neuron signal to ``folder``.

    Only real (non-padding) token positions are recorded, in document order, so row t of
    every layer file is the same token. The LM head is skipped (only the base model runs).
    ``runs``: capture only these runs (global numbers, ascending); None: all. A run's batches are the
    same whichever runs are captured, so its rows are too.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_layers = adapter.num_layers(model)
    widths = adapter.channel_widths(model)
    device = input_device(model)
    stats: list[torch.Tensor | None] = [None] * n_layers  # (3, width) float64 on the layer's device: sum, sumsq, sumabs
    per_run: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]  # each run's (3, width) on the CPU
    held = list(range(len(cal.runs))) if runs is None else list(runs)
    offsets = [0]
    valid: dict[torch.device, torch.Tensor] = {}  # the batch's real-token mask, on each device that asked for it

    with ExitStack() as stack:
        files = [stack.enter_context(open(folder / f"layer_{i:03d}.f16", "wb")) for i in range(n_layers)]

        def hook_for(i: int):
            def hook(_module, args):
                x = args[0].detach()
                if x.device not in valid:
                    valid[x.device] = valid[torch.device("cpu")].to(x.device)
                x = x.reshape(-1, x.shape[-1])[valid[x.device]]  # (real tokens, width) where it was computed
                if stats[i] is None:
                    stats[i] = torch.zeros(3, x.shape[1], dtype=torch.float64, device=x.device)
                xd = x.double()  # exact; one conversion for the three float64 sums
                stats[i][0].add_(xd.sum(0))
                stats[i][1].add_((xd * xd).sum(0))
                stats[i][2].add_(xd.abs().sum(0))
                files[i].write(x.to(torch.float16).cpu().numpy().data)
            return hook

        for i in range(n_layers):
            stack.callback(adapter.down_module(model, i).register_forward_pre_hook(hook_for(i)).remove)

        base = model.base_model
        total = sum(len(cal.runs[r]) for r in held)
        bar = tqdm(total=sum(len(d) for r in held for d in cal.runs[r]), desc="capture", unit="tok",
                   disable=not progress)
        for run in (cal.runs[r] for r in held):
            for batch in _batches(run, batch_size):
                longest = max(len(d) for d in batch)
                ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for b, d in enumerate(batch):  # right padding: causal attention keeps real tokens exact
                    ids[b, : len(d)] = torch.tensor(d)
                    mask[b, : len(d)] = 1
                valid.clear()
                valid[torch.device("cpu")] = mask.reshape(-1).bool()
                kill_point("capture", at=2)  # test hook (testhook.py): no-op unless a fault-injection test asks
                base(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                bar.update(int(mask.sum()))
            offsets.append(offsets[-1] + sum(len(d) for d in run))
            for i in range(n_layers):  # this run's sums; the next run starts from zero
                per_run[i].append(stats[i].cpu().clone() if stats[i] is not None
                                  else torch.zeros(3, widths[i], dtype=torch.float64))
                if stats[i] is not None:
                    stats[i].zero_()
        bar.close()
        log.info("captured %d tokens from %d documents x %d layers", offsets[-1], total, n_layers)

    tensors = {f"layer.{i}": (torch.stack(per_run[i]) if per_run[i] else torch.zeros(0, 3, widths[i],
                                                                                   dtype=torch.float64)).contiguous()
               for i in range(n_layers)}
    save_file(tensors, str(folder / "stats.safetensors"))
    index = CaptureIndex(folder=str(folder), widths=widths, run_offsets=offsets, runs=held)
    (folder / "capture.json").write_text(json.dumps(asdict(index)))
    return index


def total_stats(index: CaptureIndex, n_tokens: int) -> dict[str, torch.Tensor] | None:
    """The statistics of every run, summed in run order (this capture's runs and, under torch.distributed,
    the other ranks'): ``count`` (1,) and ``sum.i``/``sumsq.i``/``sumabs.i`` (width_i,) float64, on rank 0;
    None on the other ranks. ``n_tokens``: the tokens of every run."""
    per_layer = [index.run_stats(i) for i in range(len(index.widths))]  # each (runs held, 3, width_i)
    parts = (torch.cat([p[k].reshape(-1) for p in per_layer]) for k in range(len(index.held)))
    total = world.ordered_sum(parts, (3 * sum(index.widths),), "summing the activation statistics")
    if total is None:
        return None
    out = {"count": torch.tensor([float(n_tokens)], dtype=torch.float64)}
    start = 0
    for i, w in enumerate(index.widths):
        block = total[start : start + 3 * w].reshape(3, w)
        start += 3 * w
        out[f"sum.{i}"], out[f"sumsq.{i}"], out[f"sumabs.{i}"] = (t.contiguous() for t in block)
    return out
