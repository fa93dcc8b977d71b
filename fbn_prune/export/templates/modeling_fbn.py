# Copyright: written by fbn_prune (https://pypi.org/project/fbn-prune/), Apache-2.0.
"""Loader for an fbn_prune checkpoint whose FFN widths differ per layer ("exact" layout).

Stock transformers builds every decoder layer from one global FFN width. This file
subclasses the base architecture (named by ``fbn_base_model_type`` in config.json): the base
model ``FbnModel`` builds as usual, then resizes each layer's FFN modules to the widths listed
in ``config.fbn_ffn["widths"]``; ``FbnForCausalLM`` is the base architecture's causal LM
around such a base model. Load with::

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)   # transformers 4.5x and 5.x
    AutoModel.from_config(config, trust_remote_code=True)                # what vLLM's Transformers backend calls

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
        register_checkpoint_conversion_mapping(FbnConfig.model_type, _renamings, overwrite=True)
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
    """Give layer i of ``root`` the FFN width ``config.fbn_ffn["widths"][i]``.

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
