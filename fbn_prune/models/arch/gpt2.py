"""GPT-2: non-gated MLP of Conv1D modules (weights stored (in, out)); width in ``n_inner``."""

from fbn_prune.models.arch.base import Adapter

GPT2 = Adapter(
    name="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    rows=("mlp.c_fc",),
    down="mlp.c_proj",
    width_key="n_inner",
    conv1d=True,
    gated=False,
)
