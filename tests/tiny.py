"""Tiny random models, an offline tokenizer and calibration text for tests (no network).

Import from tests as ``from tiny import ...`` (pytest puts ``tests/`` on ``sys.path``)
or ``from tests.tiny import ...`` from the repository root.

API:
    ARCHS                              model_types every test should cover
    tiny_config(arch, **overrides)     a transformers config: hidden 64, 4 layers, FFN 96, vocab 512
    tiny_model(arch, seed=0, **ov)     AutoModelForCausalLM.from_config(...), eval, float32, std-0.2 weights
    tiny_tokenizer()                   byte-level BPE (vocab 512), trained offline, cached per process
    save_tiny(arch, path, seed=0, **ov) model + tokenizer written to ``path``; returns ``path``
    sample_texts(n, seed)              n deterministic English-like paragraphs of ~40-120 words
"""

from __future__ import annotations

import functools
import os
import random

import torch
from torch import nn

ARCHS: list[str] = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo2", "phi3", "gpt2", "opt", "gpt_neox"]

HIDDEN = 64
FFN = 96  # deliberately not a power of two
LAYERS = 4
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
VOCAB = 512
MAX_POS = 256
SPECIAL = "<|endoftext|>"
SPECIAL_ID = 0  # the trainer puts special tokens first

# model_types whose decoder takes separate gate/up/down projections and a GQA attention
_GATED = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "phi3"}
# configs that define an explicit head_dim field (others derive it from hidden/heads)
_HEAD_DIM = {"llama", "mistral", "qwen3", "gemma", "gemma2"}
_NO_GQA = {"olmo"}  # OlmoConfig has num_key_value_heads, but keep it plain MHA to mirror OLMo-1


def tiny_config(arch: str, **overrides):
    """A tiny config for ``arch`` (a ``model_type``). Tied embeddings stay at the family default.

    ``overrides`` are passed to the config constructor last, e.g. ``mlp_bias=True`` (llama),
    ``enable_bias=False`` (opt), ``num_hidden_layers=2``.
    """
    from transformers import AutoConfig

    ids = dict(bos_token_id=SPECIAL_ID, eos_token_id=SPECIAL_ID, pad_token_id=SPECIAL_ID)
    if arch in _GATED:
        kw = dict(
            hidden_size=HIDDEN,
            intermediate_size=FFN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=HEADS if arch in _NO_GQA else KV_HEADS,
            max_position_embeddings=MAX_POS,
            vocab_size=VOCAB,
            **ids,
        )
        if arch in _HEAD_DIM:
            kw["head_dim"] = HEAD_DIM
        if arch == "gemma2":
            kw.update(query_pre_attn_scalar=HEAD_DIM, sliding_window=32)
        if arch == "phi3":
            kw["original_max_position_embeddings"] = MAX_POS
    elif arch == "gpt2":
        kw = dict(
            n_embd=HIDDEN,
            n_inner=FFN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=MAX_POS,
            vocab_size=VOCAB,
            bos_token_id=SPECIAL_ID,
            eos_token_id=SPECIAL_ID,
        )
    elif arch == "opt":
        kw = dict(
            hidden_size=HIDDEN,
            ffn_dim=FFN,
            word_embed_proj_dim=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            max_position_embeddings=MAX_POS,
            vocab_size=VOCAB,
            **ids,
        )
    elif arch == "gpt_neox":
        kw = dict(
            hidden_size=HIDDEN,
            intermediate_size=FFN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            max_position_embeddings=MAX_POS,
            vocab_size=VOCAB,
            bos_token_id=SPECIAL_ID,
            eos_token_id=SPECIAL_ID,
        )
    else:  # anything else (bert, t5, ...): a best-effort small config, e.g. for "unsupported" tests
        kw = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, vocab_size=VOCAB)
    kw.update(overrides)
    return AutoConfig.for_model(arch, **kw)


def _reinit(model: nn.Module, seed: int, std: float = 0.2) -> None:
    """Redraw every Linear/Conv1D/Embedding weight and bias from N(0, std) with a private generator."""
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        for _, mod in model.named_modules():
            if not isinstance(mod, (nn.Linear, Conv1D, nn.Embedding)):
                continue
            for p in (getattr(mod, "weight", None), getattr(mod, "bias", None)):
                if p is None or id(p) in seen:  # tied tensors are drawn once
                    continue
                seen.add(id(p))
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std)


