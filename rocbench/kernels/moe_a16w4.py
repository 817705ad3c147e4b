"""Fused a16w4 MoE in Triton: bf16/fp16 activations x MXFP4 weights stored in AITER's layouts.

Pipeline (all launches have static grids and no host syncs, so it can be CUDA-graph captured):
  0. route: group the T*topk (token, slot) pairs by expert into blocks of at most BM rows.
     Small batches (T*topk <= 64) do this inside the GEMM programs ("inline"); larger ones run
     one single-program align kernel that writes a block table (counting sort, stable).
  1. GEMM1: per (block, 32..64 intermediate columns, K split): the gate and up rows of w13 are
     read straight from the shuffled bytes (16-byte loads: one MX block of one row), the fp4
     codes are decoded with integer bit tricks into fp16 bit patterns (exact), multiplied by
     2^(s - 113) from the E8M0 byte, cast to the activation dtype and fed to tl.dot with fp32
     accumulation. The weights are the MMA's M side (decode has few rows per expert).
     Without a K split the epilogue adds the bias, applies silu / gpt-oss swiglu and stores
     the activation in the activation dtype; with a split it stores fp32 partial sums.
  2. GEMM2: same for w2; with a GEMM1 K split, its prologue sums the partials in split order,
     adds the bias and applies the activation. Epilogue adds b2 and stores fp32 y per pair.
  3. combine: out[t] = sum_k topk_weight[t, k] * y[t, k] in fixed k order (no float atomics).

Layout handling: both layouts store a row's 32-value MX block as 16 contiguous bytes inside a
16-row strip (see rocbench.suites.moe.layouts), so addressing splits into a per-row base
(layout dependent: the strip order and the scale tile row) plus a per-K-block part (shared).
The layout is a runtime argument: only the per-program row bases differ, every arithmetic
operation is the same, so both layouts give bitwise identical results.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import torch
import triton
import triton.language as tl

from rocbench.suites.moe import layouts as _lay

LAYOUT_IDS = {_lay.SEPARATED: 0, _lay.INTERLEAVE: 1}
ACTIVATION_IDS = {"silu": 0, "swiglu": 1}
_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}
INLINE_ROUTE_MAX_PAIRS = 64


# ---------------------------------------------------------------------------------------------
# Address math (mirrors rocbench.suites.moe.layouts.weight_offset / scale_*_offset)
# ---------------------------------------------------------------------------------------------

@triton.jit
def _w_row_base(e64, row, N, KPB, LAYOUT, GATE_UP: tl.constexpr):
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
def _s_row_part(e64, row, N, SC, LAYOUT, GATE_UP: tl.constexpr):
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
def _s_col_part(c):
    return (c // 8) * 256 + (c % 4) * 64 + ((c % 8) // 4) * 2


# ---------------------------------------------------------------------------------------------
# Dequantization and activation
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
# prmt spreads bytes 0,1 (then 2,3) into the two 16-bit halves; the nibble's sign bit goes to
# bit 15 and its e1 e0 m bits to bf16 bits 8..6, which is the value times 2^-126 (exact, 0.5
# being a bf16 subnormal); two bf16x2 FMAs (+ -0.0) multiply by 2^126 and by the block scale
# 2^(s-127) ($3, $4). Same results as the generic path below (checked on the device).
_ASM_FP4_BF16 = """
{{
.reg .b32 z, nz, c, t0, t1, a0, b0, a1, b1;
mov.b32 z, 0;
mov.b32 nz, 0x80008000;
mov.b32 c, 0x7E807E80;
prmt.b32 t0, $2, z, 0x4140;
prmt.b32 t1, $2, z, 0x4342;
shl.b32 a0, t0, {sign_shift};
shl.b32 b0, t0, {bits_shift};
and.b32 a0, a0, 0x80008000;
and.b32 b0, b0, 0x01C001C0;
or.b32 a0, a0, b0;
fma.rn.bf16x2 a0, a0, c, nz;
fma.rn.bf16x2 $0, a0, $3, nz;
shl.b32 a1, t1, {sign_shift};
shl.b32 b1, t1, {bits_shift};
and.b32 a1, a1, 0x80008000;
and.b32 b1, b1, 0x01C001C0;
or.b32 a1, a1, b1;
fma.rn.bf16x2 a1, a1, c, nz;
fma.rn.bf16x2 $1, a1, $4, nz;
}}
"""
_ASM_LO = tl.constexpr(_ASM_FP4_BF16.format(sign_shift=12, bits_shift=6))
_ASM_HI = tl.constexpr(_ASM_FP4_BF16.format(sign_shift=8, bits_shift=2))


@triton.jit
def _dequant(wq, sc, DTYPE: tl.constexpr, ASM: tl.constexpr):
    """wq uint8 [BN, NB, 16], sc uint8 [BN, NB] -> (even-k, odd-k) operands [BN, NB*16] in DTYPE."""
    if ASM:  # bf16 only, CUDA only
        si = sc.to(tl.int32)
        fbits = tl.where(si == 0, 0x0040, tl.where(si == 255, 0x7FC0, si << 7))
        f = tl.broadcast_to(fbits.to(tl.int16).to(tl.bfloat16, bitcast=True)[:, :, None], wq.shape)
        lo = tl.inline_asm_elementwise(_ASM_LO, "=r,=r,r,r,r", [wq, f], dtype=tl.bfloat16,
                                       is_pure=True, pack=4)
        hi = tl.inline_asm_elementwise(_ASM_HI, "=r,=r,r,r,r", [wq, f], dtype=tl.bfloat16,
                                       is_pure=True, pack=4)
    else:
        b32 = wq.to(tl.int32)
        f = _e8m0_factor(sc)[:, :, None]
        lo = (_fp4_nibble_as_f16(b32, 28).to(tl.float32) * f).to(DTYPE)
        hi = (_fp4_nibble_as_f16(b32, 24).to(tl.float32) * f).to(DTYPE)
    return (tl.reshape(lo, [wq.shape[0], wq.shape[1] * 16]),
            tl.reshape(hi, [wq.shape[0], wq.shape[1] * 16]))


@triton.jit
def _activation(g, u, ACT, alpha, limit):
    """ACT 0: silu(g) * u; ACT 1: gpt-oss swiglu with clamp limit and alpha. fp32 in/out."""
    if ACT == 1:
        g = tl.minimum(g, limit)
        u = tl.minimum(tl.maximum(u, -limit), limit)
        out = g / (1.0 + tl.exp(-alpha * g)) * (u + 1.0)
    else:
        out = g / (1.0 + tl.exp(-g)) * u
    return out


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------

@triton.jit
def _block_rows(pid_b, ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr, blk_n_ptr, P, E,
                BM: tl.constexpr, INLINE: tl.constexpr, P_PAD: tl.constexpr):
    """Rows (pair indices) of block pid_b: returns (nrows, expert, pair[BM], row mask[BM])."""
    offs_m = tl.arange(0, BM)
    if INLINE:
        # Program pid_b owns a block iff pair pid_b is the (j*BM)-th pair (in pair order) routed
        # to its expert; the block holds that expert's pairs ranked j*BM .. j*BM+BM-1.
        offs_p = tl.arange(0, P_PAD)
        ids = tl.load(ids_ptr + offs_p, mask=offs_p < P, other=-1)
        e = tl.load(ids_ptr + pid_b)
        same = (ids == e) & (offs_p < P)
        same_i = same.to(tl.int32)
        rank = tl.cumsum(same_i, axis=0) - 1
        my_rank = tl.sum(tl.where(offs_p < pid_b, same_i, 0), axis=0)
        sel = same[None, :] & (rank[None, :] == (my_rank + offs_m)[:, None])
        pair = tl.sum(tl.where(sel, offs_p[None, :], 0), axis=1)
        m_mask = tl.sum(sel.to(tl.int32), axis=1) > 0
        leader = ((my_rank % BM) == 0) & (e >= 0) & (e < E)
        nrows = tl.where(leader, tl.sum(m_mask.to(tl.int32), axis=0), 0)
    else:
        nrows = tl.load(blk_n_ptr + pid_b)
        e = tl.load(blk_e_ptr + pid_b)
        row0 = tl.load(blk_row0_ptr + pid_b)
        m_mask = offs_m < nrows
        pair = tl.load(sorted_ptr + row0 + offs_m, mask=m_mask, other=0)
    return nrows, e, pair, m_mask


@triton.jit
def _onehot(ids, offs_e, E):
    """[E_PAD, C] int32: 1 where pair c goes to expert e; ids outside [0, E) match nothing."""
    return ((ids[None, :] == offs_e[:, None]) & (offs_e < E)[:, None]).to(tl.int32)


@triton.jit
def _moe_align_kernel(ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr, blk_n_ptr, P, E, MB,
                      BM: tl.constexpr, E_PAD: tl.constexpr, C: tl.constexpr, MBC: tl.constexpr):
    """One program: stable counting sort of pairs by expert + a table of BM-row blocks."""
    offs_e = tl.arange(0, E_PAD)
    counts = tl.zeros([E_PAD], dtype=tl.int32)
    for c0 in range(0, P, C):
        offs = c0 + tl.arange(0, C)
        ids = tl.load(ids_ptr + offs, mask=offs < P, other=-1)
        counts += tl.sum(_onehot(ids, offs_e, E), axis=1)
    seg_start = tl.cumsum(counts, axis=0) - counts
    nblk = (counts + BM - 1) // BM
    blk_end = tl.cumsum(nblk, axis=0)
    blk_start = blk_end - nblk
    # scatter pair ids to their sorted position: expert segment start + rank within expert
    seen = tl.zeros([E_PAD], dtype=tl.int32)
    for c0 in range(0, P, C):
        offs = c0 + tl.arange(0, C)
        ids = tl.load(ids_ptr + offs, mask=offs < P, other=-1)
        onehot = _onehot(ids, offs_e, E)
        before = tl.cumsum(onehot, axis=1) - 1 + (seg_start + seen)[:, None]
        pos = tl.sum(onehot * before, axis=0)
        valid = (offs < P) & (ids >= 0) & (ids < E)
        tl.store(sorted_ptr + pos, offs, mask=valid)
        seen += tl.sum(onehot, axis=1)
    # block table: block b belongs to the expert e with blk_start[e] <= b < blk_end[e]
    for b0 in range(0, MB, MBC):
        offs_b = b0 + tl.arange(0, MBC)
        inb = ((blk_start[:, None] <= offs_b[None, :]) & (offs_b[None, :] < blk_end[:, None])).to(tl.int32)
        has = tl.sum(inb, axis=0) > 0
        e_b = tl.sum(inb * offs_e[:, None], axis=0)
        j = offs_b - tl.sum(inb * blk_start[:, None], axis=0)
        row0 = tl.sum(inb * seg_start[:, None], axis=0) + j * BM
        nrows = tl.minimum(tl.sum(inb * counts[:, None], axis=0) - j * BM, BM)
        bmask = offs_b < MB
        tl.store(blk_e_ptr + offs_b, tl.where(has, e_b, -1), mask=bmask)
        tl.store(blk_row0_ptr + offs_b, tl.where(has, row0, 0), mask=bmask)
        tl.store(blk_n_ptr + offs_b, tl.where(has, nrows, 0), mask=bmask)


# ---------------------------------------------------------------------------------------------
# GEMM1: x @ w13^T (+ b13, activation)
# ---------------------------------------------------------------------------------------------

@triton.jit(do_not_specialize=["P", "KSTEPS", "KS_PER_SPLIT"])
def _moe_gemm1_kernel(
    x_ptr, stride_x, w_ptr, s_ptr, b_ptr,
    ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr, blk_n_ptr,
    part_ptr, act_ptr,
    P, E, TOPK, INTER, KPB, SC, KSTEPS, KS_PER_SPLIT, LAYOUT, HAS_BIAS, ACT, alpha, limit,
    BM: tl.constexpr, BN: tl.constexpr, NB: tl.constexpr, FUSE_ACT: tl.constexpr,
    INLINE: tl.constexpr, P_PAD: tl.constexpr, DTYPE: tl.constexpr, DOT_PREC: tl.constexpr,
    ASM: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_s = tl.program_id(2)
    nrows, e, pair, m_mask = _block_rows(pid_b, ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr,
                                         blk_n_ptr, P, E, BM, INLINE, P_PAD)
    if nrows == 0:
        return
    e64 = e.to(tl.int64)
    N = 2 * INTER
    offs_n = pid_n * BN + tl.arange(0, BN)
    row_g = offs_n
    row_u = offs_n + INTER
    wg_rows = w_ptr + _w_row_base(e64, row_g, N, KPB, LAYOUT, True)
    wu_rows = w_ptr + _w_row_base(e64, row_u, N, KPB, LAYOUT, True)
    sg_rows = s_ptr + _s_row_part(e64, row_g, N, SC, LAYOUT, True)
    su_rows = s_ptr + _s_row_part(e64, row_u, N, SC, LAYOUT, True)
    x_rows = x_ptr + (pair // TOPK).to(tl.int64) * stride_x
    offs_c = tl.arange(0, NB)
    offs_i = tl.arange(0, 16)
    offs_j = tl.arange(0, NB * 16)
    acc_g = tl.zeros([BN, BM], dtype=tl.float32)
    acc_u = tl.zeros([BN, BM], dtype=tl.float32)
    ks0 = pid_s * KS_PER_SPLIT
    ks1 = tl.minimum(ks0 + KS_PER_SPLIT, KSTEPS)
    for ks in range(ks0, ks1):
        blk = ks * NB + offs_c
        w_off = (blk * 256)[None, :, None] + offs_i[None, None, :]
        s_off = _s_col_part(blk)[None, :]
        wq_g = tl.load(wg_rows[:, None, None] + w_off)
        wq_u = tl.load(wu_rows[:, None, None] + w_off)
        s_g = tl.load(sg_rows[:, None] + s_off)
        s_u = tl.load(su_rows[:, None] + s_off)
        k_even = ks * (NB * 32) + 2 * offs_j
        xe = tl.load(x_rows[None, :] + k_even[:, None], mask=m_mask[None, :], other=0.0)
        xo = tl.load(x_rows[None, :] + (k_even + 1)[:, None], mask=m_mask[None, :], other=0.0)
        g_lo, g_hi = _dequant(wq_g, s_g, DTYPE, ASM)
        acc_g = tl.dot(g_lo, xe, acc_g, input_precision=DOT_PREC)
        acc_g = tl.dot(g_hi, xo, acc_g, input_precision=DOT_PREC)
        u_lo, u_hi = _dequant(wq_u, s_u, DTYPE, ASM)
        acc_u = tl.dot(u_lo, xe, acc_u, input_precision=DOT_PREC)
        acc_u = tl.dot(u_hi, xo, acc_u, input_precision=DOT_PREC)
    pair64 = pair.to(tl.int64)[None, :]
    store_mask = m_mask[None, :]
    if FUSE_ACT:
        if HAS_BIAS:
            acc_g += tl.load(b_ptr + e64 * N + row_g).to(tl.float32)[:, None]
            acc_u += tl.load(b_ptr + e64 * N + row_u).to(tl.float32)[:, None]
        a = _activation(acc_g, acc_u, ACT, alpha, limit)
        tl.store(act_ptr + pair64 * INTER + offs_n[:, None], a.to(DTYPE), mask=store_mask)
    else:
        base = part_ptr + ((pid_s * P + pair64) * 2) * INTER + offs_n[:, None]
        tl.store(base, acc_g, mask=store_mask)
        tl.store(base + INTER, acc_u, mask=store_mask)


# ---------------------------------------------------------------------------------------------
# GEMM2: act @ w2^T + b2  -> y[pair, :] (fp32)
# ---------------------------------------------------------------------------------------------

@triton.jit
def _act_operand(act_ptr, part_ptr, b13_ptr, e64, pair64, k, m_mask, P, INTER, SPLIT1, HAS_BIAS,
                 ACT, alpha, limit, FUSE_ACT: tl.constexpr, DTYPE: tl.constexpr):
    """Activation columns k ([J]) of the block's pairs as a [J, BM] dot operand."""
    mask = m_mask[None, :]
    if FUSE_ACT:
        a = tl.load(act_ptr + pair64[None, :] * INTER + k[:, None], mask=mask, other=0.0)
    else:
        g = tl.zeros([k.shape[0], pair64.shape[0]], dtype=tl.float32)
        u = tl.zeros([k.shape[0], pair64.shape[0]], dtype=tl.float32)
        for s in range(SPLIT1):  # fixed order: deterministic
            base = part_ptr + ((s * P + pair64[None, :]) * 2) * INTER + k[:, None]
            g += tl.load(base, mask=mask, other=0.0)
            u += tl.load(base + INTER, mask=mask, other=0.0)
        if HAS_BIAS:
            g += tl.load(b13_ptr + e64 * 2 * INTER + k).to(tl.float32)[:, None]
            u += tl.load(b13_ptr + e64 * 2 * INTER + INTER + k).to(tl.float32)[:, None]
        a = _activation(g, u, ACT, alpha, limit).to(DTYPE)
    return a


