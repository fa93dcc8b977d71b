"""Where a model's weights live: one device, or spread by accelerate over GPUs and CPU RAM.

With ``device_map`` (``--device-map auto``) transformers asks accelerate to place each decoder
layer on a GPU, in CPU RAM or on disk. Layers on several GPUs keep their parameters there;
offloaded layers hold "meta" parameters whose values accelerate's hooks bring to the
execution device for each forward. Everything in fbn_prune that touches weights or feeds
inputs goes through the helpers here, so both kinds work for capture, selection and
verification.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from accelerate.utils import align_module_device, has_offloaded_params
from torch import nn

from fbn_prune._runtime import resources
from fbn_prune._runtime.sizes import parse_max_memory
from fbn_prune.errors import UserError


def max_memory_map(text: str | None) -> dict[int | str, int] | None:
    """accelerate's ``max_memory`` dict for this machine (a bare size applies to each visible GPU)."""
    if text is None:
        return None
    spec = parse_max_memory(text)
    if "gpu" in spec:
        size = spec.pop("gpu")
        spec.update({i: size for i in range(torch.cuda.device_count())} or {"cpu": size})
    return spec


def load_kwargs(device_map: str | None, max_memory: str | None) -> dict:
    """from_pretrained keyword arguments for a placement ({} for a plain single-device load)."""
    if not device_map:
        return {}
    kwargs: dict = {"device_map": device_map}
    memory = max_memory_map(max_memory)
    if memory:
        kwargs["max_memory"] = memory
    return kwargs


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the input embedding's device (its execution device when offloaded)."""
    emb = model.get_input_embeddings()
    if emb.weight.device.type != "meta":
        return emb.weight.device
    hook = getattr(emb, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    return torch.device(device) if device is not None else torch.device("cpu")


def devices(model: nn.Module) -> list[str]:
    """The distinct devices holding the model's parameters, e.g. ``["cuda:0", "cuda:1", "meta"]``."""
    return sorted({str(p.device) for p in model.parameters()})


def host_weight_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers stored in CPU memory (resident or still mapped from the file)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type == "cpu" and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def resident_bytes(model: nn.Module) -> int:
    """Host RAM the process holds with ``model`` loaded: its RSS now, or runtime + host weights when
    more (safetensors weights are memory-mapped and only become resident as the first forward reads them)."""
    return max(resources.current_rss(), resources.RUNTIME_BYTES + host_weight_bytes(model))


def offloaded(model: nn.Module) -> bool:
    """True when some parameters live off-device (meta, values held by accelerate's hooks)."""
    return any(p.device.type == "meta" for p in model.parameters())


@contextlib.contextmanager
def onloaded(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every offloaded parameter holds its real value on the CPU (no-op otherwise).

    Selection and export read weights directly (scores, compensation, slicing); an offloaded
    model's meta parameters are filled from accelerate's weights map for that time.
    """
    if not offloaded(model):
        yield model
        return

    with contextlib.ExitStack() as stack:
        for mod in model.modules():
            if has_offloaded_params(mod):
                stack.enter_context(align_module_device(mod, torch.device("cpu")))
        if offloaded(model):
            raise UserError("some weights are on the meta device with no values to load; load the model "
                            "with --device or a --device-map that keeps every weight in GPU or CPU memory.")
        yield model
