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
