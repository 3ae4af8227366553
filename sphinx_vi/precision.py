"""Which floating-point type to run in: bf16 where the hardware computes it natively, else fp32.

`auto` picks bf16 on a CUDA device that supports it and on a CPU with AVX-512 BF16 or AMX
instructions (detected, not assumed), fp32 elsewhere; `bfloat16` and `float32` are taken as given.
"""

from __future__ import annotations

from typing import Literal

import torch

DType = Literal["auto", "float32", "bfloat16"]


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX-512 BF16 or AMX tiles)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def resolve_dtype(dtype: DType | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype for `dtype` on `device` (None: float32, the library's default)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    raise ValueError(f"dtype {dtype!r}: choose auto, float32 or bfloat16")
