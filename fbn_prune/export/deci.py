"""The deci layout's config.json: per-layer FFN widths as DeciLM / Nemotron-NAS ``block_configs`` that vLLM reads back exactly.

vLLM's native ``DeciLMForCausalLM`` (vllm/model_executor/models/nemotron_nas.py) builds layer i's FFN at
``_ffn_mult_to_intermediate_size(block_configs[i].ffn.ffn_mult, hidden_size)``: int(2 * ffn_mult * hidden / 3)
rounded up to a multiple of 256. A width w that is a multiple of 256 is therefore stated as ffn_mult = 1.5 * w /
hidden (rounded to 6 decimals, checked against the formula per layer before it is written). Attention is Llama's:
``n_heads_in_group`` = heads / KV heads in every layer, no no-op or linear-replaced blocks. The shipped
``modeling_fbn.py`` (``DeciLMConfig``, ``deci_ffn_width``) derives the same widths for transformers.
"""

from __future__ import annotations

from fbn_prune.config.layouts import DECI

DECI_MODEL_TYPE = "nemotron-nas"
"""config.json's ``model_type`` of a DeciLM / Nemotron-NAS checkpoint (vLLM and llama.cpp's converter key on it)."""


def vllm_ffn_width(ffn_mult: float, hidden_size: int) -> int:
    """The FFN width vLLM builds for ``ffn_mult`` (nemotron_nas.py, ``_ffn_mult_to_intermediate_size``)."""
    n = int(2 * ffn_mult * hidden_size / 3)
    step = DECI.width_step
    return n if n % step == 0 else n + step - n % step


def ffn_mult_for(width: int, hidden_size: int) -> float:
    """The ``ffn_mult`` whose vLLM width is exactly ``width`` (a positive multiple of 256); ValueError if none is found."""
    for mult in (round(1.5 * width / hidden_size, 6), 1.5 * width / hidden_size):
        if vllm_ffn_width(mult, hidden_size) == width:
            return mult
    raise ValueError(f"no ffn_mult gives FFN width {width} at hidden size {hidden_size} (vLLM rounds to multiples of "
                     f"{DECI.width_step})")


def deci_config_data(data: dict, widths: list[int]) -> dict:
    """The deci layout's config dict from the base Llama config's ``data`` (``model_type`` removed) and the widths.

    Keeps every base key (vLLM reads hidden size, heads, rope, norms, biases from them; ``intermediate_size``
    becomes the widest layer) and adds ``block_configs``, one entry per layer.
    """
    hidden = int(data["hidden_size"])
    heads = int(data["num_attention_heads"])
    kv_heads = int(data.get("num_key_value_heads") or heads)
    blocks = [{"attention": {"n_heads_in_group": heads // kv_heads, "no_op": False, "replace_with_linear": False},
               "ffn": {"ffn_mult": ffn_mult_for(int(w), hidden), "no_op": False, "replace_with_linear": False}}
              for w in widths]
    return {**data, "intermediate_size": max(int(w) for w in widths), "block_configs": blocks}


def deci_widths(config: dict) -> list[int]:
    """Per-layer FFN widths of a DeciLM config.json dict, as vLLM derives them; ValueError for a no-op or
    linear-replaced FFN (fbn_prune never writes one)."""
    hidden = int(config["hidden_size"])
    widths = []
    for i, block in enumerate(config["block_configs"]):
        ffn = block["ffn"]
        if ffn.get("no_op") or ffn.get("replace_with_linear") or ffn.get("ffn_mult") is None:
            raise ValueError(f"layer {i} has no FFN of its own (no_op, replace_with_linear or no ffn_mult)")
        widths.append(vllm_ffn_width(float(ffn["ffn_mult"]), hidden))
    return widths
