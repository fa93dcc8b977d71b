"""Functional networks: ICA spatial maps of every layer and run, saved as a reusable artifact.

Artifact folder layout (no pickles)::

    networks.json                      metadata: model, widths, runs, components, ICA settings,
                                       calibration source and hash, timings
    stats.safetensors                  per-channel activation statistics (see capture.py)
    maps/layer{i:03d}_run{r:03d}.safetensors   {"maps": (components, width_i) float16 z-scores}
    gram/layer{i:03d}.safetensors      {"gram": (width_i, width_i) float32}: X^T X / T of the signal
                                       (least-squares compensation, see compensate.py)

Each (layer, run) job is written atomically when it finishes, so an interrupted
decomposition resumes where it stopped. Selection reads only this folder (and the
model's weights for weight-aware scores), so budgets can be changed without new ICA.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .capture import CaptureIndex
from .errors import UserError

log = logging.getLogger(__name__)

ARTIFACT_FILE = "networks.json"


@dataclass
class NetworksMeta:
    """Everything needed to interpret (and re-use) a networks artifact."""

    model: str
    model_type: str
    widths: list[int]
    runs: int
    components: int
    seed: int
    ica: dict
    calibration: dict
    timings: dict = field(default_factory=dict)
    fbn_prune_version: str = ""


class Networks:
    """A networks artifact on disk: metadata, statistics and per-(layer, run) spatial maps."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / ARTIFACT_FILE
        if not meta_path.is_file():
            raise UserError(f"{folder} is not a networks artifact (no {ARTIFACT_FILE}); create one with `fbn-prune networks`.")
        self.meta = NetworksMeta(**json.loads(meta_path.read_text()))

    @property
    def n_layers(self) -> int:
        return len(self.meta.widths)

    def map_path(self, layer: int, run: int) -> Path:
        return map_path(self.folder, layer, run)

    def maps(self, layer: int) -> torch.Tensor:
        """All runs' maps of one layer: (runs, components, width) float32."""
        missing = [r for r in range(self.meta.runs) if not self.map_path(layer, r).is_file()]
        if missing:
            raise UserError(f"networks artifact {self.folder} is incomplete (layer {layer}, run {missing[0]}); rerun `fbn-prune networks` to resume.")
        return torch.stack([load_file(str(self.map_path(layer, r)))["maps"].float() for r in range(self.meta.runs)])

    def stats(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.folder / "stats.safetensors"))

    def gram(self, layer: int) -> torch.Tensor:
        """The layer's signal Gram matrix X^T X / T: (width, width) float64."""
        path = gram_path(self.folder, layer)
        if not path.is_file():
            raise UserError(f"networks artifact {self.folder} has no Gram matrices for compensation; "
                            "rerun `fbn-prune networks` or use --compensate none.")
        return load_file(str(path))["gram"].double()


def map_path(folder: Path, layer: int, run: int) -> Path:
    return folder / "maps" / f"layer{layer:03d}_run{run:03d}.safetensors"


def gram_path(folder: Path, layer: int) -> Path:
    return Path(folder) / "gram" / f"layer{layer:03d}.safetensors"


def write_grams(index: CaptureIndex, folder: str | Path, progress: bool = True) -> None:
    """Each layer's Gram matrix (width, width), float32, streamed from the capture one layer at a time."""
    from tqdm.auto import tqdm

    from .compensate import gram

    (Path(folder) / "gram").mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(index.widths)), desc="gram", unit="layer", disable=not progress):
        target = gram_path(folder, i)
        if target.is_file():
            continue
        tmp = target.with_suffix(".tmp")
        save_file({"gram": gram(index.signal(i)).float()}, str(tmp))
        os.replace(tmp, target)


def membership(maps: torch.Tensor) -> torch.Tensor:
    """The paper's score: max over runs and maps of |z|. A neuron is in some network at
    threshold T exactly when its score exceeds T. maps: (runs, k, width) -> (width,)."""
    return maps.abs().amax(dim=(0, 1))


def decompose_all(index: CaptureIndex, folder: str | Path, meta: NetworksMeta, progress: bool = True) -> Networks:
    """ICA for every (layer, run) of a capture, written into a networks artifact folder.

    Jobs whose map file exists are skipped (resume). ``meta.ica`` holds the keyword
    arguments of :func:`fbn_prune.ica.decompose` except the seed.
    """
    from tqdm.auto import tqdm

    from .ica import decompose

    folder = Path(folder)
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    jobs = [(i, r) for i in range(len(index.widths)) for r in range(meta.runs)]
    todo = [(i, r) for i, r in jobs if not map_path(folder, i, r).is_file()]
    if len(todo) < len(jobs):
        log.info("resuming: %d of %d decompositions already done", len(jobs) - len(todo), len(jobs))
    start = time.perf_counter()
    for i, r in tqdm(todo, desc="decompose", unit="layer-run", disable=not progress):
        signal = torch.from_numpy(index.signal(i, r).astype("float32"))
        maps = decompose(signal, meta.components, seed=job_seed(meta.seed, i, r), **meta.ica)
        target = map_path(folder, i, r)
        tmp = target.with_suffix(".tmp")
        save_file({"maps": maps.to(torch.float16).contiguous()}, str(tmp))
        os.replace(tmp, target)
    meta.timings["decompose_s"] = round(meta.timings.get("decompose_s", 0.0) + time.perf_counter() - start, 2)
    (folder / ARTIFACT_FILE).write_text(json.dumps(asdict(meta), indent=1))
    return Networks(folder)


def job_seed(seed: int, layer: int, run: int) -> int:
    """A distinct, reproducible seed for each (layer, run) decomposition."""
    return (seed * 1_000_003 + layer * 1_009 + run) % (2**31 - 1)
