import math

import pytest
import torch

from rocbench.moe import dequantize_mxfp4, quantize_mxfp4
from rocbench.formats.mxfp4 import FP4_VALUES, e8m0_exponent_from_amax, pack_fp4, unpack_fp4

MAGS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _block(values, fill=0.0):
    vals = list(values) + [fill] * (32 - len(values))
    return torch.tensor([vals], dtype=torch.float32)


def _nearest_even_code(q: float) -> int:
    """Brute force E2M1 rounding: nearest magnitude, ties to the even code, saturate at 6."""
    mag = min(abs(q), 6.0)
    dists = [abs(mag - m) for m in MAGS]
    best = min(dists)
    cands = [c for c, d in enumerate(dists) if d == best]
    code = cands[0] if len(cands) == 1 else next(c for c in cands if c % 2 == 0)
    return code | (8 if math.copysign(1.0, q) < 0 else 0)


def test_every_code_round_trips():
    # 6.0 in slot 0 pins the block scale to 2^0 (amax 6 -> exponent 2 - 2 = 0, byte 127).
    for code in range(16):
        x = _block([6.0, FP4_VALUES[code]] * 16)
        packed, scales = quantize_mxfp4(x)
        assert scales.tolist() == [[127]]
        codes = unpack_fp4(packed)[0].tolist()
        assert codes[1::2] == [code] * 16, code
        back = dequantize_mxfp4(packed, scales)
        assert torch.equal(back.view(torch.int32), x.view(torch.int32)), code  # -0.0 kept


def test_all_bytes_dequantize_with_table_and_nibble_order():
    packed = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    scales = torch.full((16, 1), 127, dtype=torch.uint8)
    out = dequantize_mxfp4(packed, scales)
    for b in range(256):
        row, col = divmod(b, 16)
        assert out[row, 2 * col].item() == FP4_VALUES[b & 0xF]  # low nibble = element 2i
        assert out[row, 2 * col + 1].item() == FP4_VALUES[b >> 4]  # high nibble = element 2i+1


def test_nibble_order_when_packing():
    x = _block([0.5, 1.0, 6.0, -0.5])  # codes 1, 2, 7, 9 at scale 2^0
    packed, scales = quantize_mxfp4(x)
    assert scales.item() == 127
    assert packed[0, 0].item() == 0x21 and packed[0, 1].item() == 0x97
    assert pack_fp4(torch.tensor([[1, 2, 7, 9]], dtype=torch.uint8)).tolist() == [[0x21, 0x97]]


@pytest.mark.parametrize("amax, scale_byte", [
    (1.0, 125),          # floor(log2 1) - 2 = -2
    (3.0, 126),          # 1.5 * 2: mantissa < 0.75 keeps exponent 1 -> -1
    (3.49, 126),
    (3.5, 127),          # 1.75 * 2 rounds up to 4 -> 0
    (6.0, 127),
    (6.99, 127),
    (7.0, 128),          # 1.75 * 4 rounds up to 8 -> 1
    (2.0 ** -126, 0),    # exponent -128 clamps to -127
    (2.0 ** -130, 0),    # subnormal amax: rounds to 0 -> -inf -> clamp -127
    (2.0 ** 126, 251),
    (2.0 ** 127 * 1.74, 252),
    (2.0 ** 127 * 1.75, 254),  # rounds up to inf: log2 -> inf -> clamp 127
    (3.4e38, 254),
])
def test_scale_rule(amax, scale_byte):
    x = _block([amax, -amax / 3])
    _, scales = quantize_mxfp4(x)
    assert scales.item() == scale_byte
    exp = e8m0_exponent_from_amax(torch.tensor([amax], dtype=torch.float32))
    assert exp.item() + 127 == scale_byte


def test_hand_computed_values():
    # amax 3 -> scale 2^-1; 3/0.5 = 6 -> code 7; 1.2/0.5 = 2.4 -> 2 (code 4); 0.3 -> 0.6 -> 0.5
    x = _block([3.0, 1.2, 0.3, -0.13, 0.125])
    packed, scales = quantize_mxfp4(x)
    assert scales.item() == 126
    codes = unpack_fp4(packed)[0, :5].tolist()
    # -0.13/0.5 = -0.26 -> -0.5 (code 9); 0.125/0.5 = 0.25 -> tie -> 0
    assert codes == [7, 4, 1, 9, 0]
    assert dequantize_mxfp4(packed, scales)[0, :5].tolist() == [3.0, 1.0, 0.25, -0.25, 0.0]


