"""What fbn_prune asks the Hugging Face Hub besides an upload: offline mode, the token, the base licence.

What fbn_prune asks the Hugging Face Hub (or its local cache) outside an upload: whether the Hub may be
reached at all (:func:`offline`), where a token would come from (:func:`token_source`, never the token
itself), and the base model's licence for a model card (:func:`base_license`, :func:`card_license`).
The upload itself is :mod:`fbn_prune.ship.upload`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import huggingface_hub
from huggingface_hub import ModelCard, constants

from fbn_prune.export.provenance import Provenance

log = logging.getLogger(__name__)

def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or now.strip().lower() in ("1", "on", "yes", "true")



def token_source() -> str | None:
    """Where the token would come from ("HF_TOKEN", "huggingface_hub login"), never the token itself."""
    if os.environ.get("HF_TOKEN"):
        return "HF_TOKEN"
    try:
        return "huggingface_hub login" if huggingface_hub.get_token() else None
    except Exception:
        return None


# The licence of base models fbn_prune ships recipes for, as their Hub cards state it. Only a fallback:
# the licence recorded at pruning time (a local folder's card) or the base model's card in the local
# Hugging Face cache come first, and `fbn-prune push` asks the Hub when neither has one.
KNOWN_LICENSES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0",
    "HuggingFaceTB/SmolLM2-135M": "apache-2.0",
    "lmsys/vicuna-7b-v1.5": "llama2",
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1",
    "meta-llama/Llama-3.1-8B": "llama3.1",
    "Qwen/Qwen2.5-7B-Instruct": "apache-2.0",
    "Qwen/Qwen2.5-7B": "apache-2.0",
    "mistralai/Mistral-7B-Instruct-v0.3": "apache-2.0",
    "mistralai/Mistral-7B-v0.3": "apache-2.0",
}


def base_license(hub_id: str | None, online: bool = False, endpoint: str | None = None,
                 token: str | None = None) -> str | None:
    """The licence of the base model ``hub_id``: its card in the local Hugging Face cache, then (with
    ``online``, unless HF_HUB_OFFLINE) the Hub's model info, then :data:`KNOWN_LICENSES`. None when
    nothing says."""
    if not hub_id:
        return None
    try:
        cached = huggingface_hub.try_to_load_from_cache(hub_id, "README.md")
        if isinstance(cached, str) and Path(cached).is_file():
            found = ModelCard.load(cached, ignore_metadata_errors=True).data.to_dict().get("license")
            if isinstance(found, str) and found:
                return found
    except Exception as e:  # a cache we cannot read says nothing
        log.debug("no cached card for %s: %s", hub_id, e)
    if online and not offline():
        try:
            info = huggingface_hub.HfApi(endpoint=endpoint, token=token).model_info(hub_id, expand=["cardData"])
            data = info.card_data.to_dict() if info.card_data is not None else {}
            if isinstance(data.get("license"), str) and data["license"]:
                return data["license"]
        except Exception as e:  # gated, private, missing or offline: fall back to the table
            log.debug("could not read the licence of %s from the Hub: %s", hub_id, type(e).__name__)
    return KNOWN_LICENSES.get(hub_id)


def card_license(info: Provenance) -> str | None:
    """The licence a checkpoint's card names: the one recorded at pruning time, else the base model's
    (:func:`base_license` offline: the local Hugging Face cache, then :data:`KNOWN_LICENSES`)."""
    return info.license or base_license(info.base_model_hub_id)
