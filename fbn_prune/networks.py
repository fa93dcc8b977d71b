"""Functional networks: ICA spatial maps of every layer and run, saved as a reusable artifact.

Artifact folder layout (no pickles)::

    networks.json                      metadata: model, widths, runs, components, ICA settings,
                                       calibration source and hash, timings
    stats.safetensors                  per-channel activation statistics (see capture.py)
    maps/layer{i:03d}_run{r:03d}.safetensors   {"maps": (components, width_i) float16 z-scores}
    gram/layer{i:03d}.safetensors      {"gram": (width_i, width_i) float32}: X^T X / T of the signal
                                       (least-squares compensation, see compensate.py)

Each (layer, run) job is written atomically when it finishes, so an interrupted
decomposition resumes where it stopped; jobs run one after the other in this process or in
parallel worker processes (``--jobs``, see jobs.py) with the same result. Selection reads only this folder (and the
model's weights for weight-aware scores), so budgets can be changed without new ICA.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .capture import CaptureIndex
from .errors import UserError
from .testhook import kill_point

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


def write_grams(index: CaptureIndex, folder: str | Path, progress: bool = True, device: str = "cpu") -> None:
    """Each layer's Gram matrix (width, width), float32, streamed from the capture one layer at a time
    (products on ``device``: cpu, cuda or cuda:N)."""
    from tqdm.auto import tqdm

    from .compensate import gram

    (Path(folder) / "gram").mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(index.widths)), desc="gram", unit="layer", disable=not progress):
        target = gram_path(folder, i)
        if target.is_file():
            continue
        tmp = target.with_suffix(".tmp")
        save_file({"gram": gram(index.signal(i), device=device).float()}, str(tmp))
        os.replace(tmp, target)


def membership(maps: torch.Tensor) -> torch.Tensor:
    """The paper's score: max over runs and maps of |z|. A neuron is in some network at
    threshold T exactly when its score exceeds T. maps: (runs, k, width) -> (width,)."""
    return maps.abs().amax(dim=(0, 1))


def decompose_all(index: CaptureIndex, folder: str | Path, meta: NetworksMeta, progress: bool = True, *,
                  jobs: int = 1, device: str = "auto") -> Networks:
    """ICA for every (layer, run) of a capture, written into a networks artifact folder.

    Jobs whose map file exists are skipped (resume). ``meta.ica`` holds the keyword
    arguments of :func:`fbn_prune.ica.decompose` except the seed. ``jobs`` > 1 runs that
    many worker processes (see jobs.py); ``device`` is the ICA device (auto, cpu, cuda,
    cuda:N). Neither changes the result.
    """
    from tqdm.auto import tqdm

    from .jobs import resolve_ica_device, run_parallel

    folder = Path(folder)
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    for stale in (folder / "maps").glob("*.tmp"):  # half-written by a killed run
        stale.unlink(missing_ok=True)
    every = [(i, r) for i in range(len(index.widths)) for r in range(meta.runs)]
    todo = [(i, r) for i, r in every if not map_path(folder, i, r).is_file()]
    if len(todo) < len(every):
        log.info("resuming: %d of %d decompositions already done", len(every) - len(todo), len(every))
    device = resolve_ica_device(device)
    workers = max(1, min(jobs, len(todo)))
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="decompose", unit="layer-run", disable=not progress)
    if workers == 1:
        for i, r in todo:
            decompose_job(index, folder, i, r, meta.components, meta.seed, meta.ica, device)
            kill_point("decompose")  # test hook (testhook.py): no-op unless a fault-injection test asks
            bar.update()
    else:
        specs = [(index, str(folder), i, r, meta.components, meta.seed, meta.ica) for i, r in todo]
        for _ in run_parallel(specs, workers, device):
            bar.update()
    bar.close()
    meta.timings["decompose_s"] = round(meta.timings.get("decompose_s", 0.0) + time.perf_counter() - start, 2)
    (folder / ARTIFACT_FILE).write_text(json.dumps(asdict(meta), indent=1))
    return Networks(folder)


def decompose_job(index: CaptureIndex, folder: str | Path, layer: int, run: int, components: int, seed: int,
                  ica: dict, device: str | None = None) -> None:
    """One job: ICA of run ``run``'s rows of layer ``layer``'s signal, saved atomically as its map file
    ({"maps": (components, width) float16}). On the CPU it runs on one thread (see jobs.py)."""
    from .ica import decompose
    from .jobs import one_thread

    with warnings.catch_warnings():  # the read-only memmap is copied (float32, z-scored) by decompose
        warnings.simplefilter("ignore", UserWarning)
        signal = torch.from_numpy(index.signal(layer, run))  # (run tokens, width) float16, not read yet
    with one_thread(device is None or not str(device).startswith("cuda")):  # bitwise the same whatever --jobs
        maps = decompose(signal, components, seed=job_seed(seed, layer, run), device=device, **ica)
    target = map_path(Path(folder), layer, run)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    save_file({"maps": maps.to(torch.float16).contiguous()}, str(tmp))
    os.replace(tmp, target)


def job_seed(seed: int, layer: int, run: int) -> int:
    """A distinct, reproducible seed for each (layer, run) decomposition."""
    return (seed * 1_000_003 + layer * 1_009 + run) % (2**31 - 1)
