"""Stable public API for MXFP4 MoE weights: quantization and AITER's two weight layouts.

    from rocbench.moe import (quantize_mxfp4, dequantize_mxfp4, shuffle_weight,
                              unshuffle_weight, shuffle_scale, unshuffle_scale)

Layouts are named "interleave" (AITER shuffle_weight_a16w4 / shuffle_scale_a16w4) and
"separated" (AITER shuffle_weight / shuffle_scale with is_guinterleave=False). Implementations
live in rocbench.suites.moe; these wrappers only pin the signatures.
"""

from __future__ import annotations

import torch

from rocbench.formats import moe_layouts as _layouts
from rocbench.formats import mxfp4 as _mxfp4
from rocbench.formats.moe_layouts import INTERLEAVE, LAYOUTS, SEPARATED, layout_unsupported_reason

__all__ = [
    "quantize_mxfp4", "dequantize_mxfp4", "shuffle_weight", "unshuffle_weight", "shuffle_scale",
    "unshuffle_scale", "layout_unsupported_reason", "INTERLEAVE", "SEPARATED", "LAYOUTS",
]


def quantize_mxfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., K] bf16/fp16/fp32 -> (packed uint8 [..., K//2], E8M0 scales uint8 [..., K//32]).

    AITER's "even" scale rule, E2M1 round-to-nearest-even saturating at 6, element 2i in the
    low nibble. NaN in a block -> scale 0xFF; inf saturates (see rocbench.formats.mxfp4).
    Raises ValueError when K is not a multiple of 32.
    """
    return _mxfp4.quantize_mxfp4(w)


def dequantize_mxfp4(packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(packed [..., K//2], scales [..., K//32]) -> float32 [..., K]; scale 0xFF gives NaN."""
    return _mxfp4.dequantize_mxfp4(packed, scales)


def shuffle_weight(t: torch.Tensor, layout: str, gate_up: bool, experts: int) -> torch.Tensor:
    """Packed fp4 [E, N, K/2] -> the bytes AITER's shuffle for ``layout`` returns (same shape).

    w13: gate_up=True, N = 2*inter with gate rows first; w2: gate_up=False, N = hidden.
    Raises ValueError for shapes the layout's tiles do not fit (see layout_unsupported_reason).
    """
    return _layouts.shuffle_weight(t, layout, gate_up, experts)


def unshuffle_weight(t: torch.Tensor, layout: str, gate_up: bool, experts: int) -> torch.Tensor:
    """Inverse of shuffle_weight."""
    return _layouts.unshuffle_weight(t, layout, gate_up, experts)


def shuffle_scale(t: torch.Tensor, layout: str, gate_up: bool, experts: int) -> torch.Tensor:
    """E8M0 [E*N, K/32] (or [E, N, K/32]) -> AITER's 2-D shuffled scale, padding included
    (separated: rows to 256, cols to 8; interleave: cols to 8; pad value 0x7F)."""
    return _layouts.shuffle_scale(t, layout, gate_up, experts)


def unshuffle_scale(t: torch.Tensor, layout: str, gate_up: bool, experts: int, shape) -> torch.Tensor:
    """Inverse of shuffle_scale; ``shape`` is the original scale shape (padding is dropped)."""
    return _layouts.unshuffle_scale(t, layout, gate_up, experts, shape)
