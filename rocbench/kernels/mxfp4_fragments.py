"""MXFP4 weights re-tiled in the order Hopper's wgmma takes its register operand (MoeConfig.fragments): each
thread loads exactly the bytes of its own MMA fragment, 32 contiguous bytes per 64-row tile and K step, and decodes
them in place, where reading AITER's layouts goes through shared memory to rearrange the packed bytes (offline sm_90
SASS, Triton 3.6: 4 STS.128, 4 LDSM and 14 barriers per K step of GEMM1's loop).

A tile is 64 weight rows x one K step of 128 values (4 MX blocks), for one warp group (4 warps). In wgmma's register
A operand, warp w holds rows 16w + g and 16w + g + 8 (g = lane // 4) and, of each 16-value K slice j, the values
16j + 8h + 2t + e (t = lane % 4, h and e in {0, 1}). Storage per tile and K step:
  weights: 4096 bytes, [half 2, warp 4, g 8, t 4, 16 bytes]: thread (w, g, t) owns 8 words, word 4 * half + i being
           K slice j = 4 * half + i, its 8 values (rows g and g + 8, h and e) bit-packed as below;
  scales:  256 bytes, [warp 4, g 8, row half 2, MX block 4]: the E8M0 bytes of rows 16w + g (+ 8), blocks 0..3.

The bits of a word are arranged so that four 16-bit lane pairs, each one value in a bf16 lane with its sign at bit
15 and its e1 e0 m bits at bits 8..6 (the value times 2^-126, as mxfp4_weights' decode makes it), come out of one
rotation and one mask each, or (the last) one rotation and two masks merged: 9 SASS integer instructions per 8
values, against 22 for the byte-per-lane decode. The register of output k holds the pair (row half k % 2, K half
k // 2), lanes e 0 and 1. Both layouts are re-tiled from their unshuffled weights, so they read the same bytes."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocbench.kernels.mxfp4_weights import _ONE_MUL_FACTOR_BIAS, _e8m0_factor, _prefetch_lines

TILE_ROWS = 64  # weight rows per tile: one warp group's wgmma M
STEP_K = 128  # values per K step: 4 MX blocks
STEP_BYTES = TILE_ROWS * STEP_K // 2
STEP_SCALES = TILE_ROWS * STEP_K // 32
FRAG_ROWS, FRAG_K = tl.constexpr(TILE_ROWS), tl.constexpr(STEP_K)  # the same, for kernels

_LANE_MASK = 0x81C081C0  # per 16-bit lane: sign to bit 15, e1 e0 m to bits 8..6
# output k = rotl(word, ROTATIONS[k]) & _LANE_MASK for k < 3; the last mixes a rotation by 8 (bit 6 of each lane)
# with the word's own bits 7, 8, 15 (and 23, 24, 31). An exhaustive search over rotations and shifts, at most two per
# output, found no packing with fewer instructions
ROTATIONS = (6, 12, 2)
_LAST_ROTATION, _LAST_ROTATED, _LAST_KEPT = 8, 0x00400040, 0x81808180
# the same, for the portable decode
_ROT0, _ROT1, _ROT2, _ROT3 = (tl.constexpr(r) for r in (*ROTATIONS, _LAST_ROTATION))
_ROTATED3, _KEPT3 = tl.constexpr(_LAST_ROTATED), tl.constexpr(_LAST_KEPT)

PTX_DECODE = f"""
{{
.reg .b32 nz, r, t;
mov.b32 nz, 0x80008000;
shf.l.wrap.b32 r, $4, $4, {ROTATIONS[0]};
and.b32 r, r, {_LANE_MASK:#010x};
fma.rn.bf16x2 $0, r, $5, nz;
shf.l.wrap.b32 r, $4, $4, {ROTATIONS[1]};
and.b32 r, r, {_LANE_MASK:#010x};
fma.rn.bf16x2 $1, r, $6, nz;
shf.l.wrap.b32 r, $4, $4, {ROTATIONS[2]};
and.b32 r, r, {_LANE_MASK:#010x};
fma.rn.bf16x2 $2, r, $5, nz;
shf.l.wrap.b32 r, $4, $4, {_LAST_ROTATION};
and.b32 r, r, {_LAST_ROTATED:#010x};
and.b32 t, $4, {_LAST_KEPT:#010x};
or.b32 r, r, t;
fma.rn.bf16x2 $3, r, $6, nz;
}}
"""
"""Outputs $0..$3 (bf16x2): the word's four value pairs times the factor of their row ($5 for outputs 0 and 2, row
g; $6 for 1 and 3, row g + 8), each 2^(s - 1 - SHIFT) as mxfp4_weights' one-multiply decode takes it."""
_PTX_DECODE = tl.constexpr(PTX_DECODE)


def _lane_bit_sources() -> list[dict[int, int]]:
    """For each output register: word bit feeding each of its lane bits (15, 8, 7, 6 and 31, 24, 23, 22)."""
    lane_bits = [b for b in range(32) if _LANE_MASK >> b & 1]
    sources = [{d: (d - r) % 32 for d in lane_bits} for r in ROTATIONS]
    sources.append({d: (d - _LAST_ROTATION) % 32 if _LAST_ROTATED >> d & 1 else d for d in lane_bits})
    return sources


_SOURCES = _lane_bit_sources()
# a nibble's bits (m, e0, e1, sign = bits 0..3) go to lane bits 6, 7, 8, 15
_NIBBLE_TO_LANE = (6, 7, 8, 15)


def pack_words(nibbles: torch.Tensor) -> torch.Tensor:
    """nibbles [..., 4, 2] (output register, lane) uint8 e2m1 codes -> int32 words [...] in the bit order above."""
    n = nibbles.to(torch.int64)
    word = torch.zeros(n.shape[:-2], dtype=torch.int64, device=n.device)
    for k, sources in enumerate(_SOURCES):
        for lane in range(2):
            for bit, lane_bit in enumerate(_NIBBLE_TO_LANE):
                word |= ((n[..., k, lane] >> bit) & 1) << sources[lane_bit + 16 * lane]
    return torch.where(word >= 2 ** 31, word - 2 ** 32, word).to(torch.int32)


def unpack_words(words: torch.Tensor) -> torch.Tensor:
    """The inverse of pack_words: int32 words [...] -> nibbles [..., 4, 2]."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    out = torch.zeros(*words.shape, 4, 2, dtype=torch.int64, device=words.device)
    for k, sources in enumerate(_SOURCES):
        for lane in range(2):
            for bit, lane_bit in enumerate(_NIBBLE_TO_LANE):
                out[..., k, lane] |= ((w >> sources[lane_bit + 16 * lane]) & 1) << bit
    return out.to(torch.uint8)


def fragments_unsupported_reason(rows: int, k: int) -> str | None:
    if rows % TILE_ROWS or k % STEP_K:
        return f"fragment tiles need rows % {TILE_ROWS} == 0 and K % {STEP_K} == 0 (rows {rows}, K {k})"
    return None


def to_fragments(packed: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Natural MXFP4 weights -> fragment order. packed [E, N, K/2] uint8 (byte j of a row holds values 2j, low
    nibble, and 2j + 1), scales [E, N, K/32] uint8 -> (weights [E, N/64, K/128, 4096], scales [E, N/64, K/128, 256])
    uint8 (see the module's docstring). Done once per weight set, on the weights' device, an expert at a time (the
    bit packing works on int64 values: 8 bytes per weight of the expert at hand)."""
    experts, rows, half_k = packed.shape
    k = 2 * half_k
    reason = fragments_unsupported_reason(rows, k)
    if reason:
        raise ValueError(reason)
    tiles, steps = rows // TILE_ROWS, k // STEP_K
    weights = torch.empty(experts, tiles, steps, STEP_BYTES, dtype=torch.uint8, device=packed.device)
    for e in range(experts):
        p = packed[e].view(torch.uint8)
        codes = torch.stack((p & 0xF, p >> 4), dim=-1)
        # value (row, k) -> [tile, w, rh, g, step, half, i, h, t, e]: row = 64 tile + 16 w + 8 rh + g, k = 128 step +
        # 16 j + 8 h + 2 t + e with K slice j = 4 half + i
        v = codes.reshape(tiles, 4, 2, 8, steps, 2, 4, 2, 4, 2)
        # -> [tile, step, half, w, g, t, i, (h, rh) = output register, e = lane]
        v = v.permute(0, 4, 5, 1, 3, 8, 6, 7, 2, 9).reshape(tiles, steps, 2, 4, 8, 4, 4, 4, 2)
        weights[e] = pack_words(v).view(torch.uint8).reshape(tiles, steps, STEP_BYTES)
    s = scales.view(torch.uint8).reshape(experts, tiles, 4, 2, 8, steps, 4)  # [E, tile, w, rh, g, step, block]
    s = s.permute(0, 1, 5, 2, 4, 3, 6).reshape(experts, tiles, steps, STEP_SCALES)
    return weights, s.contiguous()


def from_fragments(weights: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of to_fragments (for tests): back to packed [E, N, K/2] and scales [E, N, K/32]."""
    experts, tiles, steps, _ = weights.shape
    words = weights.contiguous().view(torch.int32).reshape(experts, tiles, steps, 2, 4, 8, 4, 4)
    v = unpack_words(words).reshape(experts, tiles, steps, 2, 4, 8, 4, 4, 2, 2, 2)
    v = v.permute(0, 1, 4, 9, 5, 2, 3, 7, 8, 6, 10).reshape(experts, tiles * TILE_ROWS, steps * STEP_K)
    packed = (v[..., 0::2] | (v[..., 1::2] << 4)).to(torch.uint8)
    s = scales.reshape(experts, tiles, steps, 4, 8, 2, 4).permute(0, 1, 3, 5, 4, 2, 6)
    return packed, s.reshape(experts, tiles * TILE_ROWS, steps * 4).contiguous()


# ---------------------------------------------------------------------------------------------
# Device side
# ---------------------------------------------------------------------------------------------

@triton.jit
def _stack4(a0, a1, a2, a3):
    """[W, 8, 4, 8] x 4 -> [W, 8, 4, 8, 4] with element p = a_p."""
    return tl.reshape(tl.join(tl.join(a0, a2), tl.join(a1, a3)), [a0.shape[0], 8, 4, 8, 4])


@triton.jit
def _generic_lanes(words, f, k: tl.constexpr, DTYPE: tl.constexpr):
    """Output register k of each word as (lane 0, lane 1) values in DTYPE, times f (fp32, 2^(s - 113): the fp16
    trick's 2^-14 undone, as mxfp4_weights' portable decode)."""
    if k == 0:
        r = (words << _ROT0) | (words >> (32 - _ROT0))
    elif k == 1:
        r = (words << _ROT1) | (words >> (32 - _ROT1))
    elif k == 2:
        r = (words << _ROT2) | (words >> (32 - _ROT2))
    else:
        r = (((words << _ROT3) | (words >> (32 - _ROT3))) & _ROTATED3) | (words & _KEPT3)
    # lane bits 15, 8..6 -> the fp16 bits of the value times 2^-14 (sign, then e1 e0 m at 11..9)
    lo = (((r >> 15) & 1) << 15) | (((r >> 6) & 7) << 9)
    hi = (((r >> 31) & 1) << 15) | (((r >> 22) & 7) << 9)
    lo = (lo.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32) * f).to(DTYPE)
    hi = (hi.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32) * f).to(DTYPE)
    return lo, hi


@triton.jit
def _decode(wq, sc, DTYPE: tl.constexpr, ASM: tl.constexpr):
    """wq uint8 [W, 8, 4, 8, 4] (warp, g, t, K slice, byte), sc uint8 [W, 8, 4, 4, 2] (warp, g, t, block, row half)
    -> (out0, out1) [W, 8, 4, 8, 4] in DTYPE: element p of out0 is register p // 2, lane p % 2; of out1 register
    2 + p // 2. ASM (bf16, NVIDIA): the PTX decode with one multiply per pair (weights 2^-ONE_MUL_SHIFT of their
    value, as mxfp4_weights' ASM 2); else exact values from integer and fp32 operations."""
    W: tl.constexpr = wq.shape[0]
    if ASM:
        f = ((sc.to(tl.int32) + _ONE_MUL_FACTOR_BIAS) << 7).to(tl.int16).to(tl.bfloat16, bitcast=True)
        # factor of element (slice j, p): block j // 2, row half p // 2
        f = tl.broadcast_to(f[:, :, :, :, None, :, None], [W, 8, 4, 4, 2, 2, 2])
        f = tl.reshape(f, [W, 8, 4, 8, 4])
        out0, out1 = tl.inline_asm_elementwise(_PTX_DECODE, "=r,=r,=r,=r,r,r,r", [wq, f],
                                               dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
    else:
        shifts = tl.arange(0, 4) * 8
        words = tl.sum(wq.to(tl.uint32) << shifts[None, None, None, None, :], axis=4)  # [W, 8, 4, 8]
        f = _e8m0_factor(sc)  # [W, 8, 4, 4 blocks, 2 row halves]
        f = tl.reshape(tl.broadcast_to(f[:, :, :, :, None, :], [W, 8, 4, 4, 2, 2]), [W, 8, 4, 8, 2])
        f0, f1 = tl.split(f)  # the factors of row half 0 and 1
        l00, h00 = _generic_lanes(words, f0, 0, DTYPE)
        l01, h01 = _generic_lanes(words, f1, 1, DTYPE)
        l10, h10 = _generic_lanes(words, f0, 2, DTYPE)
        l11, h11 = _generic_lanes(words, f1, 3, DTYPE)
        out0 = _stack4(l00, h00, l01, h01)
        out1 = _stack4(l10, h10, l11, h11)
    return out0, out1


@triton.jit
def fragment_tile(e64, tile, TILES, KSTEPS):
    """The index of a tile's K step 0 among all tiles' steps (fragment_load's `first`)."""
    return (e64 * TILES + tile) * KSTEPS


@triton.jit
def fragment_load(w_ptr, s_ptr, first, first_hi, ks, WORDS: tl.constexpr, W: tl.constexpr):
    """K step ks's bytes of a tile (fragment_tile's `first`) for W warps (4: one warp group; 8: warps 4-7 take the tile
    at first_hi, stacked under the first), as loaded: each thread's 32 weight bytes and 8 scale bytes, for
    fragment_decode. WORDS: as 32-bit words (8 and 2), for a loop that carries them a step ahead in registers
    (MoeConfig.prefetch): Triton keeps a loop-carried word whole, where it spreads byte elements one per register and
    packs them again (offline GEMM1 loop 321 instructions against 509). Without a carry, bytes decode with fewer
    instructions (324 against 338)."""
    # the tensors' dims run (t, g, warp, ...) so that the coalesced layout puts lanes on t and g and warps on warp
    t = tl.arange(0, 4)[:, None, None, None, None]
    g = tl.arange(0, 8)[None, :, None, None, None]
    w = tl.arange(0, W)[None, None, :, None, None]
    half = tl.arange(0, 2)[None, None, None, :, None]
    step = tl.where(w < 4, first, first_hi) + ks  # [1, 1, W, 1, 1]: each warp group's own tile
    t4 = tl.arange(0, 4)[:, None, None, None]
    g4 = tl.arange(0, 8)[None, :, None, None]
    w4 = tl.arange(0, W)[None, None, :, None]
    step4 = tl.where(w4 < 4, first, first_hi) + ks
    if WORDS:
        words = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
        wq = tl.load(words + (step * 1024 + t * 4 + g * 16 + (w % 4) * 128 + half * 512
                              + tl.arange(0, 4)[None, None, None, None, :]))
        scale_words = s_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
        sc = tl.load(scale_words + (step4 * 64 + t4 * 0 + g4 * 2 + (w4 % 4) * 16 + tl.arange(0, 2)[None, None, None, :]))
    else:
        wq = tl.load(w_ptr + (step * 4096 + t * 16 + g * 64 + (w % 4) * 512 + half * 2048
                              + tl.arange(0, 16)[None, None, None, None, :]))
        sc = tl.load(s_ptr + (step4 * 256 + t4 * 0 + g4 * 8 + (w4 % 4) * 64 + tl.arange(0, 8)[None, None, None, :]))
    return wq, sc


@triton.jit
def _bytes_of(words):
    """int32 words [..., n] -> their bytes [..., 4 n] (uint8, the lowest first)."""
    shifts = tl.arange(0, 4) * 8
    b = ((words[:, :, :, :, None] >> shifts[None, None, None, None, :]) & 0xFF).to(tl.uint8)
    return b


@triton.jit
def fragment_decode(wq, sc, DTYPE: tl.constexpr, ASM: tl.constexpr, WORDS: tl.constexpr):
    """fragment_load's bytes (WORDS: its words) -> the weights [16 W rows, 128 K] in DTYPE, in the register layout of
    wgmma's A operand (W warps), natural K order. With ASM they are 2^-ONE_MUL_SHIFT of their value."""
    W: tl.constexpr = wq.shape[2]
    if WORDS:
        wq = _bytes_of(tl.reshape(wq, [4, 8, W, 8]))
        sc = _bytes_of(sc)
    wq = tl.reshape(tl.permute(tl.reshape(wq, [4, 8, W, 2, 4, 4]), (2, 1, 0, 3, 4, 5)), [W, 8, 4, 8, 4])
    sc = tl.permute(tl.reshape(sc, [4, 8, W, 2, 4]), (2, 1, 0, 4, 3))  # [warp, g, t, block, row half]
    out0, out1 = _decode(wq, sc, DTYPE, ASM)
    v = tl.reshape(tl.join(out0, out1), [W, 8, 4, 8, 2, 2, 2])  # [warp, g, t, j, row half, e, K half]
    v = tl.permute(v, (0, 4, 1, 3, 6, 2, 5))  # [warp, row half, g, j, K half, t, e]
    return tl.reshape(v, [16 * W, 128])


@triton.jit
def _prefetch_tile_step(w_ptr, s_ptr, first, ks, LEVEL: tl.constexpr):
    """A PTX prefetch (MoeConfig.prefetch_hint) of a tile's K step ks: its 32 weight lines and 2 scale lines."""
    lines = tl.arange(0, 32)
    _prefetch_lines(w_ptr + (first + ks) * 4096 + lines * 128, tl.full([32], 1, tl.int32), LEVEL)
    _prefetch_lines(s_ptr + (first + ks) * 256 + lines * 128, (lines < 2).to(tl.int32), LEVEL)


@triton.jit
def prefetch_fragment_step(w_ptr, s_ptr, first, first_hi, ks, LEVEL: tl.constexpr, W: tl.constexpr):
    """The prefetch of K step ks of what fragment_load reads for W warps: the tile at first (and with W 8 the one
    at first_hi)."""
    _prefetch_tile_step(w_ptr, s_ptr, first, ks, LEVEL)
    if W == 8:
        _prefetch_tile_step(w_ptr, s_ptr, first_hi, ks, LEVEL)
