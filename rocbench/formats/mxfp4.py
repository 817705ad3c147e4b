"""MXFP4 (OCP MX, E2M1 elements + E8M0 block scales) quantization in plain torch.

Format (OCP MX v1.0, and AITER's ``aiter/utility/fp4_utils.py``):
  * 32 consecutive values along the last dim share one E8M0 scale byte: 2^(s - 127);
    s = 0xFF means NaN (the whole block decodes to NaN); s = 0 is 2^-127.
  * Elements are E2M1 codes: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 for codes 0..7, bit 3 is the
    sign (code 8 is -0.0).
  * Two codes per byte: element 2i in the low nibble, element 2i+1 in the high nibble.

Scale rule: AITER's ``dynamic_mxfp4_quant(scaling_mode="even")``: take the block amax as fp32
bits, add 0x200000 and clear the mantissa (so an amax whose mantissa is >= 0.75 rounds up to
the next power of two), then exponent = floor(log2(that)) - 2, clamped to [-127, 127], biased
by 127. The elements are x * 2^-exponent rounded to E2M1 with round-to-nearest-even and
saturation at 6 (values >= 6 become 6; ties go to the even code, e.g. 0.25 -> 0, 5 -> 4).

Special values (our choices, stated because AITER's kernel has no NaN semantics at all):
  * NaN anywhere in a block -> that block's scale is 0xFF (OCP: a NaN scale makes every element
    of the block NaN). The codes of the block's other elements are still computed from the
    non-NaN amax; NaN elements get code 0.
  * +-inf follows AITER's kernel: the amax becomes inf, the exponent clamps to 127 (scale byte
    254), inf saturates to +-6, and the block's finite elements underflow to +-0.
  * An all-zero block gets scale byte 0 (exponent clamps to -127) and zero codes.
"""

from __future__ import annotations

import torch

MX_BLOCK = 32
E8M0_BIAS = 127
E8M0_NAN = 0xFF

# E2M1 code -> value. Index = 4-bit code.
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
              -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)

# Rounding thresholds on the magnitude for round-to-nearest-even with saturation at 6.
# A magnitude moves one code up when it is past a midpoint; at an exact midpoint it moves
# only when the upper neighbour has an even code (">=" rows), otherwise it stays (">" rows).
_RNE_STEPS = (
    (0.25, False),  # 0 | 0.5   tie -> 0 (code 0 even)
    (0.75, True),   # 0.5 | 1   tie -> 1 (code 2 even)
    (1.25, False),  # 1 | 1.5   tie -> 1
    (1.75, True),   # 1.5 | 2   tie -> 2
    (2.5, False),   # 2 | 3     tie -> 2
    (3.5, True),    # 3 | 4     tie -> 4
    (5.0, False),   # 4 | 6     tie -> 4; everything above 5 (inf included) saturates to 6
)


def _check_block_dim(k: int) -> None:
    if k % MX_BLOCK != 0:
        raise ValueError(
            f"MXFP4 needs the last dim to be a multiple of the MX block ({MX_BLOCK}); got K={k}"
        )


def e8m0_exponent_from_amax(amax: torch.Tensor) -> torch.Tensor:
    """Unbiased scale exponent (int32) from a float32 block amax, AITER's "even" rule."""
    bits = amax.to(torch.float32).contiguous().view(torch.int32)
    rounded = (bits + 0x200000) & -0x800000  # -0x800000 == 0xFF800000 as int32
    field = (rounded >> 23) & 0xFF
    # field 0: the rounded amax is 0 (zero or small subnormal): log2 -> -inf -> clamp -127.
    # field 255: the rounded amax is inf: log2 -> +inf -> clamp 127.
    exp = field - E8M0_BIAS - 2
    exp = torch.where(field == 0, torch.full_like(exp, -127), exp)
    exp = torch.where(field == 255, torch.full_like(exp, 127), exp)
    return exp.clamp(-127, 127)


