"""Reload an exported checkpoint from disk and check it reproduces the masked original.

The reference is the original model with every dropped channel's signal forced to zero
(a forward pre-hook on each down projection): mathematically the pruned model. The
exported folder is loaded the way a user loads it (plain from_pretrained; the exact
layout with trust_remote_code=True) and its logits are compared on held-out tokens.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager

import torch
from transformers import AutoModelForCausalLM

from fbn_prune.config.layouts import layout_for
from fbn_prune.models.arch import Adapter
from fbn_prune.models.placement import input_device
from fbn_prune.select.compensate import removed

log = logging.getLogger(__name__)

# max |difference| allowed, relative to the largest |logit| of the reference
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8, torch.bfloat16: 3e-2, torch.float16: 5e-3}


@contextmanager
def masked(model, adapter: Adapter, kept: list[torch.Tensor], predictors: list[torch.Tensor] | None = None):
    """Within the block, ``model`` behaves as if only ``kept`` channels existed (input untouched after).

    With ``predictors`` (per layer B of shape (|K|, |R|), see compensate.py) the removed
    channels' signals are replaced by their prediction x_K B instead of zero: the exact
    function of a compensated pruned model. A predictor may also be a pair (None, c) with c
    (|R|,): the removed channels take the constant c (FLAP's bias compensation).
    """
    handles = []
    try:
        for i, keep in enumerate(kept):
            down = adapter.down_module(model, i)
            width = adapter.channel_width(model, i)
            keep = keep.cpu()
            mask = torch.zeros(width, dtype=down.weight.dtype)
            mask[keep] = 1
            if predictors is None:
                on = _on_device(mask=mask)

                def hook(_m, args, on=on):
                    return (args[0] * on(args[0].device)["mask"],) + args[1:]
            elif isinstance(predictors[i], tuple):
                on = _on_device(mask=mask, rem=removed(keep, width), c=predictors[i][1].to(mask.dtype))

                def hook(_m, args, on=on):
                    t = on(args[0].device)
                    x = args[0] * t["mask"]
                    x[..., t["rem"]] = t["c"]
                    return (x,) + args[1:]
            else:
                on = _on_device(mask=mask, keep=keep, rem=removed(keep, width), b=predictors[i].to(mask.dtype))

                def hook(_m, args, on=on):
                    t = on(args[0].device)
                    x = args[0] * t["mask"]
                    x[..., t["rem"]] = args[0][..., t["keep"]] @ t["b"]
                    return (x,) + args[1:]
            handles.append(down.register_forward_pre_hook(hook))
        yield model
    finally:
        for h in handles:
            h.remove()


def _on_device(**tensors: torch.Tensor):
    """device -> ``tensors`` moved there (once per device): a layer's input sits wherever accelerate
    placed the layer (a GPU, or the execution device of an offloaded layer)."""
    cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    def get(device: torch.device) -> dict[str, torch.Tensor]:
        if device not in cache:
            cache[device] = {k: v.to(device) for k, v in tensors.items()}
        return cache[device]

    return get


@torch.inference_mode()
def logits(model, docs: list[list[int]]) -> torch.Tensor:
    """Concatenated next-token logits of each document, run one at a time: (total tokens, vocab) float32."""
    device = input_device(model)
    return torch.cat([model(input_ids=torch.tensor([d], device=device)).logits[0].float().cpu() for d in docs])


def held_out_tokens(holdout: list[list[int]], fallback: list[list[int]], n_tokens: int) -> list[list[int]]:
    """Up to ``n_tokens`` tokens of held-out documents (calibration documents if none are held out)."""
    docs, total = [], 0
    for d in holdout or fallback:
        if total >= n_tokens:
            break
        d = d[: n_tokens - total]
        if len(d) >= 2:
            docs.append(d)
            total += len(d)
    return docs


def compare_logits(reference: torch.Tensor, candidate: torch.Tensor, dtype: torch.dtype) -> dict:
    """Agreement figures of two logit tensors of equal shape; ``ok`` applies the dtype's tolerance."""
    diff = (reference - candidate).abs().max().item()
    scale = max(reference.abs().max().item(), 1.0)
    rel = diff / scale
    agree = (reference.argmax(-1) == candidate.argmax(-1)).float().mean().item()
    tol = TOLERANCE.get(dtype, 1e-4)
    return {"max_abs_diff": diff, "relative_diff": rel, "tolerance": tol, "top1_agreement": agree,
            "tokens": int(reference.shape[0]), "ok": rel <= tol}


def rounded_copy(model, dtype: torch.dtype):
    """``model`` with its weights rounded to ``dtype`` and kept in their working dtype (a copy; ``model``
    itself when that is already its dtype). Buffers such as RoPE frequencies stay exact."""
    if next(model.parameters()).dtype == dtype:
        return model
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.to(dtype))
    return rounded


def verify(original, adapter: Adapter, kept: list[torch.Tensor], folder: str, layout: str,
           docs: list[list[int]], pruned=None, saved_dtype: torch.dtype | None = None,
           predictors: list[torch.Tensor] | None = None, load: dict | None = None) -> dict:
    """Load ``folder`` like a user would and compare its logits with the masked original on ``docs``
    (removed channels predicted by ``predictors`` when the export was compensated).

    ``load``: from_pretrained placement arguments (``device_map``, ``max_memory``) for a model
    spread over several devices; without them the checkpoint goes to the original's input device.

    When the weights were saved in a lower precision than the working one, rounding alone
    moves the logits, so the check is split in two exact ones: the in-memory ``pruned``
    model against the masked original (surgery), then the reloaded folder against
    ``pruned`` with its weights rounded to the saved dtype (serialization), both computed in
    the working dtype.
    """
    working = next(original.parameters()).dtype
    saved_dtype = saved_dtype or working
    device = input_device(original)
    with masked(original, adapter, kept, predictors):
        reference = logits(original, docs)
    # always computed in the working dtype: weights saved in lower precision are upcast exactly
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=working, trust_remote_code=layout_for(layout).remote_code,
                                                  **(load or {}))
    if not load:
        loaded.to(device)
    loaded.eval()
    if saved_dtype == working:
        result = compare_logits(reference, logits(loaded, docs), working)
    else:
        surgery = compare_logits(reference, logits(pruned, docs), working)
        rounded = rounded_copy(pruned, saved_dtype)  # the saved weights, in memory
        reload = compare_logits(logits(rounded, docs), logits(loaded, docs), working)
        del rounded
        result = {**reload, "surgery": surgery, "ok": surgery["ok"] and reload["ok"]}
    del loaded
    log.info("verification: max |diff| %.3g (relative %.3g, tolerance %.0e), top-1 agreement %.4f",
             result["max_abs_diff"], result["relative_diff"], result["tolerance"], result["top1_agreement"])
    return result
