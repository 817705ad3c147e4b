"""MXFP4 weights in AITER's shuffled layouts, read inside a Triton program (the a16w4 MoE GEMMs in
rocbench.kernels.moe_a16w4): the per-row address bases of both layouts, one K step's packed bytes and E8M0 scales
(and a PTX prefetch of the next step's lines), and their decode to bf16 / fp16 / fp32 in natural K order.

Both layouts store a row's 32-value MX block as 16 contiguous bytes inside a 16-row strip (see
rocbench.formats.moe_layouts): addressing is a per-row base (layout dependent: the strip order and the scale tile
row) plus a per-K-block part that both share. The layout is a runtime argument, so every arithmetic operation after
the row bases is the same for both."""

from __future__ import annotations

import triton
import triton.language as tl


# ---------------------------------------------------------------------------------------------
# Address math (mirrors rocbench.formats.moe_layouts.weight_offset / scale_*_offset)
# ---------------------------------------------------------------------------------------------

@triton.jit
def w_row_base(e64, row, N, KPB, LAYOUT, GATE_UP: tl.constexpr):
    """int64 byte offset of the first byte of logical row `row` of expert e (strip base + row*16)."""
    strip = row // 16
    nl = row % 16
    if GATE_UP:
        half = N // 2
        is_up = row // half
        r = row - is_up * half
        strip = tl.where(LAYOUT == 1, (r // 16) * 2 + is_up, strip)
        nl = tl.where(LAYOUT == 1, r % 16, nl)
    return e64 * N * KPB + (strip * 16 * KPB + nl * 16).to(tl.int64)


@triton.jit
def s_row_part(e64, row, N, SC, LAYOUT, GATE_UP: tl.constexpr):
    """Row part of a shuffled-scale offset (SC = padded scale columns)."""
    g = e64 * N + row
    off = (g // 32) * 32 * SC + (g % 16) * 4 + (g % 32) // 16
    if GATE_UP:
        half = N // 2
        is_up = row // half
        r = row - is_up * half
        itl = (e64 * (N // 32) + r // 16) * 32 * SC + (r % 16) * 4 + is_up
        off = tl.where(LAYOUT == 1, itl, off)
    return off


@triton.jit
def s_col_part(c):
    """Column part of a shuffled-scale offset for K block c >= 0: (c // 8) * 256 + (c % 4) * 64 + ((c % 8) // 4) * 2,
    in shifts and masks (signed // and % cost a sign fix-up each, inside the K loop)."""
    return ((c >> 3) << 8) + ((c & 3) << 6) + ((c >> 1) & 2)


# ---------------------------------------------------------------------------------------------
# Dequantization
# ---------------------------------------------------------------------------------------------

@triton.jit
def _e8m0_factor(s):
    """E8M0 byte -> fp32 2^(s - 113) (= 2^(s-127) * 2^14, undoing the fp16 code trick).

    Exact for s <= 240 (|w| < 2^114); s in 241..254 saturates to inf; 0xFF is NaN.
    """
    si = s.to(tl.int32)
    bits = tl.where(si > 240, 0x7F800000, (si + 14) << 23)
    bits = tl.where(si == 255, 0x7FC00000, bits)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _fp4_nibble_as_f16(b32, SHIFT: tl.constexpr):
    """Nibble of each byte -> fp16 bit pattern of value * 2^-14 (exact, fp16 subnormal for 0.5).

    The nibble is moved to bits 28..31, an arithmetic shift right by 19 puts its exponent and
    mantissa bits (e1 e0 m) at fp16 bits 11..9 and copies the sign over bits 12..31; the mask
    keeps the sign at bit 15 and the three code bits.
    """
    v = ((b32 << SHIFT) >> 19) & 0x8E00
    return v.to(tl.int16).to(tl.float16, bitcast=True)


# PTX (sm_80+) for 4 packed fp4x2 bytes -> 4 bf16 values of one nibble each ($0, $1: bf16x2).
# prmt spreads bytes 0,1 (then 2,3) into the two 16-bit lanes; two shifts and a mask put the nibble's sign bit at
# bit 15 and its e1 e0 m bits at bf16 bits 8..6, which is the value times 2^-126 (exact, 0.5 being a bf16
# subnormal); two bf16x2 FMAs (+ -0.0) multiply by 2^126 and by the block scale 2^(s-127) ($3, $4). Same results
# as the generic path below (checked on the device; tests/ptx_emulator.py runs these strings on the CPU).
# Two spreads: each byte in its lane's low half (then both nibbles move left: sign by 12 / 8, code by 6 / 2), or
# with upper_bytes in its high half (the high nibble's sign is then in place, its code moves right by 6; the low
# nibble's sign left by 4, its code right by 2): one shift fewer per nibble pair, the same bits.
_ASM_FP4_BF16 = """
{{
.reg .b32 z, nz, c, t0, t1, a0, b0, a1, b1;
mov.b32 z, 0;
mov.b32 nz, 0x80008000;
mov.b32 c, 0x7E807E80;
prmt.b32 t0, $2, z, {spread01};
prmt.b32 t1, $2, z, {spread23};
shl.b32 a0, t0, {sign_shift};
{code_op} b0, t0, {code_shift};
and.b32 a0, a0, 0x80008000;
and.b32 b0, b0, 0x01C001C0;
or.b32 a0, a0, b0;
fma.rn.bf16x2 a0, a0, c, nz;
fma.rn.bf16x2 $0, a0, $3, nz;
shl.b32 a1, t1, {sign_shift};
{code_op} b1, t1, {code_shift};
and.b32 a1, a1, 0x80008000;
and.b32 b1, b1, 0x01C001C0;
or.b32 a1, a1, b1;
fma.rn.bf16x2 a1, a1, c, nz;
fma.rn.bf16x2 $1, a1, $4, nz;
}}
"""
# the fields of each spread for the low nibble and the high one
_LOW_HALVES = (dict(spread01="0x4140", spread23="0x4342", code_op="shl.b32", sign_shift=12, code_shift=6),
               dict(spread01="0x4140", spread23="0x4342", code_op="shl.b32", sign_shift=8, code_shift=2))
_HIGH_HALVES = (dict(spread01="0x1404", spread23="0x3424", code_op="shr.u32", sign_shift=4, code_shift=2),
                dict(spread01="0x1404", spread23="0x3424", code_op="shr.u32", sign_shift=0, code_shift=6))

# The one-multiply decode (dequant's ASM == 2): the same bits, then one bf16x2 multiply by 2^(s - 1 - SHIFT), which
# folds the 2^126 into the block scale. The decoded weights are then 2^-SHIFT of their value, and the GEMMs multiply
# their fp32 accumulators by 2^SHIFT (exact: the products and sums are the same numbers scaled by a power of two, so
# the results are bitwise those of the exact decode). The factor is a finite bf16 for scale bytes up to
# ONE_MUL_MAX_SCALE (block scales up to 2^33), and the weights stay exact down to scale byte 28 (2^-99); the caller
# vouches for the first (moe_a16w4's scale_max), below the second a weight under 6 * 2^-99 decodes inexactly.
ONE_MUL_SHIFT = 32
ONE_MUL_MAX_SCALE = 254 - 126 + ONE_MUL_SHIFT
_ONE_MUL_FACTOR_BIAS = tl.constexpr(126 - ONE_MUL_SHIFT)  # bf16 exponent field of 2^(s - 1 - SHIFT) is s + this
ONE_MUL_UNDO = tl.constexpr(2.0 ** ONE_MUL_SHIFT)  # what the accumulators of one-multiply weights are multiplied by
_ASM_FP4_BF16_ONE_MUL = "\n".join(line for line in _ASM_FP4_BF16.splitlines()
                                   if not any(c in line for c in ("a0, a0, c", "a1, a1, c", "mov.b32 c,")))


def ptx_decode(one_mul: bool, upper_bytes: bool) -> tuple[str, str]:
    """The (low nibble, high nibble) PTX of a decode form (dequant's ASM 1 or 2, and UPPER_BYTES)."""
    template = _ASM_FP4_BF16_ONE_MUL if one_mul else _ASM_FP4_BF16
    return tuple(template.format(**fields) for fields in (_HIGH_HALVES if upper_bytes else _LOW_HALVES))


_ASM_LO, _ASM_HI = (tl.constexpr(a) for a in ptx_decode(False, False))
_ASM_LO_ONE_MUL, _ASM_HI_ONE_MUL = (tl.constexpr(a) for a in ptx_decode(True, False))
_ASM_LO_UPPER, _ASM_HI_UPPER = (tl.constexpr(a) for a in ptx_decode(False, True))
_ASM_LO_ONE_MUL_UPPER, _ASM_HI_ONE_MUL_UPPER = (tl.constexpr(a) for a in ptx_decode(True, True))


# The fp16 decode (dequant's ASM == 3; MoeConfig.f16_gemm1, GEMM1 only): each nibble becomes an e4m3 byte of its
# value * 2^-6 (sign to bit 7, e1 e0 m to bits 4..2, so that code 1, 0.5, is an e4m3 subnormal), then one exact
# cvt.rn.f16x2.e4m3x2 per two values and one fp16x2 multiply by the block's factor 2^(s - 121 - shift), which leaves
# each weight at 2^-shift times its value (f16_shift picks the shift). Word-wide bit operations: 4 bytes at a time,
# no byte spread.
_ASM_FP4_F16 = """
{{
.reg .b32 a, b, e, h0, h1;
.reg .b16 e0, e1;
{make_e4m3}
mov.b32 {{e0, e1}}, e;
cvt.rn.f16x2.e4m3x2 h0, e0;
cvt.rn.f16x2.e4m3x2 h1, e1;
mul.rn.f16x2 $0, h0, $3;
mul.rn.f16x2 $1, h1, $4;
}}
"""
_ASM_LO_F16 = tl.constexpr(_ASM_FP4_F16.format(make_e4m3="""shl.b32 a, $2, 4;
shl.b32 b, $2, 2;
and.b32 a, a, 0x80808080;
and.b32 b, b, 0x1C1C1C1C;
or.b32 e, a, b;"""))
_ASM_HI_F16 = tl.constexpr(_ASM_FP4_F16.format(make_e4m3="""shr.u32 b, $2, 2;
and.b32 a, $2, 0x80808080;
and.b32 b, b, 0x1C1C1C1C;
or.b32 e, a, b;"""))
# Exact in fp16 (weights as 2^k * code value with -20 <= k <= 9: normal fp16 factors, no product below fp16's
# subnormal step or above 6 * 2^9) for every block whose scale byte is at most F16_SCALE_SPREAD below the largest;
# the largest block scale then lands at 2^9. Blocks further below flush to zero (their factor is 0): the caller takes
# this decode only where no block with a nonzero code lies there (f16_shift)
F16_SCALE_SPREAD = 29
_F16_TOP_EXPONENT = 9


def f16_shift(live_scales: tuple[int, int] | None) -> int | None:
    """The power of two the fp16 decode divides the weights by (its accumulators are multiplied back), given the
    smallest and largest scale byte of the blocks with a nonzero code; None where the decode would not be exact."""
    if live_scales is None:
        return None
    low, high = live_scales
    if high - low > F16_SCALE_SPREAD or high > 254:
        return None
    return high - 127 - _F16_TOP_EXPONENT


def f16_factor_bias(shift: int) -> int:
    """dequant's F16_BIAS for a shift: a block's factor 2^(s - 121 - shift) (the e4m3 value is the code's value
    times 2^-6) has the fp16 exponent field s - 106 - shift."""
    return -106 - shift


def ptx_decode_f16() -> tuple[str, str]:
    """The (low nibble, high nibble) PTX of the fp16 decode (dequant's ASM 3)."""
    return _ASM_LO_F16.value, _ASM_HI_F16.value


@triton.jit
def _bf16_factor(bits, wq):
    """Per-block bf16 factors from their bit patterns [BN, NB], broadcast over the block's bytes [BN, NB, 16]."""
    return tl.broadcast_to(bits.to(tl.int16).to(tl.bfloat16, bitcast=True)[:, :, None], wq.shape)


@triton.jit
def _ptx_nibbles(wq, f, LO: tl.constexpr, HI: tl.constexpr, F16: tl.constexpr):
    """Both nibbles of every byte by a PTX decode pair: 4 bytes and 4 factors in, 4 bf16 (F16: fp16) values out, per
    call (inline_asm_elementwise takes no dtype held in a constexpr, hence the flag)."""
    if F16:
        lo = tl.inline_asm_elementwise(LO, "=r,=r,r,r,r", [wq, f], dtype=tl.float16, is_pure=True, pack=4)
        hi = tl.inline_asm_elementwise(HI, "=r,=r,r,r,r", [wq, f], dtype=tl.float16, is_pure=True, pack=4)
    else:
        lo = tl.inline_asm_elementwise(LO, "=r,=r,r,r,r", [wq, f], dtype=tl.bfloat16, is_pure=True, pack=4)
        hi = tl.inline_asm_elementwise(HI, "=r,=r,r,r,r", [wq, f], dtype=tl.bfloat16, is_pure=True, pack=4)
    return lo, hi


@triton.jit
def dequant(wq, sc, DTYPE: tl.constexpr, ASM: tl.constexpr, SPLIT_PAIRS: tl.constexpr = False,
            UPPER_BYTES: tl.constexpr = False, F16_BIAS: tl.constexpr = 0):
    """wq uint8 [BN, NB, 16], sc uint8 [BN, NB] -> weights [BN, NB*32] in DTYPE, natural K order
    (byte j of a block holds elements 2j (low nibble) and 2j+1 (high nibble)), or with SPLIT_PAIRS each block's even
    K then its odd K (split_pairs puts the other operand in that order). ASM (bf16, NVIDIA only): 1 the PTX decode,
    2 its one-multiply form, whose weights are 2^-ONE_MUL_SHIFT of their value (see ONE_MUL_SHIFT); UPPER_BYTES
    the PTX's spread of each byte into its lane's high half (same bits); 3 the fp16 decode, whose weights are
    2^-shift of their value (f16_shift), with F16_BIAS = f16_factor_bias(shift). It is a constant because, as a runtime
    argument, it made Triton feed the MMA from shared memory (offline 490 -> 581 instructions per K step)."""
    if ASM == 3:  # fp16 bits of the factor 2^(s - 121 - shift); 0 (flush) for a scale below the exact range
        f = tl.maximum(sc.to(tl.int32) + F16_BIAS, 0) << 10
        f = tl.broadcast_to(f.to(tl.int16).to(tl.float16, bitcast=True)[:, :, None], wq.shape)
        lo, hi = _ptx_nibbles(wq, f, _ASM_LO_F16, _ASM_HI_F16, True)
    elif ASM:
        si = sc.to(tl.int32)
        if ASM == 2:  # bf16 bits of 2^(s - 1 - SHIFT): finite for s <= ONE_MUL_MAX_SCALE
            f = _bf16_factor((si + _ONE_MUL_FACTOR_BIAS) << 7, wq)
            if UPPER_BYTES:
                lo, hi = _ptx_nibbles(wq, f, _ASM_LO_ONE_MUL_UPPER, _ASM_HI_ONE_MUL_UPPER, False)
            else:
                lo, hi = _ptx_nibbles(wq, f, _ASM_LO_ONE_MUL, _ASM_HI_ONE_MUL, False)
        else:
            f = _bf16_factor(tl.where(si == 0, 0x0040, tl.where(si == 255, 0x7FC0, si << 7)), wq)
            if UPPER_BYTES:
                lo, hi = _ptx_nibbles(wq, f, _ASM_LO_UPPER, _ASM_HI_UPPER, False)
            else:
                lo, hi = _ptx_nibbles(wq, f, _ASM_LO, _ASM_HI, False)
    else:
        b32 = wq.to(tl.int32)
        f = _e8m0_factor(sc)[:, :, None]
        lo = (_fp4_nibble_as_f16(b32, 28).to(tl.float32) * f).to(DTYPE)
        hi = (_fp4_nibble_as_f16(b32, 24).to(tl.float32) * f).to(DTYPE)
    pairs = tl.join(lo, hi)  # [BN, NB, 16, 2]: byte j's two values side by side, natural K order
    if SPLIT_PAIRS:  # each block's 16 even-K values, then its 16 odd ones: no interleaving of the decoded halves
        pairs = tl.permute(pairs, (0, 1, 3, 2))
    return tl.reshape(pairs, [wq.shape[0], wq.shape[1] * 32])


@triton.jit
def split_pairs(v, SPLIT_PAIRS: tl.constexpr):
    """The other operand [M, NB*32] in dequant's K order: with SPLIT_PAIRS each MX block's even-K values, then its
    odd ones (MoeConfig.split_pairs)."""
    if SPLIT_PAIRS:
        rows: tl.constexpr = v.shape[0]
        blocks: tl.constexpr = v.shape[1] // 32
        v = tl.reshape(tl.permute(tl.reshape(v, [rows, blocks, 16, 2]), (0, 1, 3, 2)), [rows, blocks * 32])
    return v


# ---------------------------------------------------------------------------------------------
# One K step: loads and prefetch
# ---------------------------------------------------------------------------------------------

@triton.jit
def scale_rows(s_ptr, row_part, WORDS: tl.constexpr):
    """Per-row scale addressing: (int32 word pointer, bit shift of the row's byte in it) with WORDS, else
    (byte pointer, 0). A row's byte offset row_part has the scale tile's 'np' bit (which 16-row half, or
    gate/up) in its low two bits."""
    if WORDS:
        rows = s_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + (row_part >> 2)
        shift = (row_part & 3) * 8
    else:
        rows = s_ptr + row_part
        shift = row_part * 0
    return rows, shift


@triton.jit
def _scale_ptrs(s_rows, blk, WORDS: tl.constexpr):
    """[BN, NB] pointers to the scales of K blocks blk for the given rows, or with WORDS to the aligned 32-bit
    words holding them (byte kp*2 + np of the word at (c // 8) * 256 + (c % 4) * 64 + row bytes, see s_col_part)."""
    if WORDS:
        ptrs = s_rows[:, None] + (((blk >> 3) << 6) + ((blk & 3) << 4))[None, :]
    else:
        ptrs = s_rows[:, None] + s_col_part(blk)[None, :]
    return ptrs


@triton.jit
def weight_step(w_rows, s_rows, s_shift, ks, NB: tl.constexpr, WORDS: tl.constexpr):
    """The packed bytes [BN, NB, 16] and scales [BN, NB] of K step ks for the given rows.

    With WORDS the scales are read as the words holding them: Triton pipelines (cp.async) only loads of 4 bytes
    or more, and byte loads leave one memory latency per K step inside the loop."""
    blk = ks * NB + tl.arange(0, NB)
    wq = tl.load(w_rows[:, None, None] + ((blk * 256)[None, :, None] + tl.arange(0, 16)[None, None, :]))
    sc = tl.load(_scale_ptrs(s_rows, blk, WORDS))
    if WORDS:
        sc = ((sc >> (s_shift[:, None] + (((blk >> 2) & 1) << 4)[None, :])) & 0xFF).to(tl.uint8)
    return wq, sc


# PTX (NVIDIA only): prefetch the line holding $1 into L1 or L2 where the flag $2 is set; the output is a dummy
_ASM_PREFETCH = """
{{
.reg .pred p;
setp.ne.s32 p, $2, 0;
@p prefetch.global.{level} [$1];
mov.u32 $0, 0;
}}
"""
_ASM_PREFETCH_L1 = tl.constexpr(_ASM_PREFETCH.format(level="L1"))
_ASM_PREFETCH_L2 = tl.constexpr(_ASM_PREFETCH.format(level="L2"))


@triton.jit
def _prefetch_lines(ptrs, flags, LEVEL: tl.constexpr):
    asm: tl.constexpr = _ASM_PREFETCH_L1 if LEVEL == 1 else _ASM_PREFETCH_L2
    tl.inline_asm_elementwise(asm, "=r,l,r", [ptrs, flags], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def prefetch_step(w_rows, s_rows, rows, ks, NB: tl.constexpr, WORDS: tl.constexpr, LEVEL: tl.constexpr):
    """Prefetch (MoeConfig.prefetch_hint) the weight and scale lines of K step ks for the given rows. A 16-row
    strip's block is 256 contiguous bytes (rows 0 and 8 start its lines); a 16-row group's scales of one block
    lie within 64 bytes (its first row names them)."""
    blk = ks * NB + tl.arange(0, NB)
    w_ptrs = w_rows[:, None] + (blk * 256)[None, :]
    _prefetch_lines(w_ptrs, tl.broadcast_to(((rows % 8) == 0).to(tl.int32)[:, None], w_ptrs.shape), LEVEL)
    s_ptrs = _scale_ptrs(s_rows, blk, WORDS)
    _prefetch_lines(s_ptrs, tl.broadcast_to(((rows % 16) == 0).to(tl.int32)[:, None], s_ptrs.shape), LEVEL)