def e2m1_codes(q: torch.Tensor) -> torch.Tensor:
    """Round already-scaled float32 values to 4-bit E2M1 codes (uint8 0..15), RNE, saturating."""
    mag = q.abs()
    code = torch.zeros(q.shape, dtype=torch.uint8, device=q.device)
    for threshold, inclusive in _RNE_STEPS:
        code += (mag >= threshold if inclusive else mag > threshold).to(torch.uint8)
    code = torch.where(torch.isnan(q), torch.zeros_like(code), code)
    negative = torch.signbit(q) & ~torch.isnan(q)
    return code | (negative.to(torch.uint8) << 3)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """[..., 2n] codes -> [..., n] bytes; element 2i in the low nibble."""
    if codes.shape[-1] % 2:
        raise ValueError("pack_fp4 needs an even last dim")
    pairs = codes.reshape(*codes.shape[:-1], codes.shape[-1] // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).to(torch.uint8)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """[..., n] bytes -> [..., 2n] codes (uint8)."""
    packed = packed.view(torch.uint8)
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(*packed.shape[:-1], -1)


def e8m0_to_float(scales: torch.Tensor) -> torch.Tensor:
    """E8M0 bytes -> float32 2^(s-127); 0 -> 2^-127 (subnormal), 0xFF -> NaN."""
    s = scales.view(torch.uint8).to(torch.int32)
    bits = s << 23
    bits = torch.where(s == 0, torch.full_like(bits, 0x00400000), bits)
    bits = torch.where(s == E8M0_NAN, torch.full_like(bits, 0x7FC00000), bits)
    return bits.view(torch.float32)


def quantize_mxfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize [..., K] (bf16/fp16/fp32) to MXFP4.

    Returns (packed uint8 [..., K//2], scales uint8 E8M0 [..., K//32]).
    """
    k = w.shape[-1]
    _check_block_dim(k)
    x = w.to(torch.float32).reshape(*w.shape[:-1], k // MX_BLOCK, MX_BLOCK)
    has_nan = torch.isnan(x).any(dim=-1)
    amax = torch.nan_to_num(x.abs(), nan=0.0, posinf=float("inf")).amax(dim=-1)
    exp = e8m0_exponent_from_amax(amax)
    # x * 2^-exp is exact (power of two; subnormal results only when the block is that small).
    q = torch.ldexp(x, (-exp).to(torch.float32).unsqueeze(-1))
    codes = e2m1_codes(q).reshape(*w.shape[:-1], k)
    scales = (exp + E8M0_BIAS).to(torch.uint8)
    scales = torch.where(has_nan, torch.full_like(scales, E8M0_NAN), scales)
    return pack_fp4(codes), scales


def dequantize_mxfp4(packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Inverse of quantize_mxfp4: packed [..., K//2] + scales [..., K//32] -> float32 [..., K]."""
    codes = unpack_fp4(packed)
    k = codes.shape[-1]
    _check_block_dim(k)
    if tuple(scales.shape) != tuple(codes.shape[:-1]) + (k // MX_BLOCK,):
        raise ValueError(
            f"scales shape {tuple(scales.shape)} does not match packed {tuple(packed.shape)}"
            f" (expected {tuple(codes.shape[:-1]) + (k // MX_BLOCK,)})"
        )
    table = torch.tensor(FP4_VALUES, dtype=torch.float32, device=codes.device)
    values = table[codes.long()].reshape(*codes.shape[:-1], k // MX_BLOCK, MX_BLOCK)
    out = values * e8m0_to_float(scales).unsqueeze(-1)
    return out.reshape(*codes.shape[:-1], k)


def mxfp4_bytes(rows: int, k: int) -> int:
    """Bytes of a [rows, k] MXFP4 matrix: packed elements (2 per byte) plus one E8M0 scale per block."""
    return rows * k // 2 + rows * k // MX_BLOCK
