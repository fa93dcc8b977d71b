"""Make a written checkpoint read the same under every loader: transformers 5.x and 4.x, and the tools on 4.x.

transformers 5 saves its own spellings only: ``rope_parameters`` (4.x reads ``rope_theta`` and
``rope_scaling``, and silently falls back to its default base 10000 without them), ``dtype``
(4.x: ``torch_dtype``), ``tokenizer_class: TokenizersBackend`` (no such class in 4.x), the chat
template only in ``chat_template.jinja``, and loader bookkeeping (``is_local``,
``local_files_only``). :func:`make_portable` rewrites a saved folder in place so that both
generations load it with the same numbers: both spellings side by side, the original model's
tokenizer files where it has them on disk, and no loader-internal keys.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

LOADER_KEYS = ("is_local", "local_files_only", "_commit_hash", "trust_remote_code", "_model_name_or_path")
"""Keys a loader adds to a config or tokenizer_config at load time (``_model_name_or_path``: the GGUF
loader's copy of the file's ``general.name``); never meaningful in a saved file."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "chat_template.jinja",
                   "chat_template.json")
"""Tokenizer files copied from the original model folder when it has them."""

V5_ONLY_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}
"""transformers 5 tokenizer classes -> the class transformers 4 loads from the same tokenizer.json."""


def portable_config(cfg: dict) -> dict:
    """A config.json dict that transformers 4.x and 5.x read alike (a new dict; ``cfg`` is untouched).

    Adds the 4.x spellings next to the 5.x ones (``rope_theta``/``rope_scaling`` and
    ``partial_rotary_factor``, GPT-NeoX's ``rotary_pct``/``rotary_emb_base`` from
    ``rope_parameters``; ``torch_dtype`` from ``dtype``) and drops loader-internal keys, including a
    ``_name_or_path`` that is a local path (a GGUF conversion or cache folder) rather than a Hub id.
    """
    out = {k: v for k, v in cfg.items() if k not in LOADER_KEYS}
    name = out.get("_name_or_path")
    if isinstance(name, str) and _is_local_path(name):
        del out["_name_or_path"]
    if out.get("dtype") is not None and out.get("torch_dtype") is None:
        out["torch_dtype"] = out["dtype"]
    rope = out.get("rope_parameters")
    if isinstance(rope, dict) and isinstance(rope.get("full_attention"), dict):  # per layer type (Gemma 3 style)
        _add_rope_legacy(out, rope["full_attention"])
        if isinstance(rope.get("sliding_attention"), dict) and "rope_theta" in rope["sliding_attention"]:
            out.setdefault("rope_local_base_freq", rope["sliding_attention"]["rope_theta"])
    elif isinstance(rope, dict):
        _add_rope_legacy(out, rope)
    return out


def _add_rope_legacy(out: dict, rope: dict) -> None:
    """4.x's flat rope keys from one 5.x ``rope_parameters`` dict."""
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default" and not out.get("rope_scaling"):
        out["rope_scaling"] = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
    if "partial_rotary_factor" in rope:
        out.setdefault("partial_rotary_factor", rope["partial_rotary_factor"])
    if out.get("model_type") in ("gpt_neox", "fbn_gpt_neox"):  # 4.x GPTNeoXConfig: rotary_pct, rotary_emb_base
        if "partial_rotary_factor" in rope:
            out["rotary_pct"] = rope["partial_rotary_factor"]
        if "rope_theta" in rope:
            out["rotary_emb_base"] = rope["rope_theta"]


def _is_local_path(name: str) -> bool:
    """True for a filesystem path (absolute, relative with ./ or ~, or deeper than org/name)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def portable_tokenizer_config(tcfg: dict, chat_template: str | None) -> dict:
    """tokenizer_config.json readable by 4.x and 5.x: a class both know, the chat template inline, no loader keys."""
    out = {k: v for k, v in tcfg.items() if k not in LOADER_KEYS}
    name = out.get("name_or_path")
    if isinstance(name, str) and _is_local_path(name):
        del out["name_or_path"]
    cls = out.get("tokenizer_class")
    if cls in V5_ONLY_TOKENIZER_CLASSES:
        out["tokenizer_class"] = V5_ONLY_TOKENIZER_CLASSES[cls]
    if chat_template and not out.get("chat_template"):
        out["chat_template"] = chat_template
    return out


def original_tokenizer_folder(tokenizer) -> Path | None:
    """The folder the tokenizer was loaded from, when it is on disk and holds a tokenizer file."""
    name = getattr(tokenizer, "name_or_path", None)
    if not name:
        return None
    folder = Path(name).expanduser()
    has = folder.is_dir() and any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json"))
    return folder if has else None


def make_portable(folder: Path, tokenizer=None) -> None:
    """Rewrite the checkpoint in ``folder`` (already saved by transformers) for every loader, in place.

    The original model's tokenizer files (see :func:`original_tokenizer_folder`) replace the
    ones ``save_pretrained`` wrote, so the tokenizer is byte for byte what the original had;
    then config.json and tokenizer_config.json get both spellings (see :func:`portable_config`,
    :func:`portable_tokenizer_config`).
    """
    source = original_tokenizer_folder(tokenizer) if tokenizer is not None else None
    if source is not None and source.resolve() != folder.resolve():
        copied = [f for f in TOKENIZER_FILES if (source / f).is_file()]
        for f in copied:
            shutil.copyfile(source / f, folder / f)
        log.info("tokenizer files copied from %s: %s", source, ", ".join(copied))
    cfg_path = folder / "config.json"
    if cfg_path.is_file():
        _rewrite_json(cfg_path, portable_config)
    tok_path = folder / "tokenizer_config.json"
    if tok_path.is_file():
        jinja = folder / "chat_template.jinja"
        template = jinja.read_text() if jinja.is_file() else None
        _rewrite_json(tok_path, lambda d: portable_tokenizer_config(d, template))


def _rewrite_json(path: Path, change: Callable[[dict], dict]) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