@triton.jit
def _inline_block_count(ids_ptr, P, E, BM: tl.constexpr, P_PAD: tl.constexpr):
    """Number of blocks the inline routing creates (pairs whose same-expert rank % BM == 0)."""
    offs_p = tl.arange(0, P_PAD)
    ids = tl.load(ids_ptr + offs_p, mask=offs_p < P, other=-1)
    earlier_same = (ids[:, None] == ids[None, :]) & (offs_p[None, :] < offs_p[:, None])
    rank = tl.sum(earlier_same.to(tl.int32), axis=1)
    lead = ((rank % BM) == 0) & (ids >= 0) & (ids < E) & (offs_p < P)
    return tl.sum(lead.to(tl.int32), axis=0)


@triton.jit
def _combine_tile(y_ptr, tw_ptr, ids_ptr, out_ptr, offs_n, T, TOPK, HID, E):
    """out[t, offs_n] = sum_k w[t, k] * y[t*TOPK + k, offs_n] for all tokens, fixed k order.
    y was written by other programs: read it from L2 (.cg), not a possibly stale L1."""
    for t in range(T):
        acc = tl.zeros([offs_n.shape[0]], dtype=tl.float32)
        for k in range(TOPK):
            p = t * TOPK + k
            e = tl.zeros([offs_n.shape[0]], dtype=tl.int32) + tl.load(ids_ptr + p)
            valid = (e >= 0) & (e < E)
            w = tl.where(valid, tl.load(tw_ptr + p).to(tl.float32), 0.0)
            y = tl.load(y_ptr + p * HID + offs_n, mask=valid, other=0.0, cache_modifier=".cg")
            acc += w * y
        tl.store(out_ptr + t * HID + offs_n, acc.to(out_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["P", "SPLIT1", "T"])
def _moe_gemm2_kernel(
    act_ptr, part_ptr, b13_ptr, w_ptr, s_ptr, b2_ptr,
    ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr, blk_n_ptr, y_ptr,
    cnt_ptr, tw_ptr, out_ptr, T, TOPK,
    P, E, INTER, HID, KPB, SC, KSTEPS, SPLIT1, LAYOUT, HAS_BIAS, ACT, alpha, limit,
    BM: tl.constexpr, BN: tl.constexpr, NB: tl.constexpr, FUSE_ACT: tl.constexpr,
    INLINE: tl.constexpr, P_PAD: tl.constexpr, DTYPE: tl.constexpr, DOT_PREC: tl.constexpr,
    ASM: tl.constexpr, FUSED_COMBINE: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    nrows, e, pair, m_mask = _block_rows(pid_b, ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr,
                                         blk_n_ptr, P, E, BM, INLINE, P_PAD)
    if nrows == 0:
        return
    e64 = e.to(tl.int64)
    pair64 = pair.to(tl.int64)
    offs_n = pid_n * BN + tl.arange(0, BN)
    w_rows = w_ptr + _w_row_base(e64, offs_n, HID, KPB, LAYOUT, False)
    s_rows = s_ptr + _s_row_part(e64, offs_n, HID, SC, LAYOUT, False)
    offs_c = tl.arange(0, NB)
    offs_i = tl.arange(0, 16)
    offs_j = tl.arange(0, NB * 16)
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    for ks in range(0, KSTEPS):
        blk = ks * NB + offs_c
        wq = tl.load(w_rows[:, None, None] + ((blk * 256)[None, :, None] + offs_i[None, None, :]))
        sc = tl.load(s_rows[:, None] + _s_col_part(blk)[None, :])
        k_even = ks * (NB * 32) + 2 * offs_j
        ae = _act_operand(act_ptr, part_ptr, b13_ptr, e64, pair64, k_even, m_mask, P, INTER,
                          SPLIT1, HAS_BIAS, ACT, alpha, limit, FUSE_ACT, DTYPE)
        ao = _act_operand(act_ptr, part_ptr, b13_ptr, e64, pair64, k_even + 1, m_mask, P, INTER,
                          SPLIT1, HAS_BIAS, ACT, alpha, limit, FUSE_ACT, DTYPE)
        w_lo, w_hi = _dequant(wq, sc, DTYPE, ASM)
        acc = tl.dot(w_lo, ae, acc, input_precision=DOT_PREC)
        acc = tl.dot(w_hi, ao, acc, input_precision=DOT_PREC)
    if HAS_BIAS:
        acc += tl.load(b2_ptr + e64 * HID + offs_n).to(tl.float32)[:, None]
    tl.store(y_ptr + pair64[None, :] * HID + offs_n[:, None], acc, mask=m_mask[None, :])
    if FUSED_COMBINE:
        # The last block to finish this hidden tile combines it (a per-tile counter; the
        # barrier orders every thread's y stores before the release of the atomic).
        target = _inline_block_count(ids_ptr, P, E, BM, P_PAD)
        tl.debug_barrier()
        done = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if done == target - 1:
            _combine_tile(y_ptr, tw_ptr, ids_ptr, out_ptr, offs_n, T, TOPK, HID, E)
            tl.atomic_xchg(cnt_ptr + pid_n, 0, sem="relaxed", scope="gpu")  # ready for the next call


# ---------------------------------------------------------------------------------------------
# combine: out[t] = sum_k w[t, k] * y[t*K + k]
# ---------------------------------------------------------------------------------------------

@triton.jit
def _moe_combine_kernel(y_ptr, tw_ptr, ids_ptr, out_ptr, HID, E, TOPK, BH: tl.constexpr):
    t = tl.program_id(0)
    offs = tl.program_id(1) * BH + tl.arange(0, BH)
    mask = offs < HID
    acc = tl.zeros([BH], dtype=tl.float32)
    for k in range(TOPK):  # fixed order: deterministic
        p = t * TOPK + k
        e = tl.zeros([BH], dtype=tl.int32) + tl.load(ids_ptr + p)  # broadcast: block-shaped mask
        valid = (e >= 0) & (e < E)
        w = tl.where(valid, tl.load(tw_ptr + p).to(tl.float32), 0.0)
        y = tl.load(y_ptr + p.to(tl.int64) * HID + offs, mask=mask & valid, other=0.0)
        acc += w * y
    tl.store(out_ptr + t.to(tl.int64) * HID + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Debug kernels: read a whole shuffled tensor back with the GEMMs' address helpers
# ---------------------------------------------------------------------------------------------

@triton.jit
def _gather_weight_kernel(w_ptr, out_ptr, N, KPB, LAYOUT, GATE_UP: tl.constexpr,
                          BR: tl.constexpr, NB: tl.constexpr):
    e64 = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BR + tl.arange(0, BR)
    bases = w_ptr + _w_row_base(e64, rows, N, KPB, LAYOUT, GATE_UP)
    offs_c = tl.arange(0, NB)
    offs_i = tl.arange(0, 16)
    for c0 in range(0, KPB // 16, NB):
        blk = c0 + offs_c
        v = tl.load(bases[:, None, None] + (blk * 256)[None, :, None] + offs_i[None, None, :])
        dst = (e64 * N + rows)[:, None, None] * KPB + (blk * 16)[None, :, None] + offs_i[None, None, :]
        tl.store(out_ptr + dst, v)


@triton.jit
def _gather_scale_kernel(s_ptr, out_ptr, N, KB, SC, LAYOUT, GATE_UP: tl.constexpr,
                         BR: tl.constexpr, BC: tl.constexpr):
    e64 = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BR + tl.arange(0, BR)
    cols = tl.arange(0, BC)
    src = _s_row_part(e64, rows, N, SC, LAYOUT, GATE_UP)[:, None] + _s_col_part(cols)[None, :]
    mask = (cols < KB)[None, :]
    v = tl.load(s_ptr + src, mask=mask)
    tl.store(out_ptr + (e64 * N + rows)[:, None] * KB + cols[None, :], v, mask=mask)


def debug_read_weight(w_shuffled: torch.Tensor, layout: str, gate_up: bool) -> torch.Tensor:
    """Unshuffle [E, N, K/2] bytes with the kernel's address helpers (tests the index math)."""
    e, n, kpb = w_shuffled.shape
    out = torch.empty_like(w_shuffled)
    nb = 2 if (kpb // 16) % 2 == 0 else 1
    _gather_weight_kernel[(e, n // 16)](w_shuffled, out, n, kpb, LAYOUT_IDS[layout], gate_up,
                                        BR=16, NB=nb)
    return out


def debug_read_scale(s_shuffled: torch.Tensor, layout: str, gate_up: bool, experts: int,
                     n: int, k_blocks: int) -> torch.Tensor:
    """Unshuffle a 2-D shuffled scale to [E, N, K/32] with the kernel's address helpers."""
    out = torch.empty(experts, n, k_blocks, dtype=torch.uint8, device=s_shuffled.device)
    bc = max(16, triton.next_power_of_2(k_blocks))
    _gather_scale_kernel[(experts, n // 16)](s_shuffled, out, n, k_blocks, s_shuffled.shape[1],
                                             LAYOUT_IDS[layout], gate_up, BR=16, BC=bc)
    return out


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MoeConfig:
    """Tiling / launch choices. Every field changes only speed, except split1 and the BM/inline
    choice, which can change rounding (never between layouts: both always use the same plan)."""
    bm: int  # rows (token, slot pairs) per expert block: 16, 32 or 64
    bn1: int  # intermediate columns per GEMM1 program (gate and up each)
    bn2: int  # hidden columns per GEMM2 program
    nb1: int  # MX blocks (32 values) per K step in GEMM1
    nb2: int  # MX blocks per K step in GEMM2
    split1: int  # GEMM1 K split (1: activation fused in GEMM1's epilogue)
    inline: bool  # route inside the GEMMs instead of running the align kernel
    warps1: int = 4
    warps2: int = 4
    stages1: int = 3
    stages2: int = 3
    asm_dequant: bool = False  # PTX fp4->bf16 (bf16 on CUDA only; ignored elsewhere)
    fused_combine: bool = False  # last GEMM2 block per hidden tile does the top-k sum (inline only)


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _largest_dividing(n: int, options) -> int:
    for o in options:
        if n % o == 0:
            return o
    raise ValueError(f"{n} is not divisible by any of {options}")


def plan_moe(tokens: int, topk: int, experts: int, inter: int, hidden: int, num_sms: int = 132) -> MoeConfig:
    """Pick a config from shapes only (static: safe for CUDA graphs)."""
    pairs = tokens * topk
    active = max(1, min(experts, pairs))  # upper bound of experts hit
    rows_per_expert = pairs / active
    bm = 16
    while bm < 64 and bm < 1.5 * rows_per_expert:
        bm *= 2
    bn1 = _largest_dividing(inter, (32, 16))
    bn2 = _largest_dividing(hidden, (64, 32, 16))
    nb1 = _largest_dividing(hidden // 32, (4, 2, 1))
    nb2 = _largest_dividing(inter // 32, (4, 2, 1))
    ksteps1 = hidden // 32 // nb1
    programs1 = (inter // bn1) * active
    split1 = 1
    if pairs <= 512:  # decode: split K until GEMM1 has a few waves of programs
        while split1 < 8 and programs1 * split1 < 3 * num_sms and ksteps1 // (split1 * 2) >= 2:
            split1 *= 2
    return MoeConfig(bm=bm, bn1=bn1, bn2=bn2, nb1=nb1, nb2=nb2, split1=split1,
                     inline=pairs <= INLINE_ROUTE_MAX_PAIRS)


def _check_config(cfg: MoeConfig, inter: int, hidden: int) -> None:
    if inter % cfg.bn1 or hidden % cfg.bn2:
        raise ValueError(f"config {cfg} does not tile inter={inter} / hidden={hidden}")
    if (hidden // 32) % cfg.nb1 or (inter // 32) % cfg.nb2:
        raise ValueError(f"config {cfg}: nb1/nb2 must divide the K blocks")
    if cfg.bm not in (16, 32, 64) or cfg.split1 < 1:
        raise ValueError(f"bad config {cfg}")


def moe_a16w4_unsupported_reason(layout: str, experts: int, inter: int, hidden: int) -> str | None:
    """Why this kernel cannot run a shape in `layout` (layout tiles, or its own 16-col tiles)."""
    r = _lay.layout_unsupported_reason(layout, experts, 2 * inter, hidden, True)
    if r:
        return f"w13: {r}"
    r = _lay.layout_unsupported_reason(layout, experts, hidden, inter, False)
    if r:
        return f"w2: {r}"
    if inter % 16:
        return f"kernel tiles the intermediate dim by 16; inter={inter}"
    return None


def moe_a16w4(x, w13_packed_shuffled, w13_scale_shuffled, w2_packed_shuffled, w2_scale_shuffled,
              topk_weights, topk_ids, *, layout, experts, inter, hidden, activation, b13=None,
              b2=None, alpha=1.702, limit=7.0, out=None, config: MoeConfig | None = None):
    """Fused MXFP4 MoE. x [T, H] bf16/fp16 (fp32 works too); weights/scales as returned by
    rocbench.moe.shuffle_weight / shuffle_scale for ``layout``; topk_* [T, k].
    Returns [T, H] in x.dtype (``out`` if given)."""
    if layout not in LAYOUT_IDS:
        raise ValueError(f"unknown layout {layout!r}")
    if activation not in ACTIVATION_IDS:
        raise ValueError(f"unknown activation {activation!r}")
    reason = moe_a16w4_unsupported_reason(layout, experts, inter, hidden)
    if reason:
        raise ValueError(reason)
    if x.dtype not in _TL_DTYPES or x.dim() != 2 or x.shape[1] != hidden:
        raise ValueError(f"x must be [T, {hidden}] bf16/fp16/fp32, got {tuple(x.shape)} {x.dtype}")
    tokens, topk = topk_ids.shape
    if x.shape[0] != tokens or tuple(topk_weights.shape) != (tokens, topk):
        raise ValueError("x, topk_weights and topk_ids disagree on the token count / topk")
    w13 = w13_packed_shuffled.view(torch.uint8)
    w2 = w2_packed_shuffled.view(torch.uint8)
    s13 = w13_scale_shuffled.view(torch.uint8)
    s2 = w2_scale_shuffled.view(torch.uint8)
    if tuple(w13.shape) != (experts, 2 * inter, hidden // 2) or tuple(w2.shape) != (experts, hidden, inter // 2):
        raise ValueError(f"weight shapes {tuple(w13.shape)}, {tuple(w2.shape)} do not match "
                         f"E={experts}, inter={inter}, hidden={hidden}")
    if tuple(s13.shape) != _lay.shuffled_scale_shape(layout, experts, 2 * inter, hidden // 32) or \
            tuple(s2.shape) != _lay.shuffled_scale_shape(layout, experts, hidden, inter // 32):
        raise ValueError(f"scale shapes {tuple(s13.shape)}, {tuple(s2.shape)} do not match {layout}")
    for t in (w13, w2, s13, s2):
        if not t.is_contiguous():
            raise ValueError("weights and scales must be contiguous")

    device = x.device
    num_sms = _num_sms(device.index or 0) if device.type == "cuda" else 132
    cfg = config or plan_moe(tokens, topk, experts, inter, hidden, num_sms)
    _check_config(cfg, inter, hidden)
    pairs = tokens * topk
    x = x.contiguous()
    ids = topk_ids.reshape(-1)
    if ids.dtype != torch.int32:
        ids = ids.to(torch.int32)
    ids = ids.contiguous()
    tw = topk_weights.reshape(-1).to(torch.float32).contiguous()
    if out is None:
        out = torch.empty(tokens, hidden, dtype=x.dtype, device=device)
    if pairs == 0:
        return out
    dtype = _TL_DTYPES[x.dtype]
    dot_prec = "ieee" if x.dtype == torch.float32 else None
    has_bias = int(b13 is not None)
    if (b13 is None) != (b2 is None):
        raise ValueError("pass both b13 and b2, or neither")
    b13_t = b13.contiguous() if b13 is not None else x  # dummy pointer when unused
    b2_t = b2.contiguous() if b2 is not None else x

    # routing
    i32 = dict(dtype=torch.int32, device=device)
    if cfg.inline:
        grid_b = pairs
        p_pad = max(16, triton.next_power_of_2(pairs))
        sorted_ids = blk_e = blk_row0 = blk_n = ids  # unused
    else:
        grid_b = min(pairs, triton.cdiv(pairs, cfg.bm) + min(experts, pairs))
        p_pad = 16
        sorted_ids = torch.empty(pairs, **i32)
        blk_e = torch.empty(grid_b, **i32)
        blk_row0 = torch.empty(grid_b, **i32)
        blk_n = torch.empty(grid_b, **i32)
        e_pad = triton.next_power_of_2(experts)
        chunk = max(16, min(triton.next_power_of_2(pairs), max(16, 16384 // e_pad)))
        _moe_align_kernel[(1,)](ids, sorted_ids, blk_e, blk_row0, blk_n, pairs, experts, grid_b,
                                BM=cfg.bm, E_PAD=e_pad, C=chunk, MBC=min(chunk, 64), num_warps=8)

    fuse = cfg.split1 == 1
    ksteps1 = hidden // 32 // cfg.nb1
    ks_per_split = triton.cdiv(ksteps1, cfg.split1)
    split1 = triton.cdiv(ksteps1, ks_per_split)
    if fuse:
        act = torch.empty(pairs, inter, dtype=x.dtype, device=device)
        part = act  # unused
    else:
        part = torch.empty(split1, pairs, 2, inter, dtype=torch.float32, device=device)
        act = part  # unused
    layout_id = LAYOUT_IDS[layout]
    act_id = ACTIVATION_IDS[activation]
    use_asm = (cfg.asm_dequant and x.dtype == torch.bfloat16 and device.type == "cuda"
               and not _interpreting())
    _moe_gemm1_kernel[(inter // cfg.bn1, grid_b, split1)](
        x, x.stride(0), w13, s13, b13_t, ids, sorted_ids, blk_e, blk_row0, blk_n, part, act,
        pairs, experts, topk, inter, hidden // 2, s13.shape[1], ksteps1, ks_per_split, layout_id,
        has_bias, act_id, float(alpha), float(limit),
        BM=cfg.bm, BN=cfg.bn1, NB=cfg.nb1, FUSE_ACT=fuse, INLINE=cfg.inline, P_PAD=p_pad,
        DTYPE=dtype, DOT_PREC=dot_prec, ASM=use_asm, num_warps=cfg.warps1, num_stages=cfg.stages1)

    y = torch.empty(pairs, hidden, dtype=torch.float32, device=device)
    n_tiles2 = hidden // cfg.bn2
    counters = _combine_counters(device, n_tiles2) if (cfg.fused_combine and cfg.inline) else None
    _moe_gemm2_kernel[(n_tiles2, grid_b)](
        act, part, b13_t, w2, s2, b2_t, ids, sorted_ids, blk_e, blk_row0, blk_n, y,
        counters if counters is not None else ids, tw, out, tokens, topk,
        pairs, experts, inter, hidden, inter // 2, s2.shape[1], inter // 32 // cfg.nb2, split1,
        layout_id, has_bias, act_id, float(alpha), float(limit),
        BM=cfg.bm, BN=cfg.bn2, NB=cfg.nb2, FUSE_ACT=fuse, INLINE=cfg.inline, P_PAD=p_pad,
        DTYPE=dtype, DOT_PREC=dot_prec, ASM=use_asm, FUSED_COMBINE=counters is not None,
        num_warps=cfg.warps2, num_stages=cfg.stages2)

    if counters is None:
        bh = min(1024, triton.next_power_of_2(hidden))
        _moe_combine_kernel[(tokens, triton.cdiv(hidden, bh))](y, tw, ids, out, hidden, experts, topk, BH=bh)
    return out


_COUNTERS: dict = {}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _combine_counters(device, n):
    """Zeroed per-device counters for the fused combine; the kernel resets them after use.
    Allocated outside graph capture only (returns None while capturing for the first time,
    which falls back to the separate combine kernel). Not safe for concurrent streams."""
    key = (device.type, device.index)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf


def weight_bytes_read(topk_ids: torch.Tensor, experts: int, inter: int, hidden: int) -> int:
    """Bytes of packed weights + scales of the experts actually selected (what a perfect kernel
    must read once). Uses a host sync; call it outside timed regions."""
    used = torch.unique(topk_ids.reshape(-1))
    n_used = int(((used >= 0) & (used < experts)).sum())
    per_expert = 2 * inter * hidden // 2 + 2 * inter * hidden // 32 + hidden * inter // 2 + hidden * inter // 32
    return n_used * per_expert
