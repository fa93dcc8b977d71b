"""Phi-3: gate and up fused in one ``gate_up_proj`` (gate rows first, then up rows)."""

from fbn_prune.models.arch.base import Adapter

PHI3 = Adapter(
    name="phi3",
    model_types=("phi3",),
    layers="model.layers",
    rows=("mlp.gate_up_proj",),
    down="mlp.down_proj",
    fused_parts=2,
)
