"""Resumable healing: the training state, saved beside the output folder so that a stopped run continues.

    distill() ──every few minutes, on Ctrl-C or SIGTERM, at the last step──> .NAME.heal-state/state.pt
    the same command again ──> a state with the same key ──> training resumes at its step

The state holds what the next step depends on: the trainable tensors (the LoRA adapters, or every weight
with ``--full``), the optimizer (AdamW's moments) and the schedule, the number of finished steps, the loss
record and the training seconds so far. The data order and the frozen weights are not saved: they follow
from the seed and the inputs, which the key pins down (the checkpoint's and the original's content, the
text, every setting). Resuming therefore gives the same weights as an unbroken run on the same device.

The file is replaced atomically (temporary file, then rename), so a run killed while saving keeps the
previous state. A state with another key (another checkpoint, original, text or setting) is not used; the
run starts over and replaces it. The healing job removes the folder once the healed checkpoint is in place.

Public API: :class:`StateStore`, :func:`restore`, :func:`state_folder`, :func:`state_key`, :func:`remove_state`,
:func:`stop_requests`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fbn_prune._io.atomic import replacing
from fbn_prune._io.targets import side_name

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
STATE_FORMAT = "fbn_prune.heal-state/1"
SAVE_EVERY_S = 300.0
"""Seconds of training between two saves (plus one on a stop request and one after the last step): a
stopped run loses at most this much work, and a save costs a few seconds per hundred MB of trainable state."""


def state_folder(target: Path) -> Path:
    """Where the training state of a run writing ``target`` lives: ``.NAME.heal-state`` beside it (not one
    of the ``.NAME.tmp-*`` siblings that a later run sweeps away)."""
    return target.parent / f".{side_name(target)}.heal-state"


def remove_state(folder: Path) -> None:
    """Remove a state folder (its healed checkpoint is in place)."""
    shutil.rmtree(folder, ignore_errors=True)


def state_key(*, checkpoint: str | None, base: str | None, text_sha256: str, settings) -> str:
    """The key a saved state must carry to be resumed: sha256 over the content hashes of the checkpoint
    being healed and of the original, the training text's hash and every healing setting."""
    payload = {"format": STATE_FORMAT, "checkpoint": checkpoint, "base": base, "text": text_sha256,
               "settings": asdict(settings)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Resumed:
    """A saved state, read back: ``step`` steps are done; ``trainable`` maps parameter names to tensors."""

    step: int
    trainable: dict[str, torch.Tensor]
    optimizer: dict
    schedule: dict
    losses: list[float]
    window: list[float]
    seconds: float


@dataclass(frozen=True)
class StateStore:
    """The state file of one healing run: ``folder``/state.pt, valid for ``key`` only."""

    folder: Path
    key: str
    every_s: float = SAVE_EVERY_S

    @property
    def file(self) -> Path:
        return self.folder / STATE_FILE

    def load(self) -> Resumed | None:
        """The saved state for this key, or None (none saved, another key, or an unreadable file)."""
        if not self.file.is_file():
            return None
        try:
            saved = torch.load(self.file, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged state is not resumed, whatever torch raises
            log.warning("ignoring the unreadable healing state %s (%s); starting over", self.file, e)
            return None
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT or saved.get("key") != self.key:
            log.warning("the healing state in %s is for another checkpoint, text or setting; starting over",
                        self.folder)
            return None
        return Resumed(step=int(saved["step"]), trainable=saved["trainable"], optimizer=saved["optimizer"],
                       schedule=saved["schedule"], losses=list(saved["losses"]), window=list(saved["window"]),
                       seconds=float(saved["seconds"]))

    def save(self, *, step: int, model, optimizer, schedule, losses: list[float], window: list[float],
             seconds: float) -> bool:
        """Replace the state file with the state after ``step`` finished steps. A state that cannot be
        written (a full disk, a file in the way) is a warning, not a failure: the training goes on, only
        a later resume is lost. Returns whether it was saved."""
        try:
            self._write(step=step, model=model, optimizer=optimizer, schedule=schedule, losses=losses,
                        window=window, seconds=seconds)
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
            log.warning("could not save the healing state in %s (%s); training goes on without it", self.folder,
                        str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            return False
        return True

    def _write(self, *, step: int, model, optimizer, schedule, losses: list[float], window: list[float],
               seconds: float) -> None:
        payload = {
            "format": STATE_FORMAT, "key": self.key, "step": step,
            "trainable": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "losses": list(losses), "window": list(window), "seconds": float(seconds),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        with replacing(self.file) as tmp:
            torch.save(payload, tmp)



def restore(model, optimizer, schedule, resumed: Resumed) -> None:
    """Put a saved state into a freshly built model (its trainable tensors), optimizer and schedule.

    Raises ValueError when the trainable parameters' names or shapes differ from the saved ones."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(resumed.trainable):
        raise ValueError("the saved healing state has other trainable parameters than this model")
    with torch.no_grad():
        for name, p in params.items():
            saved = resumed.trainable[name]
            if saved.shape != p.shape:
                raise ValueError(f"the saved healing state has {name} of shape {tuple(saved.shape)}, "
                                 f"the model {tuple(p.shape)}")
            p.copy_(saved)
    optimizer.load_state_dict(resumed.optimizer)
    schedule.load_state_dict(resumed.schedule)


class StopRequests:
    """Whether Ctrl-C or SIGTERM asked the run to stop after the step in progress."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequests]:
    """Within the block, the first Ctrl-C (SIGINT) or SIGTERM only sets ``requested``, so the loop can
    finish its step and save; a second one stops at once, as usual. Outside the main thread (where
    signal handlers cannot be set) nothing changes and ``requested`` stays False."""
    stop = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum, frame) -> None:
        if stop.requested:  # the second request: stop now
            raise KeyboardInterrupt()
        stop.signal = signum
        log.warning("stopping after this step to save the training state (press Ctrl-C again to stop now)")

    for s in previous:
        signal.signal(s, on_signal)
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