def tiny_model(arch: str, seed: int = 0, **overrides):
    """A float32 eval-mode ``AutoModelForCausalLM`` for ``tiny_config(arch, **overrides)``.

    Deterministic given ``seed`` (the global RNG is left untouched). Linear/Conv1D/Embedding
    weights and biases are N(0, 0.2), so biases are nonzero and activations not degenerate.
    Eager attention (bit-stable, and what Gemma-2 wants).
    """
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    _reinit(model, seed)
    return model.float().eval()


# ---- text -------------------------------------------------------------------------------

_NAMES = "Anna Ben Clara David Emma Felix Grace Henry Iris Jack Lena Max Nora Oscar Paula Sam".split()
_DET = "the a this that every some one another my our their his her".split()
_ADJ = (
    "small large old young bright dark quiet loud happy tired quick slow warm cold green red blue "
    "heavy light careful busy strange simple gentle clever"
).split()
_NOUN = (
    "dog cat bird house garden river city village teacher student doctor farmer child friend book "
    "letter window door table road tree forest mountain market train boat ship song story picture "
    "kitchen school bridge field morning evening winter summer question answer machine problem idea"
).split()
_VERB = (
    "sees finds likes takes makes builds reads writes opens closes carries paints follows watches "
    "visits helps answers remembers moves cleans"
).split()
_IVERB = "sleeps waits laughs works sings runs walks rests smiles listens".split()
_ADV = "slowly quickly quietly often never always carefully happily again today".split()
_PREP = "near behind under over beside across through into from with".split()
_CONJ = ["and then", "but", "because", "while", "so", "although"]


def _np(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(_NAMES)
    words = [rng.choice(_DET)]
    if rng.random() < 0.6:
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN))
    return " ".join(words)


def _clause(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        s = f"{_np(rng)} {rng.choice(_VERB)} {_np(rng)}"
    elif r < 0.75:
        s = f"{_np(rng)} {rng.choice(_IVERB)} {rng.choice(_PREP)} {_np(rng)}"
    else:
        s = f"{_np(rng)} {rng.choice(_IVERB)} {rng.choice(_ADV)}"
    if rng.random() < 0.15:
        s += f" at {rng.randint(1, 12)} o'clock"
    return s


def _sentence(rng: random.Random) -> str:
    s = _clause(rng)
    if rng.random() < 0.35:
        s = f"{s}, {rng.choice(_CONJ)} {_clause(rng)}"
    s = s[0].upper() + s[1:]
    return s + rng.choice([".", ".", ".", "!", "?"])


def _corpus(n: int = 600, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    return [_sentence(rng) for _ in range(n)]


def sample_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` deterministic English-like paragraphs, each ~40-120 words."""
    rng = random.Random(f"sample_texts:{seed}")
    out = []
    for _ in range(n):
        target = rng.randint(40, 110)
        sents, words = [], 0
        while words < target:
            s = _sentence(rng)
            sents.append(s)
            words += len(s.split())
        out.append(" ".join(sents))
    return out


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """A ``PreTrainedTokenizerFast``: byte-level BPE, vocab 512, bos/eos/pad/unk = ``<|endoftext|>`` (id 0).

    Trained offline on a built-in corpus; cached per process (do not mutate the returned object).
    ``save_pretrained`` + ``AutoTokenizer.from_pretrained`` round-trips it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() + sample_texts(50, seed=10_000), trainer)
    assert tok.token_to_id(SPECIAL) == SPECIAL_ID
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL,
        eos_token=SPECIAL,
        unk_token=SPECIAL,
        pad_token=SPECIAL,
        model_max_length=MAX_POS,
    )


def save_tiny(arch: str, path, seed: int = 0, **overrides):
    """Write ``tiny_model(arch, seed, **overrides)`` and ``tiny_tokenizer()`` to ``path``; return ``path``."""
    os.makedirs(path, exist_ok=True)
    tiny_model(arch, seed=seed, **overrides).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path
