"""Loading the two models of an evaluation: the base model and the pruned checkpoint.

The two models of an evaluation: the base a checkpoint was pruned from, the checkpoint itself, and a
check that both read text the same way (their tokenizers).

Public API: :func:`default_base`, :func:`load_checkpoint`, :func:`load_base`, :func:`release`,
:func:`tokenizer_differences`, :func:`check_tokenizers`.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fbn_prune._runtime.dtypes import DTYPES
from fbn_prune.config.layouts import layout_for
from fbn_prune.errors import UserError
from fbn_prune.export.provenance import PROVENANCE_FILE, read_provenance
from fbn_prune.models.sources import ModelSource, load_model

PROBE = "Pruning keeps 80% of the FFN: naïve café, 1234 tokens, <tags> & emojis 🙂.\n\tEnd."


def default_base(pruned: str | os.PathLike[str]) -> str:
    """The model a checkpoint was pruned from, as its fbn_prune.json records it (local path first)."""
    info = read_provenance(pruned)
    path = info.base_model_path
    if path and Path(path).is_dir():
        return str(path)
    return info.base_model_hub_id or info.base_model


def tokenizer_differences(a, b) -> list[str]:
    """Ways two tokenizers differ (vocabulary, special tokens, how a probe text is encoded); [] if none.

    A missing pad token counts as the eos token, as :func:`fbn_prune.models.sources.load_model` sets it.
    """
    problems: list[str] = []
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        differ = len(set(va.items()) ^ set(vb.items()))
        problems.append(f"vocabularies of {len(va):,} and {len(vb):,} tokens, {differ:,} entries differ")
    for attr in ("bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token"):
        x, y = getattr(a, attr, None), getattr(b, attr, None)
        if str(x) != str(y):
            problems.append(f"{attr} {x!r} vs {y!r}")
    pa, pb = (t.pad_token or t.eos_token for t in (a, b))
    if str(pa) != str(pb):
        problems.append(f"pad_token {pa!r} vs {pb!r}")
    sa = set(map(str, getattr(a, "all_special_tokens", []))) - {str(pa)}
    sb = set(map(str, getattr(b, "all_special_tokens", []))) - {str(pb)}
    if sa != sb:
        problems.append(f"special tokens {sorted(sa ^ sb)} in one only")
    if not problems and a(PROBE)["input_ids"] != b(PROBE)["input_ids"]:
        problems.append("the same text is encoded to different token ids")
    return problems


def check_tokenizers(base_path: str, pruned: Path, base_spec: str) -> None:
    """Raise UserError when the base model's and the checkpoint's tokenizers differ (or one cannot load)."""
    toks = []
    for path, what in ((base_path, f"base model {base_spec!r}"), (str(pruned), f"pruned checkpoint {pruned}")):
        try:
            toks.append(AutoTokenizer.from_pretrained(path))
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"could not load the tokenizer of the {what}: {first}") from e
    problems = tokenizer_differences(*toks)
    if problems:
        raise UserError(
            f"the tokenizers of the base model and the pruned checkpoint differ ({'; '.join(problems[:2])}); "
            "compare a pruned model with the model it was pruned from."
        )


def load_checkpoint(folder: str | os.PathLike[str], dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) of an fbn_prune checkpoint, in eval mode; the exact layout loads its own
    modeling file (``trust_remote_code``), as the model card says."""
    info = read_provenance(folder)
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=DTYPES[dtype], trust_remote_code=layout_for(info.layout).remote_code
        )
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"could not load the checkpoint {folder}: {first}") from e
    model.to(device).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def load_base(source: ModelSource, dtype: str, device: str):
    """(model, tokenizer) of the original model; an fbn_prune checkpoint as the base loads as one."""
    if source.local and (Path(source.path) / PROVENANCE_FILE).is_file():
        return load_checkpoint(source.path, dtype, device)
    return load_model(source, dtype, device)


def release() -> None:
    """Give the memory of a model the caller has just dropped back (before the next one loads)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
