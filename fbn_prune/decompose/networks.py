"""Functional networks: ICA spatial maps of every layer and run, saved as a reusable artifact.

Artifact folder layout (no pickles)::

    networks.json                      metadata: model, widths, runs, components, ICA settings,
                                       calibration source and hash, timings, and ``settings``: the
                                       :class:`NetworkSettings` record of everything that shaped it
    holdout.json                       held-out calibration documents (verification)
    recipe.yaml                        the recipe that made it
    stats.safetensors                  per-channel activation statistics (see capture.py)
    maps/layer{i:03d}_run{r:03d}.safetensors   {"maps": (components, width_i) float16 z-scores}
    gram/layer{i:03d}.safetensors      {"gram": (width_i, width_i) float32}: X^T X / T of the signal
                                       (least-squares compensation, see compensate.py)

Each (layer, run) job is written atomically when it finishes, so an interrupted
decomposition resumes where it stopped; jobs run one after the other in this process or in
parallel worker processes (``--jobs``, see jobs.py) with the same result. Selection reads only this folder (and the
model's weights for weight-aware scores), so budgets can be changed without new ICA.

An artifact is reused (resumed, extended, selected from) only for the settings it records:
:func:`check_reuse` refuses any other with a one-line reason. Everything read back is
validated (:class:`Networks`): the metadata's keys and types, every tensor's shape against the
recorded widths and components, finite values; a damaged file is a UserError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fbn_prune.capture.activations import CaptureIndex
from fbn_prune.errors import UserError
from fbn_prune.models.identity import hub_snapshot as _hub_snapshot, model_hash
from fbn_prune.decompose.jobs import resolve_ica_device
from fbn_prune.config.recipe import Recipe
from fbn_prune._io.testhook import kill_point

log = logging.getLogger(__name__)

ARTIFACT_FILE = "networks.json"
HOLDOUT_FILE = "holdout.json"
SETTINGS_FORMAT = 1
"""Bumped when NetworkSettings changes meaning (an artifact of another format is never reused)."""
ICA_METHOD = "z-score, randomized PCA, unit-variance eigh whitening, parallel FastICA, z-scored maps"
"""What ica.decompose does besides its keyword settings (recorded, so a change of method is a change of settings)."""
FRESH_FOLDER_HINT = {"--out": "use a fresh --out folder", "--save-networks": "use a fresh --save-networks folder"}


@dataclass(frozen=True)
class IcaSettings:
    """The decomposition's settings: ica.decompose's keywords with the engine resolved ("sklearn"/"torch")."""

    fun: str
    max_iter: int
    tol: float
    engine: str
    method: str = ICA_METHOD


@dataclass(frozen=True)
class NetworkSettings:
    """Everything that shapes a networks artifact: equal settings give equal statistics, Gram matrices and maps.

    Attributes:
        model: the model as the user named it (folder, Hub id, .gguf); informational when ``model_hash`` is known.
        model_revision: the Hub revision (snapshot commit) of a Hub model, else None.
        model_hash: sha256 over the model folder's files (weights, config, tokenizer; see evaluate.model_hash),
            None for a Hub model that is not on disk.
        model_type, widths: the architecture and the FFN width of every layer.
        signal: which tensor is the neuron signal (the adapter and its down projection's input).
        dtype: the working dtype the signals were captured in.
        calibration_sha256: sha256 of the calibration documents used (None until they are read).
        seq_len: tokens per calibration document.
        runs, components, seed: decomposition.runs, decomposition.components and the run's seed.
        ica: the ICA engine and its settings.
    """

    model: str
    model_revision: str | None
    model_hash: str | None
    model_type: str
    widths: tuple[int, ...]
    signal: str
    dtype: str
    calibration_sha256: str | None
    seq_len: int
    runs: int
    components: int
    seed: int
    ica: IcaSettings
    format: int = SETTINGS_FORMAT

    def identity(self) -> dict:
        """The settings as compared and hashed: the model by content hash when known, else by name and revision."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        if self.model_hash:
            d.pop("model")
            d.pop("model_revision")
        return d

    def key(self) -> str:
        """A 16-hex-digit key of these settings (equal settings, equal key): names a cache folder."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def with_calibration(self, sha256: str) -> NetworkSettings:
        return replace(self, calibration_sha256=sha256)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetworkSettings:
        """From networks.json's ``settings``; ValueError / TypeError / KeyError when malformed."""
        if not isinstance(d, dict) or not isinstance(d.get("ica"), dict):
            raise TypeError("settings is not a mapping with an ica mapping")
        known = {f.name for f in fields(cls)}
        missing = sorted(known - set(d) - {"format"})
        if missing:
            raise KeyError(missing[0])
        values = {k: v for k, v in d.items() if k in known}
        values["widths"] = tuple(int(w) for w in values["widths"])
        ica_known = {f.name for f in fields(IcaSettings)}
        values["ica"] = IcaSettings(**{k: v for k, v in d["ica"].items() if k in ica_known})
        return cls(**values)

    def difference(self, recorded: NetworkSettings) -> tuple[str, str, str] | None:
        """The first setting in which this run (self) differs from ``recorded``: (name, recorded, asked), or None.

        A None ``calibration_sha256`` on either side (not known yet) is not compared.
        """
        if self.format != recorded.format:
            return ("settings format", str(recorded.format), str(self.format))
        if self.model_hash and recorded.model_hash:
            if self.model_hash != recorded.model_hash:
                return ("model", f"{recorded.model} (sha256 {recorded.model_hash[:12]})",
                        f"{self.model} (sha256 {self.model_hash[:12]})")
        elif (self.model, self.model_revision) != (recorded.model, recorded.model_revision):
            return ("model", _model_name(recorded), _model_name(self))
        for name in ("model_type", "widths", "signal", "dtype", "runs", "components", "seed", "seq_len"):
            a, b = getattr(recorded, name), getattr(self, name)
            if a != b:
                return (name, _short(a), _short(b))
        if self.calibration_sha256 and recorded.calibration_sha256 and self.calibration_sha256 != recorded.calibration_sha256:
            return ("calibration", f"documents sha256 {recorded.calibration_sha256[:12]}",
                    f"sha256 {self.calibration_sha256[:12]}")
        for f in fields(IcaSettings):
            a, b = getattr(recorded.ica, f.name), getattr(self.ica, f.name)
            if a != b:
                return (f"ica {f.name}", _short(a), _short(b))
        return None


def _model_name(s: NetworkSettings) -> str:
    return s.model + (f"@{s.model_revision}" if s.model_revision else "")


def _short(value) -> str:
    text = str(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 60 else text[:57] + "..."


# how to ask for the recorded value again, per setting (for the one-line refusal)
SETTING_FLAGS = {
    "model": "the same model",
    "model_type": "the same model",
    "widths": "the same model",
    "signal": "the same model",
    "dtype": "--dtype {}",
    "runs": "--runs {}",
    "components": "--components {}",
    "seed": "--seed {}",
    "seq_len": "--seq-len {}",
    "calibration": "the same --calib / --calib-task, --calib-samples, --calib-chat and --seed",
    "ica engine": "--ica-engine {} (or the same --ica-device)",
    "ica fun": "decomposition.fun: {} in the recipe",
    "ica max_iter": "decomposition.max_iter: {} in the recipe",
    "ica tol": "decomposition.tol: {} in the recipe",
    "ica method": "the fbn_prune version that made it",
    "settings format": "the fbn_prune version that made it",
}


def network_settings(recipe: Recipe, source, model, adapter, calibration_sha256: str | None = None) -> NetworkSettings:
    """The NetworkSettings of a run: ``recipe`` (a Recipe), ``source`` (models.ModelSource), the loaded ``model``
    and its arch ``adapter``; ``calibration_sha256`` (CalibrationSet.sha256) once the documents are read.

    Hashes the model folder's files (remembered by path, size and mtime, so a model is read once)."""
    d = recipe.decomposition
    engine = d.engine
    if engine == "auto":  # as ica.decompose resolves it: torch where ICA runs on a GPU
        engine = "torch" if resolve_ica_device(d.device).startswith("cuda") else "sklearn"
    digest = model_hash(source)
    revision = None
    if not source.local and digest is not None:
        snap = _hub_snapshot(source.spec)
        revision = snap.name if snap is not None else None
    return NetworkSettings(
        model=source.spec, model_revision=revision, model_hash=digest, model_type=model.config.model_type,
        widths=tuple(adapter.channel_widths(model)), signal=f"{adapter.name}: input of {adapter.down}",
        dtype=recipe.dtype, calibration_sha256=calibration_sha256, seq_len=recipe.calibration.seq_len,
        runs=d.runs, components=d.components, seed=recipe.seed,
        ica=IcaSettings(fun=d.fun, max_iter=d.max_iter, tol=d.tol, engine=engine),
    )


def check_reuse(folder: str | Path, recorded: NetworkSettings | None, asked: NetworkSettings,
                option: str = "--out") -> None:
    """UserError (one line naming the first differing setting) unless ``asked`` matches the artifact's ``recorded``
    settings. ``option`` is the flag that named ``folder`` (--out of `networks`, --save-networks of `prune`)."""
    fresh = FRESH_FOLDER_HINT.get(option, "use a fresh folder")
    if recorded is None:
        raise UserError(f"networks in {folder} record no settings (made by an older fbn_prune), so they cannot be "
                        f"checked against this run: {fresh}.")
    diff = asked.difference(recorded)
    if diff is None:
        return
    name, old, new = diff
    how = SETTING_FLAGS.get(name, "the same settings").format(old)
    raise UserError(f"networks in {folder} were made with {name}={old}, this run asks {new}: {fresh} or pass {how}.")


@dataclass
class NetworksMeta:
    """Everything needed to interpret (and re-use) a networks artifact.

    ``runs``/``components`` are 0 when the artifact holds no ICA maps (a method that needs none);
    ``settings`` is None for artifacts written before settings were recorded.
    """

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
    settings: NetworkSettings | None = None

    def to_json(self) -> str:
        d = asdict(self)
        d["settings"] = self.settings.to_dict() if self.settings is not None else None
        return json.dumps(d, indent=1)


# networks.json: required key -> (accepted types, what it must be)
META_TYPES = {
    "model": ((str,), "a string"),
    "model_type": ((str,), "a string"),
    "widths": ((list,), "a list of FFN widths"),
    "runs": ((int,), "an integer"),
    "components": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
    "ica": ((dict,), "a mapping"),
    "calibration": ((dict,), "a mapping"),
}
REDO = "rerun `fbn-prune networks` into a fresh folder"


def write_meta(folder: str | Path, meta: NetworksMeta) -> None:
    """networks.json, written atomically."""
    path = Path(folder) / ARTIFACT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(meta.to_json())
    os.replace(tmp, path)


def read_json(path: Path, what: str, fix: str) -> object:
    """A JSON file's value; UserError naming the file and ``fix`` when it cannot be read or parsed."""
    if path.is_dir():
        raise UserError(f"{path} is a folder, not {what}: {fix}.")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {fix}.") from None
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or type(e).__name__}): {fix}.") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not text ({what} expected, the file is damaged): {fix}.") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({str(e).splitlines()[0]}): {fix}.") from None


