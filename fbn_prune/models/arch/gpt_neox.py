"""GPT-NeoX (Pythia): non-gated dense_h_to_4h / dense_4h_to_h."""

from fbn_prune.models.arch.base import Adapter

GPT_NEOX = Adapter(
    name="gpt_neox",
    model_types=("gpt_neox",),
    layers="gpt_neox.layers",
    rows=("mlp.dense_h_to_4h",),
    down="mlp.dense_4h_to_h",
    gated=False,
)
