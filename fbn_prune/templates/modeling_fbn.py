# Copyright: written by fbn_prune (https://pypi.org/project/fbn-prune/), Apache-2.0.
"""Loader for an fbn_prune checkpoint whose FFN widths differ per layer ("exact" layout).

Stock transformers builds every decoder layer from one global FFN width. This file
subclasses the base architecture (named by ``fbn_base_model_type`` in config.json) and,
after the usual construction, resizes each layer's FFN modules to the widths listed in
``config.fbn_ffn["widths"]``. Load with::

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
"""

from torch import nn
from transformers import CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING

BASE_MODEL_TYPE = "{base_model_type}"
_BaseConfig = CONFIG_MAPPING[BASE_MODEL_TYPE]
_BaseModel = MODEL_FOR_CAUSAL_LM_MAPPING[_BaseConfig]


class FbnConfig(_BaseConfig):
    model_type = "fbn_" + BASE_MODEL_TYPE


class FbnForCausalLM(_BaseModel):
    config_class = FbnConfig

    def __init__(self, config):
        super().__init__(config)
        spec = config.fbn_ffn
        for i, width in enumerate(spec["widths"]):
            layer = self.get_submodule(spec["layers"] + "." + str(i))
            for path in spec["rows"]:
                _replace(layer, path, _resized(layer.get_submodule(path), out=width * spec["parts"], conv1d=spec["conv1d"]))
            _replace(layer, spec["down"], _resized(layer.get_submodule(spec["down"]), inp=width, conv1d=spec["conv1d"]))
        self.post_init()


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