def read_meta(folder: str | Path) -> NetworksMeta:
    """networks.json of ``folder``, validated (keys, types, widths); UserError naming the file otherwise."""
    path = Path(folder) / ARTIFACT_FILE
    data = read_json(path, "networks metadata", REDO)
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object (networks metadata expected): {REDO}.")
    for key, (types, what) in META_TYPES.items():
        if key not in data:
            raise UserError(f"{path} lacks the key {key!r}: the file is damaged or not a networks artifact; {REDO}.")
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            raise UserError(f"{path}: {key!r} must be {what}, found {_short(data[key])}: {REDO}.")
    widths = data["widths"]
    if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise UserError(f"{path}: 'widths' must be a non-empty list of positive integers: {REDO}.")
    if data["runs"] < 0 or data["components"] < 0 or (data["runs"] == 0) != (data["components"] == 0):
        raise UserError(f"{path}: runs={data['runs']} and components={data['components']} do not describe "
                        f"an artifact (both 0, or both positive): {REDO}.")
    for key in ("source", "tokens"):
        if key not in data["calibration"]:
            raise UserError(f"{path}: 'calibration' lacks {key!r}: {REDO}.")
    settings = data.get("settings")
    if settings is not None:
        try:
            settings = NetworkSettings.from_dict(settings)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: its 'settings' record is malformed ({type(e).__name__}: {e}): {REDO}.") from None
        if list(settings.widths) != widths:
            raise UserError(f"{path}: its settings record widths {_short(settings.widths)} but 'widths' says "
                            f"{_short(widths)}: the file was edited or damaged; {REDO}.")
    known = {f.name for f in fields(NetworksMeta)}
    timings = data.get("timings") if isinstance(data.get("timings"), dict) else {}
    values = {k: v for k, v in data.items() if k in known}
    return NetworksMeta(**{**values, "timings": timings, "settings": settings})


