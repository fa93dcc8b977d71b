"""What shaped a networks artifact (NetworkSettings), and whether a run may reuse it (check_reuse).

An artifact is reused (resumed, extended, selected from) only for the settings it records:
:func:`check_reuse` refuses any other with a one-line reason naming the first differing setting
and the flag that asks for the recorded value again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from fbn_prune._runtime.devices import resolve_ica_device
from fbn_prune.config.recipe import Recipe
from fbn_prune.errors import UserError
from fbn_prune.models.identity import hub_snapshot, model_hash

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
                return (name, short(a), short(b))
        if self.calibration_sha256 and recorded.calibration_sha256 and self.calibration_sha256 != recorded.calibration_sha256:
            return ("calibration", f"documents sha256 {recorded.calibration_sha256[:12]}",
                    f"sha256 {self.calibration_sha256[:12]}")
        for f in fields(IcaSettings):
            a, b = getattr(recorded.ica, f.name), getattr(self.ica, f.name)
            if a != b:
                return (f"ica {f.name}", short(a), short(b))
        return None


def _model_name(s: NetworkSettings) -> str:
    return s.model + (f"@{s.model_revision}" if s.model_revision else "")


def short(value) -> str:
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
        snap = hub_snapshot(source.spec)
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
