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

from .arch import Adapter

log = logging.getLogger(__name__)

# max |difference| allowed, relative to the largest |logit| of the reference
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8, torch.bfloat16: 3e-2, torch.float16: 5e-3}


@contextmanager
def masked(model, adapter: Adapter, kept: list[torch.Tensor], predictors: list[torch.Tensor] | None = None):
    """Within the block, ``model`` behaves as if only ``kept`` channels existed (input untouched after).

    With ``predictors`` (per layer B of shape (|K|, |R|), see compensate.py) the removed
    channels' signals are replaced by their prediction x_K B instead of zero: the exact
    function of a compensated pruned model.
    """
    from .compensate import removed

    handles = []
    try:
        for i, keep in enumerate(kept):
            down = adapter.down_module(model, i)
            width = adapter.channel_width(model, i)
            mask = torch.zeros(width, dtype=down.weight.dtype, device=down.weight.device)
            keep = keep.to(mask.device)
            mask[keep] = 1
            if predictors is None:
                hook = lambda _m, args, mask=mask: (args[0] * mask,) + args[1:]  # noqa: E731
            else:
                rem, b = removed(keep.cpu(), width).to(mask.device), predictors[i].to(mask.device, mask.dtype)

                def hook(_m, args, mask=mask, keep=keep, rem=rem, b=b):
                    x = args[0] * mask
                    x[..., rem] = args[0][..., keep] @ b
                    return (x,) + args[1:]
            handles.append(down.register_forward_pre_hook(hook))
        yield model
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def logits(model, docs: list[list[int]]) -> torch.Tensor:
    """Concatenated next-token logits of each document, run one at a time: (total tokens, vocab) float32."""
    device = next(model.parameters()).device
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


def compare(reference: torch.Tensor, candidate: torch.Tensor, dtype: torch.dtype) -> dict:
    """Agreement figures of two logit tensors of equal shape; ``ok`` applies the dtype's tolerance."""
    diff = (reference - candidate).abs().max().item()
    scale = max(reference.abs().max().item(), 1.0)
    rel = diff / scale
    agree = (reference.argmax(-1) == candidate.argmax(-1)).float().mean().item()
    tol = TOLERANCE.get(dtype, 1e-4)
    return {"max_abs_diff": diff, "relative_diff": rel, "tolerance": tol, "top1_agreement": agree,
            "tokens": int(reference.shape[0]), "ok": rel <= tol}


def verify(original, adapter: Adapter, kept: list[torch.Tensor], folder: str, layout: str,
           docs: list[list[int]], pruned=None, saved_dtype: torch.dtype | None = None,
           predictors: list[torch.Tensor] | None = None) -> dict:
    """Load ``folder`` like a user would and compare its logits with the masked original on ``docs``
    (removed channels predicted by ``predictors`` when the export was compensated).

    When the weights were saved in a lower precision than the working one, rounding alone
    moves the logits, so the check is split in two exact ones: the in-memory ``pruned``
    model against the masked original (surgery), then the reloaded folder against
    ``pruned`` with its weights rounded to the saved dtype (serialization), both computed in
    the working dtype.
    """
    from transformers import AutoModelForCausalLM

    working = next(original.parameters()).dtype
    saved_dtype = saved_dtype or working
    device = next(original.parameters()).device
    with masked(original, adapter, kept, predictors):
        reference = logits(original, docs)
    # always computed in the working dtype: weights saved in lower precision are upcast exactly
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=working, trust_remote_code=(layout == "exact"))
    loaded.to(device).eval()
    if saved_dtype == working:
        result = compare(reference, logits(loaded, docs), working)
    else:
        surgery = compare(reference, logits(pruned, docs), working)
        rounded = copy.deepcopy(pruned)  # the saved weights, in memory (buffers such as RoPE stay exact)
        with torch.no_grad():
            for p in rounded.parameters():
                p.copy_(p.to(saved_dtype))
        reload = compare(logits(rounded, docs), logits(loaded, docs), working)
        del rounded
        result = {**reload, "surgery": surgery, "ok": surgery["ok"] and reload["ok"]}
    del loaded
    log.info("verification: max |diff| %.3g (relative %.3g, tolerance %.0e), top-1 agreement %.4f",
             result["max_abs_diff"], result["relative_diff"], result["tolerance"], result["top1_agreement"])
    return result