def read_settings(folder: str | Path) -> tuple[bool, NetworkSettings | None]:
    """(is there an artifact in ``folder``, its recorded settings or None). UserError when its networks.json is damaged."""
    if not (Path(folder) / ARTIFACT_FILE).exists():
        return False, None
    return True, read_meta(folder).settings


def load_tensors(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; UserError naming the file (and ``fix``) when it is missing or damaged."""
    if not path.is_file():
        raise UserError(f"{path} is missing or not a file: {fix}.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is damaged ({first}): {fix}.") from None


def checked(path: Path, tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], fix: str) -> torch.Tensor:
    """``tensors[key]`` when it has ``shape`` and only finite values; UserError naming ``path`` otherwise."""
    if key not in tensors:
        raise UserError(f"{path} holds no {key!r} tensor (found {', '.join(sorted(tensors)) or 'none'}): {fix}.")
    t = tensors[key]
    if tuple(t.shape) != tuple(shape):
        raise UserError(f"{path}: {key!r} has shape {tuple(t.shape)}, the artifact's settings need {tuple(shape)} "
                        f"(a foreign or damaged file): {fix}.")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise UserError(f"{path}: {key!r} holds {bad} NaN or infinite value(s): {fix}.")
    return t


class Networks:
    """A networks artifact on disk: metadata, statistics and per-(layer, run) spatial maps, validated when read."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.exists():
            raise UserError(f"{folder} does not exist; create a networks artifact with `fbn-prune networks MODEL --out {folder}`.")
        if not self.folder.is_dir():
            raise UserError(f"{folder} is a file, not a networks artifact folder; name the folder "
                            "`fbn-prune networks` (or prune --save-networks) wrote.")
        if not (self.folder / ARTIFACT_FILE).exists():
            raise UserError(f"{folder} is not a networks artifact (no {ARTIFACT_FILE}); create one with `fbn-prune networks`.")
        self.meta = read_meta(self.folder)

    @property
    def n_layers(self) -> int:
        return len(self.meta.widths)

    def map_path(self, layer: int, run: int) -> Path:
        return map_path(self.folder, layer, run)

    def _redo(self, path: Path) -> str:
        return f"delete {path.name} and rerun `fbn-prune networks` with the same settings and --out {self.folder} to redo it"

    def maps(self, layer: int) -> torch.Tensor:
        """All runs' maps of one layer: (runs, components, width) float32, shapes and values checked."""
        missing = [r for r in range(self.meta.runs) if not self.map_path(layer, r).is_file()]
        if missing:
            raise UserError(f"networks artifact {self.folder} is incomplete (layer {layer}, run {missing[0]}); rerun `fbn-prune networks` to resume.")
        shape = (self.meta.components, self.meta.widths[layer])
        out = []
        for r in range(self.meta.runs):
            path = self.map_path(layer, r)
            out.append(checked(path, load_tensors(path, self._redo(path)), "maps", shape, self._redo(path)).float())
        return torch.stack(out)

    def stats(self) -> dict[str, torch.Tensor]:
        """Per-channel statistics: ``count`` (1,) and ``sum.i``/``sumsq.i``/``sumabs.i`` (width_i,), checked."""
        path = self.folder / "stats.safetensors"
        if not path.is_file():
            raise UserError(f"networks artifact {self.folder} has no activation statistics ({path.name}), which the "
                            f"method asked needs: rerun `fbn-prune networks` with its settings and --out {self.folder} "
                            "to add them.")
        fix = self._redo(path)
        tensors = load_tensors(path, fix)
        out = {"count": checked(path, tensors, "count", tuple(tensors.get("count", torch.zeros(1)).shape), fix)}
        if out["count"].numel() != 1 or float(out["count"].reshape(-1)[0]) <= 0:
            raise UserError(f"{path}: 'count' must be one positive number: {fix}.")
        for i, w in enumerate(self.meta.widths):
            for name in ("sum", "sumsq", "sumabs"):
                key = f"{name}.{i}"
                if name == "sumabs" and key not in tensors:
                    continue
                out[key] = checked(path, tensors, key, (w,), fix)
        return out

    def gram(self, layer: int) -> torch.Tensor:
        """The layer's signal Gram matrix X^T X / T: (width, width) float64, shape and values checked."""
        path = gram_path(self.folder, layer)
        if not path.is_file():
            raise UserError(f"networks artifact {self.folder} has no Gram matrices for compensation; "
                            "rerun `fbn-prune networks` or use --compensate none.")
        w = self.meta.widths[layer]
        return checked(path, load_tensors(path, self._redo(path)), "gram", (w, w), self._redo(path)).double()

    def holdout(self) -> tuple[list[list[int]], list[list[int]]]:
        """(held-out documents, fallback documents) as token id lists, from holdout.json (checked)."""
        path = self.folder / HOLDOUT_FILE
        data = read_json(path, "held-out documents", REDO)
        ok = isinstance(data, dict) and all(
            isinstance(data.get(k), list) and all(isinstance(d, list) and all(isinstance(t, int) for t in d)
                                                  for d in data[k]) for k in ("holdout", "fallback"))
        if not ok:
            raise UserError(f"{path} must hold 'holdout' and 'fallback' lists of token id lists: {REDO}.")
        return data["holdout"], data["fallback"]

    def check_model(self, widths: list[int], digest: str | None, name: str) -> None:
        """UserError unless the model ``name`` (FFN ``widths``, content hash ``digest``) is the one the artifact was made
        from: a foreign model's artifact is never selected from."""
        if list(widths) != list(self.meta.widths):
            raise UserError(f"networks in {self.folder} were found in {self.meta.model} (FFN widths "
                            f"{_short(self.meta.widths)}), but {name} has widths {_short(widths)}: select with the "
                            f"model the networks were made from (--model), or make networks for {name}.")
        s = self.meta.settings
        if s is not None and s.model_hash and digest and digest != s.model_hash:
            raise UserError(f"networks in {self.folder} were made from {s.model} (sha256 {s.model_hash[:12]}), but "
                            f"{name} is another model (sha256 {digest[:12]}): select with the model the networks "
                            f"were made from (--model), or make networks for {name}.")


def map_path(folder: Path, layer: int, run: int) -> Path:
    return folder / "maps" / f"layer{layer:03d}_run{run:03d}.safetensors"


def gram_path(folder: Path, layer: int) -> Path:
    return Path(folder) / "gram" / f"layer{layer:03d}.safetensors"


def write_grams(index: CaptureIndex, folder: str | Path, progress: bool = True, device: str = "cpu") -> None:
    """Each layer's Gram matrix (width, width), float32, streamed from the capture one layer at a time
    (products on ``device``: cpu, cuda or cuda:N)."""
    from tqdm.auto import tqdm

    from fbn_prune.select.compensate import gram

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
    arguments of :func:`fbn_prune.decompose.ica.decompose` except the seed. ``jobs`` > 1 runs that
    many worker processes (see jobs.py); ``device`` is the ICA device (auto, cpu, cuda,
    cuda:N). Neither changes the result.
    """
    from tqdm.auto import tqdm

    from fbn_prune.decompose.jobs import resolve_ica_device, run_parallel

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
    write_meta(folder, meta)
    return Networks(folder)


def decompose_job(index: CaptureIndex, folder: str | Path, layer: int, run: int, components: int, seed: int,
                  ica: dict, device: str | None = None) -> None:
    """One job: ICA of run ``run``'s rows of layer ``layer``'s signal, saved atomically as its map file
    ({"maps": (components, width) float16}). On the CPU it runs on one thread (see jobs.py)."""
    from fbn_prune.decompose.ica import decompose
    from fbn_prune.decompose.jobs import one_thread

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


# recipe keys that shape a networks artifact (select takes them from the artifact, see select_recipe)
SHAPING_KEYS = ("seed", "calibration.source", "calibration.task", "calibration.field", "calibration.samples",
                "calibration.seq_len", "calibration.chat", "decomposition.runs", "decomposition.components",
                "decomposition.fun", "decomposition.max_iter", "decomposition.tol")


def _flat(data: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(data, dict):
        return {}
    out: dict[str, object] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def select_recipe(artifact: Networks, recipe: Recipe, recipe_file: str | None = None) -> Recipe:
    """``recipe`` (a Recipe) with the networks-shaping values (SHAPING_KEYS) of the artifact that ``select`` reads,
    so the checkpoint's provenance tells how its networks were made. UserError when ``recipe_file`` (the user's
    --recipe) sets one of them to another value than the artifact was made with."""
    own_path = artifact.folder / "recipe.yaml"
    try:
        own = _flat(Recipe.load(own_path).to_dict()) if own_path.is_file() else {}
    except UserError:
        own = {}
    s = artifact.meta.settings
    made = {k: own[k] for k in SHAPING_KEYS if k in own}
    made.update({"seed": artifact.meta.seed})
    if s is not None:
        made.update({"calibration.seq_len": s.seq_len, "decomposition.runs": s.runs,
                     "decomposition.components": s.components, "decomposition.fun": s.ica.fun,
                     "decomposition.max_iter": s.ica.max_iter, "decomposition.tol": s.ica.tol})
    if recipe_file:
        try:
            explicit = _flat(yaml.safe_load(Path(recipe_file).read_text()))
        except (OSError, yaml.YAMLError):
            explicit = {}
        for key, value in explicit.items():
            if key in made and made[key] != value and not (key.endswith(".tol") and _same_number(made[key], value)):
                raise UserError(f"networks in {artifact.folder} were made with {key.split('.')[-1]}={made[key]}, "
                                f"the recipe {recipe_file} asks {value}: select reads the networks as they were made; "
                                f"remove {key} from the recipe, or make new networks with it.")
    return recipe.override({k: v for k, v in made.items()})


def _same_number(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False
