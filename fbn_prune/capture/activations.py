"""Record every layer's FFN neuron signal (the down projection's input) to disk.

For each layer ``i`` the capture folder holds ``layer_{i:03d}.f16``: a float16 matrix of
shape (tokens, width_i) written row-block by row-block as batches go through the
model, so RAM stays at the model plus one batch whatever the number of tokens (the batch
size can be derived from a RAM budget: ``resources.batch_under_budget``).
Runs are contiguous row ranges (``run_offsets``). Per-channel running statistics
(sum, sum of squares, sum of |x|, over all tokens) go to ``stats.safetensors``:
they feed activation-aware scores and bias compensation without re-reading signals.

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
from fbn_prune.models.arch import Adapter
from fbn_prune.models.placement import input_device
from fbn_prune.texts.calibration import CalibrationSet

log = logging.getLogger(__name__)


@dataclass
class CaptureIndex:
    """What a capture folder holds. Rows ``run_offsets[r]:run_offsets[r+1]`` belong to run r."""

    folder: str
    widths: list[int]
    run_offsets: list[int]

    @property
    def n_tokens(self) -> int:
        return self.run_offsets[-1]

    def signal(self, layer: int, run: int | None = None) -> np.ndarray:
        """Memory-mapped signal of one layer: (tokens, width) float16, or only one run's rows."""
        m = np.memmap(Path(self.folder) / f"layer_{layer:03d}.f16", dtype=np.float16, mode="r",
                      shape=(self.n_tokens, self.widths[layer]))
        if run is None:
            return m
        return m[self.run_offsets[run] : self.run_offsets[run + 1]]

    def stats(self) -> dict[str, torch.Tensor]:
        """``{"sum.{i}", "sumsq.{i}", "sumabs.{i}"}`` float64 tensors of shape (width_i,), plus ``count``."""
        return load_file(str(Path(self.folder) / "stats.safetensors"))

    @classmethod
    def open(cls, folder: str | Path) -> "CaptureIndex":
        return cls(**json.loads((Path(folder) / "capture.json").read_text()))


def _batches(docs: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Documents grouped into batches in their given order (keeps runs and tokens contiguous)."""
    return [docs[i : i + batch_size] for i in range(0, len(docs), batch_size)]


@torch.inference_mode()
def capture(model, adapter: Adapter, cal: CalibrationSet, folder: str | Path, batch_size: int = 8,
            pad_id: int = 0, progress: bool = True) -> CaptureIndex:
    """Run the calibration documents through ``model`` and stream each layer's neuron signal to ``folder``.

    Only real (non-padding) token positions are recorded, in document order, so row t of
    every layer file is the same token. The LM head is skipped (only the base model runs).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_layers = adapter.num_layers(model)
    widths = adapter.channel_widths(model)
    device = input_device(model)
    stats: list[torch.Tensor | None] = [None] * n_layers  # (3, width) float64 on the layer's device: sum, sumsq, sumabs
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
        total = sum(len(run) for run in cal.runs)
        bar = tqdm(total=cal.n_tokens, desc="capture", unit="tok", disable=not progress)
        for run in cal.runs:
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
        bar.close()
        log.info("captured %d tokens from %d documents x %d layers", offsets[-1], total, n_layers)

    tensors = {"count": torch.tensor([offsets[-1]], dtype=torch.float64)}
    for i in range(n_layers):
        s = stats[i].cpu() if stats[i] is not None else torch.zeros(3, widths[i], dtype=torch.float64)
        tensors[f"sum.{i}"], tensors[f"sumsq.{i}"], tensors[f"sumabs.{i}"] = (t.contiguous() for t in s)
    save_file(tensors, str(folder / "stats.safetensors"))
    index = CaptureIndex(folder=str(folder), widths=widths, run_offsets=offsets)
    (folder / "capture.json").write_text(json.dumps(asdict(index)))
    return index
