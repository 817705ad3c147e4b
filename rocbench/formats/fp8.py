"""The two fp8 e4m3 flavours and which one a machine's kernels take.

float8_e4m3fn (OCP; NVIDIA, gfx950) has max 448 and NaN 0x7F/0xFF. float8_e4m3fnuz (gfx942,
MI300X/MI325X) has max 240, no -0.0 and a single NaN, 0x80. AITER picks its fp8 by arch
(aiter/utility/dtypes.py:12-20) and rejects the other flavour ("Unsupported dtype").
"""
from __future__ import annotations

import torch

E4M3_DTYPES = (torch.float8_e4m3fn, torch.float8_e4m3fnuz)
# gfx arch -> the fp8 dtype AITER uses there; every other arch (NVIDIA included) uses e4m3fn.
FNUZ_ARCHS = ("gfx942",)


def fp8_for_arch(arch: str | None) -> torch.dtype:
    return torch.float8_e4m3fnuz if arch in FNUZ_ARCHS else torch.float8_e4m3fn


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in E4M3_DTYPES or dtype in (torch.float8_e5m2, torch.float8_e5m2fnuz)


def fp8_max(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def nan_byte(dtype: torch.dtype) -> int:
    """A byte that decodes to NaN in this fp8 flavour (poison for slots nobody may read)."""
    return 0x80 if dtype in (torch.float8_e4m3fnuz, torch.float8_e5m2fnuz) else 0x7F
