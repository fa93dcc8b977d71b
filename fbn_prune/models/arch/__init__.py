"""Architecture adapters. Adding an architecture = adding one small file and listing it here."""

from __future__ import annotations

from fbn_prune.errors import UserError
from fbn_prune.models.arch.base import Adapter
from fbn_prune.models.arch.gpt2 import GPT2
from fbn_prune.models.arch.gpt_neox import GPT_NEOX
from fbn_prune.models.arch.llama import LLAMA
from fbn_prune.models.arch.opt import OPT
from fbn_prune.models.arch.phi3 import PHI3

ADAPTERS: tuple[Adapter, ...] = (LLAMA, PHI3, GPT2, OPT, GPT_NEOX)
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for a in ADAPTERS for t in a.model_types)


def adapter_for(config) -> Adapter:
    """The adapter for ``config.model_type``; a UserError naming the supported types otherwise."""
    model_type = getattr(config, "model_type", None)
    # checkpoints written by our exact layout carry the base type under fbn_base_model_type
    model_type = getattr(config, "fbn_base_model_type", None) or model_type
    for a in ADAPTERS:
        if model_type in a.model_types:
            return a
    raise UserError(
        f"model type {model_type!r} is not supported; supported types: {', '.join(SUPPORTED_MODEL_TYPES)}."
    )


__all__ = ["Adapter", "ADAPTERS", "SUPPORTED_MODEL_TYPES", "adapter_for"]
