"""Architecture adapters against real (tiny, random) transformers models of every supported family."""

from __future__ import annotations

import pytest
import torch

from fbn_prune.models.arch import SUPPORTED_MODEL_TYPES, adapter_for
from fbn_prune.models.arch.base import channel_index, resize_ffn_modules
from fbn_prune.errors import UserError
from tiny import ARCHS, tiny_config, tiny_model

# every arch in ARCHS, any supported type not in it, and the bias variants
CASES = [(a, {}) for a in ARCHS] + [(t, {}) for t in SUPPORTED_MODEL_TYPES if t not in ARCHS]
CASES += [("llama", {"mlp_bias": True}), ("opt", {"enable_bias": False})]
IDS = [a + "".join(f"-{k}={v}" for k, v in kw.items()) for a, kw in CASES]


def _ids(seq: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 512, (2, seq), generator=g)


def _existing_rules(adapter, sd, layer):
    return [(n, d, p) for n, d, p in adapter.slice_rules(layer) if n in sd]


def _row_bias_names(adapter, layer):
    return {f"{adapter.layers}.{layer}.{r}.bias" for r in adapter.rows}


@pytest.mark.parametrize("arch,kw", CASES, ids=IDS)
def test_adapter_layout(arch, kw):
    model = tiny_model(arch, **kw)
    config = model.config
    a = adapter_for(config)
    assert a is not None and config.model_type in a.model_types
    width = a.ffn_width(config)
    assert width == 96
    assert a.hidden_size(config) == 64
    n_layers = a.num_layers(model)
    assert n_layers == 4
    sd = model.state_dict()

    total = 0
    has_bias = a.has_row_bias(config)
    for i in range(n_layers):
        rules = a.slice_rules(i)
        for name, dim, parts in rules:
            if name.endswith(".weight"):
                assert name in sd, f"{arch}: missing weight {name}"
        existing = _existing_rules(a, sd, i)
        for name, dim, parts in existing:
            assert sd[name].shape[dim] == width * parts, (name, tuple(sd[name].shape), dim, parts)
            total += sd[name].numel()
        # bias detection agrees with the model
        present = {n for n in _row_bias_names(a, i) if n in sd}
        assert bool(present) == has_bias, f"{arch}: has_row_bias={has_bias} but row biases present: {present}"
        assert (a.down_bias_name(i) in sd) <= a.supports_down_bias(config)
        assert a.down_bias_name(i) not in {n for n, _, _ in rules}

    assert a.params_per_channel(config) * width * n_layers == total

    # the down module sees the channel signal
    seen = []
    hooks = [
        a.down_module(model, i).register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
        for i in range(n_layers)
    ]
    try:
        with torch.no_grad():
            model(_ids())
    finally:
        for h in hooks:
            h.remove()
    assert seen == [width] * n_layers

    # resized modules match per-layer widths, in the state dict and in the forward
    widths = [96, 50, 7, 1]
    resize_ffn_modules(model, a, widths)
    sd = model.state_dict()
    for i, n in enumerate(widths):
        for name, dim, parts in _existing_rules(a, sd, i):
            assert sd[name].shape[dim] == n * parts, (name, tuple(sd[name].shape), n)
        for name, _, _ in a.slice_rules(i):
            if name.endswith(".weight"):
                assert name in sd
        assert (a.down_bias_name(i) in sd) == (a.down_bias_name(i) in tiny_model(arch, **kw).state_dict())
    seen.clear()
    hooks = [
        a.down_module(model, i).register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
        for i in range(n_layers)
    ]
    with torch.no_grad():
        model(_ids())
    assert seen == widths


def _keep_sets(width: int, widths: list[int], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.sort(torch.randperm(width, generator=g)[:n]).values for n in widths]


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("arch,kw", CASES, ids=IDS)
def test_masking_equals_slicing(arch, kw):
    """Zeroing channels at the down projection's input == physically removing them."""
    model = tiny_model(arch, **kw)
    a = adapter_for(model.config)
    width = a.ffn_width(model.config)
    # a fully pruned layer (width 0) works for nn.Linear; transformers' Conv1D.forward does
    # x.view(-1, 0), which raises on an empty input, so GPT-2 layers need at least one channel
    widths = [71, 96, 1 if a.conv1d else 0, 13]
    keeps = _keep_sets(width, widths, seed=1)
    ids = _ids(32, seed=2)

    with torch.no_grad():
        full = model(ids).logits

    masks = []
    for k in keeps:
        m = torch.zeros(width)
        m[k] = 1.0
        masks.append(m)
    hooks = [
        a.down_module(model, i).register_forward_pre_hook(lambda mod, args, m=m: (args[0] * m,) + args[1:])
        for i, m in enumerate(masks)
    ]
    try:
        with torch.no_grad():
            masked = model(ids).logits
    finally:
        for h in hooks:
            h.remove()
    assert not torch.allclose(masked, full, atol=1e-3), "pruning should visibly change the logits"

    sd = model.state_dict()
    sliced = {k: v.clone() for k, v in sd.items()}
    for i, keep in enumerate(keeps):
        for name, dim, parts in _existing_rules(a, sd, i):
            sliced[name] = torch.index_select(sd[name], dim, channel_index(keep, width, parts)).contiguous()

    small = tiny_model(arch, seed=123, **kw)
    resize_ffn_modules(small, a, widths)
    small.load_state_dict(sliced, strict=True)
    small.eval()
    with torch.no_grad():
        out = small(ids).logits
    torch.testing.assert_close(out, masked, atol=1e-5, rtol=0)


def test_channel_index_stacks_parts():
    keep = torch.tensor([0, 2, 5])
    assert channel_index(keep, 6, 1).tolist() == [0, 2, 5]
    assert channel_index(keep, 6, 2).tolist() == [0, 2, 5, 6, 8, 11]


@pytest.mark.parametrize("model_type", ["bert", "t5"])
def test_unsupported_model_type(model_type):
    config = tiny_config(model_type)
    with pytest.raises(UserError) as err:
        adapter_for(config)
    msg = str(err.value)
    assert repr(model_type) in msg
    for t in SUPPORTED_MODEL_TYPES:
        assert t in msg


def test_every_arch_is_supported():
    assert set(ARCHS) <= set(SUPPORTED_MODEL_TYPES)
