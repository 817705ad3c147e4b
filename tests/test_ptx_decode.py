"""The MoE kernels' inline PTX decodes (rocbench.kernels.mxfp4_weights), run on the CPU by tests/ptx_emulator.py:
every fp4 byte in every position of the packed word, at every block scale a form takes, against the MXFP4 reference
decode. The GPU tests (test_moe_kernel.py) then compare whole kernels bitwise; these pin the strings themselves."""

import numpy as np
import pytest
import torch

from rocbench.formats.mxfp4 import FP4_VALUES
from rocbench.kernels import mla_attend
from rocbench.kernels import mxfp4_weights as W
from tests.ptx_emulator import run_ptx

# 256 words whose byte p is (w + 67 p) % 256: every byte value in every position
EVERY_BYTE = (np.arange(256)[:, None] + 67 * np.arange(4)[None, :]) % 256


def _bf16_bits(values: torch.Tensor) -> np.ndarray:
    return values.to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint32) & 0xFFFF


def _f16_bits(values: torch.Tensor) -> np.ndarray:
    return values.to(torch.float16).view(torch.int16).numpy().astype(np.uint32) & 0xFFFF


def _words(bytes_: np.ndarray) -> np.ndarray:
    return (bytes_ << (8 * np.arange(4))[None, :]).sum(axis=1).astype(np.uint32)


def _decode(asm: str, words: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """The four bf16 results (bits, [n, 4]) of one string on packed words [n] and per-element factor bits [n, 4]."""
    pack = lambda a, b: factors[:, a] | (factors[:, b] << 16)  # noqa: E731
    out = run_ptx(asm, [None, None, words, pack(0, 1), pack(2, 3)])
    return np.stack([out[0] & 0xFFFF, out[0] >> 16, out[1] & 0xFFFF, out[1] >> 16], axis=1)


@pytest.mark.parametrize("upper_bytes", [False, True], ids=["low-halves", "upper-bytes"])
@pytest.mark.parametrize("one_mul", [False, True], ids=["exact", "one-multiply"])
def test_ptx_decode_gives_the_reference_bits_for_every_byte_and_scale(one_mul, upper_bytes):
    bytes_ = EVERY_BYTE
    # exact: every finite scale byte (0 is 2^-127); one multiply: those it vouches exact (weights >= 2^-99)
    scales = np.arange(28, W.ONE_MUL_MAX_SCALE + 1) if one_mul else np.arange(0, 255)
    bytes_ = np.repeat(bytes_, len(scales), axis=0)  # [n, 4]
    scale = np.tile(scales, 256)[:, None].repeat(4, axis=1)
    # the factor multiplying the decoded value * 2^-126: the exact form's second one is the block scale 2^(s - 127);
    # the one-multiply form's only one 2^(s - 1 - SHIFT), which leaves the weights at 2^-SHIFT of their value
    factor_exponent = scale - 1 - W.ONE_MUL_SHIFT if one_mul else scale - 127
    factor = torch.ldexp(torch.ones(scale.shape, dtype=torch.float64), torch.from_numpy(factor_exponent))
    words = _words(bytes_)
    lo_asm, hi_asm = W.ptx_decode(one_mul, upper_bytes)
    table = torch.tensor(FP4_VALUES, dtype=torch.float64)
    weight_scale = torch.ldexp(torch.ones(scale.shape, dtype=torch.float64),
                               torch.from_numpy(scale - 127 - (W.ONE_MUL_SHIFT if one_mul else 0)))
    for asm, nibbles in ((lo_asm, bytes_ & 0xF), (hi_asm, bytes_ >> 4)):
        got = _decode(asm, words, _bf16_bits(factor))
        expected = _bf16_bits(table[torch.from_numpy(nibbles)] * weight_scale)
        bad = np.argwhere(got != expected)
        assert not len(bad), (f"{len(bad)} wrong: byte {bytes_[tuple(bad[0])]:#04x} scale {scale[tuple(bad[0])]} "
                              f"gives {got[tuple(bad[0])]:#06x}, expected {expected[tuple(bad[0])]:#06x}")


def test_the_two_spreads_differ_only_in_how_bytes_reach_the_lanes():
    """The upper-byte form is the low-halves form with other spreads and shifts: same masks, same multiplies."""
    for one_mul in (False, True):
        for low, high in zip(W.ptx_decode(one_mul, False), W.ptx_decode(one_mul, True)):
            same = lambda asm: [line for line in asm.splitlines() if not line.startswith(("prmt", "shl", "shr"))]  # noqa: E731
            assert same(low) == same(high)
            assert low != high


def test_the_emulator_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match="does not know"):
        run_ptx("mul.lo.u32 $0, $1, 3;", [None, np.zeros(1, np.uint32)])


