"""Gated MLPs: down(act(gate(x)) * up(x)) with separate gate/up projections."""

from fbn_prune.models.arch.base import Adapter

LLAMA = Adapter(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2"),
    layers="model.layers",
    rows=("mlp.gate_proj", "mlp.up_proj"),
    down="mlp.down_proj",
)
