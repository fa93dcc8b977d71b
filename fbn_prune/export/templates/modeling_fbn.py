# Copyright: written by fbn_prune (https://pypi.org/project/fbn-prune/), Apache-2.0.
"""Loader for an fbn_prune checkpoint whose FFN widths differ per layer ("exact" and "deci" layouts).

Stock transformers builds every decoder layer from one global FFN width. This file
subclasses the base architecture (named by ``fbn_base_model_type`` in config.json): the base
model ``FbnModel`` builds as usual, then resizes each layer's FFN modules to the widths listed
in ``config.fbn_ffn["widths"]``; ``FbnForCausalLM`` is the base architecture's causal LM
around such a base model. Load with::

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)   # transformers 4.5x and 5.x
    AutoModel.from_config(config, trust_remote_code=True)                # what vLLM's Transformers backend calls

The "deci" layout (Llama only) uses the DeciLM / Nemotron-NAS classes at the end of this file instead:
config.json has ``model_type: nemotron-nas``, ``architectures: [DeciLMForCausalLM]`` and one
``block_configs`` entry per layer whose ``ffn.ffn_mult`` gives the layer's FFN width by vLLM's formula
(``deci_ffn_width``), so vLLM serves it with its native ``DeciLMForCausalLM``; transformers loads it
through ``DeciLMForCausalLM`` / ``DeciLMModel`` here, which build every layer at that same width.

Works with transformers 4.57 and 5.x.
"""

from torch import nn
from transformers import CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

BASE_MODEL_TYPE = "{base_model_type}"
_BaseConfig = CONFIG_MAPPING[BASE_MODEL_TYPE]
_BaseModel = MODEL_MAPPING[_BaseConfig]
_BaseForCausalLM = MODEL_FOR_CAUSAL_LM_MAPPING[_BaseConfig]


class FbnConfig(_BaseConfig):
    model_type = "fbn_" + BASE_MODEL_TYPE


try:  # transformers 5 renames some weights between checkpoint and modules (GPT-NeoX: embed_out <-> lm_head);
    # the base architecture's renamings (by model type and by class) apply to this model type too, so the
    # file keeps the base architecture's weight names
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )

    _renamings = [r for key in (BASE_MODEL_TYPE, _BaseForCausalLM.__name__) for r in get_checkpoint_conversion_mapping(key) or []]
    if _renamings:
        for _model_type in (FbnConfig.model_type,) + (("nemotron-nas",) if BASE_MODEL_TYPE == "llama" else ()):
            register_checkpoint_conversion_mapping(_model_type, _renamings, overwrite=True)
except ImportError:  # transformers 4: checkpoint names are module names
    pass


class FbnModel(_BaseModel):
    """The base model (no LM head) with each layer's FFN at its own width."""

    config_class = FbnConfig

    def __init__(self, config):
        super().__init__(config)
        resize_ffn(self, config, prefix=self.base_model_prefix + ".")
        self.post_init()


class FbnForCausalLM(_BaseForCausalLM):
    """The base architecture's causal LM whose base model is an FbnModel (same weight names)."""

    config_class = FbnConfig

    def __init__(self, config):
        super().__init__(config)
        resize_ffn(self, config)
        self.post_init()


def resize_ffn(root, config, prefix=""):
    """Give layer i of ``root`` the FFN width ``config.fbn_ffn["widths"][i]`` (DeciLMConfig: from block_configs).

    ``fbn_ffn["layers"]`` is the layer list's path in the causal LM (e.g. ``model.layers``);
    ``prefix`` (the base model prefix plus a dot) is stripped from it when ``root`` is the base
    model. Row projections become (width * parts, hidden), the down projection (hidden, width).
    """
    spec = config.fbn_ffn
    layers = spec["layers"][len(prefix):] if prefix and spec["layers"].startswith(prefix) else spec["layers"]
    for i, width in enumerate(spec["widths"]):
        layer = root.get_submodule(layers + "." + str(i))
        for path in spec["rows"]:
            _replace(layer, path, _resized(layer.get_submodule(path), out=width * spec["parts"], conv1d=spec["conv1d"]))
        _replace(layer, spec["down"], _resized(layer.get_submodule(spec["down"]), inp=width, conv1d=spec["conv1d"]))


def _resized(mod, out=None, inp=None, conv1d=False):
    w = mod.weight
    if conv1d:  # GPT-2 Conv1D(nf=out, nx=in), weight stored (in, out)
        from transformers.pytorch_utils import Conv1D

        new = Conv1D(out or w.shape[1], inp or w.shape[0])
    else:
        new = nn.Linear(inp or w.shape[1], out or w.shape[0], bias=mod.bias is not None)
    return new.to(device=w.device if w.device.type != "meta" else None, dtype=w.dtype)


def _replace(parent, path, new):
    head, _, last = path.rpartition(".")
    setattr(parent.get_submodule(head) if head else parent, last, new)


# ----------------------------------------------------------------------------- the deci layout (a Llama base only)
DECI_WIDTH_STEP = 256


def deci_ffn_width(ffn_mult, hidden_size):
    """A DeciLM layer's FFN width from its ``ffn_mult``: int(2 * ffn_mult * hidden / 3) rounded up to a
    multiple of 256, as vLLM computes it (vllm/model_executor/models/nemotron_nas.py,
    ``_ffn_mult_to_intermediate_size``)."""
    n = int(2 * ffn_mult * hidden_size / 3)
    return n if n % DECI_WIDTH_STEP == 0 else n + DECI_WIDTH_STEP - n % DECI_WIDTH_STEP


class BlockSection(dict):
    """A ``block_configs`` entry or its ``attention`` / ``ffn`` part: a plain dict in config.json, read by
    attribute (``block.ffn.ffn_mult``) as vLLM reads Nemotron-NAS configs; a missing key is a missing attribute."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class DeciLMConfig(_BaseConfig):
    """The base config plus ``block_configs``: per layer {"attention": {...}, "ffn": {"ffn_mult", ...}}."""

    model_type = "nemotron-nas"

    def __init__(self, block_configs=None, **kwargs):
        self.block_configs = [BlockSection({k: BlockSection(v) if isinstance(v, dict) else v for k, v in b.items()})
                              for b in block_configs or []]
        super().__init__(**kwargs)

    @property
    def fbn_ffn(self):
        """The FFN layout resize_ffn reads (Llama's module names), widths derived from ``ffn_mult``."""
        return {"layers": "model.layers", "rows": ["mlp.gate_proj", "mlp.up_proj"], "down": "mlp.down_proj",
                "parts": 1, "conv1d": False,
                "widths": [deci_ffn_width(b.ffn.ffn_mult, self.hidden_size) for b in self.block_configs]}


class DeciLMModel(FbnModel):
    """The base model with each layer's FFN at the width its ``ffn_mult`` gives."""

    config_class = DeciLMConfig


class DeciLMForCausalLM(FbnForCausalLM):
    """The causal LM vLLM serves natively as ``DeciLMForCausalLM``; Llama's weight names."""

    config_class = DeciLMConfig
