"""The tokenizer of a GGUF file as llama.cpp reads it: pre-tokenizer, tokens, merges, special tokens.

The tokenizer of a GGUF file as llama.cpp reads it, written from the checkpoint's ``tokenizer.json`` the way
llama.cpp's ``convert_hf_to_gguf.py`` does: byte-level BPE as ``gpt2`` (tokens, token types, merges, and the
pre-tokenizer name llama.cpp knows it by: :func:`pre_tokenizer_name`) or, for a byte-fallback BPE (Llama 2,
Mistral v0.1-0.3), as ``llama`` through gguf's ``LlamaHfVocab`` with scores that keep the merge order; special
token ids, whether BOS/EOS are added, and the chat template come from the tokenizer files.

Imports the optional ``gguf`` package: only :mod:`fbn_prune.export.gguf` imports this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import gguf
from transformers import AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from fbn_prune.errors import UserError

log = logging.getLogger(__name__)

# Pre-tokenizers llama.cpp recognises by the hash of the token ids of a fixed probe text (the
# table convert_hf_to_gguf.py generates), restricted to the tokenizers of the families above.
_PRE_PROBE = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
              "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
              "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
              "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
_PRE_BY_HASH = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2 / Qwen2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
}
# The same by structure, for tokenizers with their own vocabulary: the splitting regex before a
# byte-level step (llama.cpp implements each name with that regex).
_PRE_BY_REGEX = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
}


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json")


def tokenizer_folder(folder: Path, config: dict, into: Path) -> Path:
    """The tokenizer files of the model ``folder`` (whose config.json is ``config``) in ``into``, next to a
    config.json holding only the special token ids and, for a stock architecture, its ``model_type``.

    Tokenizer readers (transformers' AutoTokenizer, gguf's LlamaHfVocab and SpecialVocab) also read
    config.json; the exact and deci layouts' names remote code (``auto_map``), which would make them ask
    for trust_remote_code. The tokenizer never needs that code. The stock ``model_type`` stays because
    transformers 5 picks the tokenizer class by it, and a class may bring its own pre-tokenizer
    (``qwen2`` splits digits one by one whatever tokenizer.json says): the GGUF file must split text as
    ``AutoTokenizer.from_pretrained(folder)`` does.
    """
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, into / name)
    stub = {k: v for k, v in config.items() if k.endswith("_token_id") and v is not None}
    if config.get("model_type") in CONFIG_MAPPING and not config.get("auto_map"):
        stub["model_type"] = config["model_type"]
    (into / "config.json").write_text(json.dumps(stub))
    return into


def write_vocab(w: gguf.GGUFWriter, folder: Path, n_vocab: int) -> None:
    """Tokenizer, special tokens and chat template (as the converter's _set_vocab_gpt2 / _set_vocab_llama_hf)."""
    tj_path = folder / "tokenizer.json"
    if not tj_path.is_file():
        raise UserError(f"{folder} has no tokenizer.json; GGUF export needs the tokenizer.")
    tj = json.loads(tj_path.read_text())
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise UserError(f"tokenizer type {model.get('type')!r} cannot be written to GGUF here (BPE only).")
    tok = AutoTokenizer.from_pretrained(folder)
    if model.get("byte_fallback"):
        vocab = gguf.LlamaHfVocab(folder)
        ranks = _merge_scores(model.get("merges") or [])
        tokens, scores, types = [], [], []
        for text, _, kind in vocab.all_tokens():
            tokens.append(text)
            scores.append(ranks.get(text.decode("utf-8", errors="replace"), -1000.0))
            types.append(kind)
        for i in range(len(tokens), n_vocab):
            tokens.append(f"[PAD{i}]".encode())
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        special = gguf.SpecialVocab(folder, n_vocab=len(tokens))
    else:
        tokens, types = _bpe_tokens(tok, n_vocab)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre_tokenizer_name(tok, json.loads(tok.backend_tokenizer.to_str())))
        w.add_token_list(tokens)
        w.add_token_types(types)
        special = gguf.SpecialVocab(folder, load_merges=True)
    # whether BOS/EOS are prepended/appended: what the transformers tokenizer really does
    ids = tok("a")["input_ids"]
    special.add_special_token["bos"] = bool(tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id)
    special.add_special_token["eos"] = bool(tok.eos_token_id is not None and ids and ids[-1] == tok.eos_token_id)
    if special.chat_template is None and getattr(tok, "chat_template", None):
        special.chat_template = tok.chat_template
    special.add_to_gguf(w, quiet=True)


def _merge_scores(merges: list) -> dict[str, float]:
    """SentencePiece-style scores from BPE merges: the token made by merge k scores -k.

    llama.cpp's "llama" tokenizer merges the adjacent pair whose result scores highest, so these
    scores reproduce the merge order of tokenizer.json (gguf's LlamaHfVocab leaves every score at
    -1000, which loses it when the checkpoint has no tokenizer.model).
    """
    scores: dict[str, float] = {}
    for k, m in enumerate(merges):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        scores.setdefault(a + b, -float(k))
    return scores


def _bpe_tokens(tok, n_vocab: int) -> tuple[list[str], list[int]]:
    """Token strings and types for ids 0..n_vocab-1 (unused ids padded), as the converter's get_vocab_base."""
    vocab = tok.get_vocab()
    if vocab and max(vocab.values()) >= n_vocab:
        raise UserError(f"the tokenizer has ids up to {max(vocab.values())} but the model only {n_vocab} embeddings.")
    reverse = {i: t for t, i in vocab.items()}
    added = tok.get_added_vocab()
    decoder = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        text = reverse[i]
        if text in added:
            special = decoder[i].special if i in decoder else False
            looks = text.startswith("<|") and text.endswith("|>")
            types.append(gguf.TokenType.CONTROL if special or looks else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(text)
    return tokens, types


def pre_tokenizer_name(tok, tokenizer_json: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenization (``tokenizer.ggml.pre``). ``tokenizer_json``: the
    tokenizer as loaded (its backend's JSON), which may differ from the file (see :func:`tokenizer_folder`).

    Known tokenizers by the converter's hash of a probe text's token ids; else by structure: a plain
    GPT-2 byte-level pre-tokenizer is ``gpt-2``, a known splitting regex before a byte-level step is
    its model's name (``qwen2``, ``llama-bpe``); anything else gets ``default`` with a warning.
    """
    digest = hashlib.sha256(str(tok.encode(_PRE_PROBE)).encode()).hexdigest()
    if digest in _PRE_BY_HASH:
        return _PRE_BY_HASH[digest]
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers") or []
    if (pre.get("type") == "Sequence" and len(steps) == 2 and steps[0].get("type") == "Split"
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
        name = _PRE_BY_REGEX.get((steps[0].get("pattern") or {}).get("Regex"))
        if name:
            return name
    log.warning("pre-tokenizer not recognised (hash %s): written as 'default'; llama.cpp may split text "
                "differently from transformers", digest[:16])
    return "default"
