"""OPT: non-gated fc1/fc2 directly on the decoder layer; width in ``ffn_dim``."""

from fbn_prune.models.arch.base import Adapter

OPT = Adapter(
    name="opt",
    model_types=("opt",),
    layers="model.decoder.layers",
    rows=("fc1",),
    down="fc2",
    width_key="ffn_dim",
    gated=False,
)
