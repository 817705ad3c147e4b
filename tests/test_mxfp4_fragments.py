"""MXFP4 weights in wgmma's fragment order (rocbench.kernels.mxfp4_fragments, MoeConfig.fragments): the re-tiling and
its bit packing round-trip, the PTX decode (run by tests/ptx_emulator.py) gives every packed value, and the device
function that loads and decodes a K step gives the MXFP4 reference values in natural order under Triton's
interpreter, both its portable decode and the PTX one (the interpreter runs the inline asm through the emulator)."""

import contextlib

import numpy as np
import pytest
import torch

from rocbench.formats.mxfp4 import FP4_VALUES, dequantize_mxfp4
from rocbench.kernels import mxfp4_fragments as F
from rocbench.kernels import mxfp4_weights as W
from tests.helpers import needs_interpreter
from tests.ptx_emulator import inline_asm_emulated, run_ptx


def _weights(experts=2, rows=128, k=256, low=100, high=140, seed=0):
    g = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (experts, rows, k // 2), dtype=torch.uint8, generator=g)
    scales = torch.randint(low, high, (experts, rows, k // 32), dtype=torch.uint8, generator=g)
    return packed, scales


def test_fragments_round_trip_and_reject_shapes_they_cannot_tile():
    packed, scales = _weights()
    weights, frag_scales = F.to_fragments(packed, scales)
    assert weights.shape == (2, 2, 2, F.STEP_BYTES) and frag_scales.shape == (2, 2, 2, F.STEP_SCALES)
    back, back_scales = F.from_fragments(weights, frag_scales)
    assert torch.equal(back, packed) and torch.equal(back_scales, scales)
    # every byte moved: the re-tiling is not the identity
    assert not torch.equal(weights.reshape(-1), packed.reshape(2, 2, 64, 2, 64).permute(0, 1, 3, 2, 4).reshape(-1))
    with pytest.raises(ValueError, match="rows % 64"):
        F.to_fragments(packed[:, :96], scales[:, :96])
    assert F.fragments_unsupported_reason(2944, 3072) is None
    assert F.fragments_unsupported_reason(2880, 2880) is not None  # unpadded gpt-oss: K is not a multiple of 128


def test_word_packing_uses_every_bit_once():
    sources = [src for per_output in F._SOURCES for src in per_output.values()]
    assert sorted(sources) == list(range(32))
    nibbles = torch.randint(0, 16, (4096, 4, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(F.unpack_words(F.pack_words(nibbles)), nibbles)


def test_ptx_decode_gives_every_value_in_every_register():
    # every nibble in every (register, lane) slot, the others random; factors 2^(s - 1 - SHIFT) at every scale the
    # one-multiply form vouches for, different for the two row halves
    g = torch.Generator().manual_seed(2)
    scales = np.arange(28, W.ONE_MUL_MAX_SCALE + 1)
    n = 16 * len(scales)
    nibbles = torch.randint(0, 16, (8, n, 4, 2), dtype=torch.uint8, generator=g)
    for slot in range(8):
        nibbles[slot, :, slot // 2, slot % 2] = torch.arange(n) % 16
    nibbles = nibbles.reshape(-1, 4, 2)
    s0 = np.tile(np.repeat(scales, 16), 8)
    s1 = np.roll(s0, 7)
    bits = lambda s: ((s + 126 - W.ONE_MUL_SHIFT) << 7).astype(np.uint32)  # noqa: E731  bf16 2^(s - 1 - SHIFT)
    words = F.pack_words(nibbles).numpy().view(np.uint32)
    out = run_ptx(F.PTX_DECODE, [None] * 4 + [words, bits(s0) * 0x10001, bits(s1) * 0x10001])
    table = torch.tensor(FP4_VALUES, dtype=torch.float64)
    for register in range(4):
        s = s0 if register % 2 == 0 else s1
        scale = torch.ldexp(torch.ones(len(s), dtype=torch.float64), torch.from_numpy(s - 127 - W.ONE_MUL_SHIFT))
        for lane in range(2):
            want = (table[nibbles[:, register, lane].long()] * scale).to(torch.bfloat16).view(torch.int16)
            got = (out[register] >> (16 * lane)) & 0xFFFF
            assert np.array_equal(got, want.numpy().astype(np.uint32) & 0xFFFF), (register, lane)


def _decode_tiles(weights, frag_scales, asm: bool) -> torch.Tensor:
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(w_ptr, s_ptr, out_ptr, TILES, KSTEPS, K, ASM: tl.constexpr):
        e64 = tl.program_id(0).to(tl.int64)
        tile = tl.program_id(1)
        ks = tl.program_id(2)
        first = F.fragment_tile(e64, tile, TILES, KSTEPS)
        dtype: tl.constexpr = tl.bfloat16 if ASM else tl.float32
        wq, sc = F.fragment_load(w_ptr, s_ptr, first, first, ks, False, 4)  # one warp group's tile, as loaded
        v = F.fragment_decode(wq, sc, dtype, ASM, False).to(tl.float32)
        if ASM:
            v = v * W.ONE_MUL_UNDO
        rows = (e64 * TILES + tile) * 64 + tl.arange(0, 64)
        tl.store(out_ptr + rows[:, None] * K + ks * 128 + tl.arange(0, 128)[None, :], v)

    experts, tiles, steps, _ = weights.shape
    out = torch.empty(experts, tiles * 64, steps * 128)
    kernel[(experts, tiles, steps)](weights, frag_scales, out, tiles, steps, steps * 128, ASM=asm)
    return out


@needs_interpreter()
@pytest.mark.parametrize("asm", [False, True], ids=["portable", "ptx-emulated"])
def test_fragment_step_decodes_the_reference_values_in_natural_order(asm):
    # the scales the one-multiply form takes, from 34 up: below it some of its bf16 weights are subnormal, which the
    # interpreter's bf16 -> fp32 conversion gets wrong (the emulator test above covers 28 up, exactly)
    packed, scales = _weights(low=34, high=W.ONE_MUL_MAX_SCALE + 1)
    weights, frag_scales = F.to_fragments(packed, scales)
    with inline_asm_emulated() if asm else contextlib.nullcontext():
        got = _decode_tiles(weights, frag_scales, asm)
    want = dequantize_mxfp4(packed, scales)
    assert torch.equal(got, want)
