"""Mixed precision: the one autocast helper of the trainers, the evaluators and the benchmarks."""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(
    device: torch.device | str, enabled: bool, dtype: str | torch.dtype = "bf16"
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` in ``dtype`` (``bf16`` or ``fp16``) when ``enabled``, else a null context.

    Autocast on the CPU only takes bf16; asking it for fp16 there falls back to bf16.
    """
    if not enabled:
        return contextlib.nullcontext()
    device = torch.device(device)
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if device.type == "cpu":
        dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)