def test_round_to_nearest_even_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.5, 6.5, 100.0]
    x = torch.randn(64, 256, generator=gen) * torch.rand(64, 1, generator=gen) * 10
    x[0, :len(ties)] = torch.tensor(ties)
    x[0, 31] = 6.0  # keep block 0 at scale 2^0 so the ties stay ties
    x[1, :len(ties)] = -torch.tensor(ties)
    x[1, 31] = 6.0
    packed, scales = quantize_mxfp4(x)
    codes = unpack_fp4(packed)
    for r in range(8):
        for c in range(256):
            e = int(scales[r, c // 32]) - 127
            q = float(x[r, c]) * 2.0 ** -e
            assert codes[r, c].item() == _nearest_even_code(q), (r, c, q)


def test_error_bound_and_exact_values():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 128, generator=gen, dtype=torch.float32).to(torch.bfloat16)
    packed, scales = quantize_mxfp4(x)
    assert packed.shape == (16, 64) and scales.shape == (16, 4)
    assert packed.dtype == torch.uint8 and scales.dtype == torch.uint8
    back = dequantize_mxfp4(packed, scales)
    amax = x.float().reshape(16, 4, 32).abs().amax(-1, keepdim=True)
    err = (back - x.float()).reshape(16, 4, 32).abs()
    assert bool((err <= amax / 4 + 1e-30).all())
    # values that are exactly representable come back exactly
    vals = torch.tensor(FP4_VALUES).repeat(2)[None] * 2.0 ** 5
    vals[0, 0] = 6 * 2.0 ** 5
    p2, s2 = quantize_mxfp4(vals)
    assert torch.equal(dequantize_mxfp4(p2, s2), vals)


def test_zero_nan_inf_blocks():
    x = torch.zeros(1, 128)
    x[0, 32 + 5] = float("nan")
    x[0, 32 + 6] = 2.0
    x[0, 64] = float("inf")
    x[0, 65] = 1.0
    x[0, 96] = -float("inf")
    packed, scales = quantize_mxfp4(x)
    assert scales.tolist() == [[0, 0xFF, 254, 254]]
    back = dequantize_mxfp4(packed, scales)
    assert bool((back[0, :32] == 0).all())
    assert bool(torch.isnan(back[0, 32:64]).all())  # NaN scale poisons the block
    assert back[0, 64].item() == float("inf")  # 6 * 2^127 overflows fp32
    assert back[0, 65].item() == 0.0  # finite values in an inf block underflow
    assert back[0, 96].item() == -float("inf")
    codes = unpack_fp4(packed)[0]
    assert codes[64].item() == 7 and codes[96].item() == 15


def test_special_scale_bytes_dequantize():
    packed = torch.full((1, 16), 0x22, dtype=torch.uint8)  # all elements 1.0
    assert dequantize_mxfp4(packed, torch.tensor([[0]], dtype=torch.uint8))[0, 0].item() == 2.0 ** -127
    assert dequantize_mxfp4(packed, torch.tensor([[254]], dtype=torch.uint8))[0, 0].item() == 2.0 ** 127
    assert bool(torch.isnan(dequantize_mxfp4(packed, torch.tensor([[255]], dtype=torch.uint8))).all())


def test_bad_k_raises():
    with pytest.raises(ValueError, match="multiple of the MX block"):
        quantize_mxfp4(torch.zeros(2, 48))
    with pytest.raises(ValueError):
        dequantize_mxfp4(torch.zeros(2, 24, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="does not match"):
        dequantize_mxfp4(torch.zeros(2, 32, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.uint8))


def test_batched_shapes():
    x = torch.randn(3, 5, 64)
    packed, scales = quantize_mxfp4(x)
    assert packed.shape == (3, 5, 32) and scales.shape == (3, 5, 2)
    flat_p, flat_s = quantize_mxfp4(x.reshape(15, 64))
    assert torch.equal(packed.reshape(15, 32), flat_p) and torch.equal(scales.reshape(15, 2), flat_s)