@pytest.mark.parametrize("largest", [127, 200, 254, 20])
def test_fp16_decode_gives_the_reference_bits_and_flushes_only_below_its_range(largest):
    """GEMM1's fp16 decode (ASM 3) with the shift f16_shift picks for live scale bytes up to `largest`: exact for every
    byte at every scale within F16_SCALE_SPREAD below it, +-0 (never inf or NaN) for the scales further below, whose
    factor dequant sets to 0 (padding's all-zero blocks, scale byte 0, sit there)."""
    shift = W.f16_shift((max(0, largest - W.F16_SCALE_SPREAD), largest))
    scales = np.arange(0, largest + 1)
    bytes_ = np.repeat(EVERY_BYTE, len(scales), axis=0)
    scale = np.tile(scales, 256)[:, None].repeat(4, axis=1)
    in_range = scale >= largest - W.F16_SCALE_SPREAD
    # the factor multiplies the e4m3 value (the code's value * 2^-6): 2^(s - 121 - shift), 0 below the range
    factor = torch.where(torch.from_numpy(in_range), torch.ldexp(torch.ones(scale.shape, dtype=torch.float64),
                                                                  torch.from_numpy(scale - 121 - shift)), 0.0)
    table = torch.tensor(FP4_VALUES, dtype=torch.float64)
    weight_scale = torch.ldexp(torch.ones(scale.shape, dtype=torch.float64), torch.from_numpy(scale - 127 - shift))
    for asm, nibbles in zip(W.ptx_decode_f16(), (bytes_ & 0xF, bytes_ >> 4)):
        got = _decode(asm, _words(bytes_), _f16_bits(factor))
        value = table[torch.from_numpy(nibbles)]
        expected = _f16_bits(torch.where(torch.from_numpy(in_range), value * weight_scale, value * 0.0))
        bad = np.argwhere(got != expected)
        assert not len(bad), (f"{len(bad)} wrong: byte {bytes_[tuple(bad[0])]:#04x} scale {scale[tuple(bad[0])]} "
                              f"gives {got[tuple(bad[0])]:#06x}, expected {expected[tuple(bad[0])]:#06x}")


def test_f16_shift_takes_only_what_fp16_holds_exactly():
    assert W.f16_shift((127 - W.F16_SCALE_SPREAD, 127)) == 127 - 127 - 9
    assert W.f16_shift((126 - W.F16_SCALE_SPREAD, 127)) is None  # one binade too many
    assert W.f16_shift((250, 255)) is None  # 255 is E8M0's NaN
    assert W.f16_shift(None) is None  # nobody said


def test_mla_e4m3_conversion_gives_every_value():
    """MLA's fp8 KV conversion (mla_attend._ASM_E4M3X4_F16, checked on the GPU): every e4m3 byte in every position
    (NaN bytes excepted) to its fp16 value; it pins the emulator's cvt lane order to the one the GPU showed."""
    words = _words(EVERY_BYTE)
    out = run_ptx(mla_attend._ASM_E4M3X4_F16.value, [None, None, words])
    got = np.stack([out[0] & 0xFFFF, out[0] >> 16, out[1] & 0xFFFF, out[1] >> 16], axis=1)
    expected = _f16_bits(torch.from_numpy(EVERY_BYTE.astype(np.uint8)).view(torch.float8_e4m3fn).to(torch.float32))
    finite = (EVERY_BYTE & 0x7F) != 0x7F
    assert np.array_equal(got[finite], expected[finite])
