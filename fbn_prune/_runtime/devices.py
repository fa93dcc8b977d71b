"""Which device a job runs on: ``auto`` resolved to what this machine has, and a clear error for the rest."""

from __future__ import annotations

import torch

from fbn_prune.errors import UserError


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu.")
    return device
