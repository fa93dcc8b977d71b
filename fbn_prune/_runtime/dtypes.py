"""The dtypes a model is loaded, worked on and saved in: name -> torch dtype and bytes per value.

The one table every option, check and size estimate reads (``--dtype``, ``--save-dtype``, recipes,
``fbn-prune eval --dtype``, resources' byte counts). Order: as the choices are listed to users.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""dtype name -> torch dtype."""

DTYPE_NAMES: tuple[str, ...] = tuple(DTYPES)
"""The names, in the order users see them: float32, bfloat16, float16."""

DTYPE_BYTES: dict[str, int] = {name: dtype.itemsize for name, dtype in DTYPES.items()}
"""dtype name -> bytes per value."""

COMPUTE_NAMES: tuple[str, ...] = ("auto", "float32", "bfloat16")
"""What training computes in (``fbn-prune heal --compute``): float32 weights throughout, with the
matrix products in float32 or under bfloat16 autocast; auto picks bfloat16 where the hardware
has it (see :func:`autocast_dtype`)."""


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA GPU that supports
    bfloat16, or a CPU with AVX512-BF16 or AMX (elsewhere autocast would emulate it, slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
        return bool(bf16() or amx())
    return False


def autocast_dtype(compute: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``compute`` (one of COMPUTE_NAMES) on ``device``; None: plain float32."""
    if compute not in COMPUTE_NAMES:
        raise ValueError(f"compute must be one of {', '.join(COMPUTE_NAMES)}, got {compute!r}")
    if compute == "bfloat16" or (compute == "auto" and native_bfloat16(device)):
        return torch.bfloat16
    return None
