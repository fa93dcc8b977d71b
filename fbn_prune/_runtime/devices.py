"""Which device a job runs on: ``auto`` resolved to what this machine has, and a clear error for the rest."""

from __future__ import annotations

import logging

import torch

from fbn_prune.errors import UserError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu.")
    return device


def resolve_ica_device(device: str) -> str:
    """``--ica-device``: ``auto`` -> ``cuda`` when CUDA is available, else ``cpu``; other values are checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--ica-device {device} asked for, but CUDA is not available here; use --ica-device cpu.")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise UserError(f"--ica-device {device}: only {torch.cuda.device_count()} CUDA device(s) here.")
    return device


def gram_device(ica_device: str) -> str:
    """Where the Gram matrices are made: where ICA goes (the first GPU when ICA uses every GPU)."""
    device = resolve_ica_device(ica_device)
    return "cuda:0" if device == "cuda" else device


def selection_device(ica_device: str) -> str:
    """Where fbn's elimination runs: where the Gram matrices were made, or on the CPU when that GPU is
    not here (an artifact made on a GPU machine, selected on another)."""
    try:
        return gram_device(ica_device)
    except UserError:
        log.info("selection on the CPU: the artifact's ICA device %s is not available here", ica_device)
        return "cpu"
