"""A networks artifact on disk: its layout, metadata record, and validated reading (:class:`Networks`).

Artifact folder layout (no pickles)::

    networks.json                      metadata: model, widths, runs, components, ICA settings,
                                       calibration source and hash, timings, and ``settings``: the
                                       :class:`~fbn_prune.decompose.settings.NetworkSettings` record of
                                       everything that shaped it
    holdout.json                       held-out calibration documents (verification)
    recipe.yaml                        the recipe that made it
    stats.safetensors                  per-channel activation statistics (see capture/activations.py)
    maps/layer{i:03d}_run{r:03d}.safetensors   {"maps": (components, width_i) float16 z-scores}
    gram/layer{i:03d}.safetensors      {"gram": (width_i, width_i) float32}: X^T X / T of the signal
                                       (least-squares compensation, see select/compensate.py)

The maps are written by decompose/maps.py (one file per (layer, run), atomically, so an interrupted
decomposition resumes), the Gram matrices by decompose/gram.py. Selection reads only this folder
(and the model's weights for weight-aware scores), so budgets can be changed without new ICA.

Everything read back is validated (:class:`Networks`): the metadata's keys and types, every tensor's
shape against the recorded widths and components, finite values; a damaged file is a UserError naming
the file. :func:`select_recipe` gives ``select`` the recipe values the artifact was made with.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from fbn_prune.config.recipe import Recipe
from fbn_prune.decompose.settings import NetworkSettings, short
from fbn_prune.errors import UserError

ARTIFACT_FILE = "networks.json"
HOLDOUT_FILE = "holdout.json"


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
            raise UserError(f"{path}: {key!r} must be {what}, found {short(data[key])}: {REDO}.")
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
            raise UserError(f"{path}: its settings record widths {short(settings.widths)} but 'widths' says "
                            f"{short(widths)}: the file was edited or damaged; {REDO}.")
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
                            f"{short(self.meta.widths)}), but {name} has widths {short(widths)}: select with the "
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
