"""Fused a16w4 MoE in Triton: bf16/fp16 activations x MXFP4 weights stored in AITER's layouts.

Pipeline (static grids, no host syncs: CUDA-graph capturable; deterministic):
  0. route: group the T*topk (token, slot) pairs by expert into blocks of at most BM rows.
     Small batches (T*topk <= 64) do this inside the GEMM programs ("inline"); larger ones sort
     the pairs by expert and build a block table (moe_route.route_blocks, a counting sort).
  1. GEMM1, one program per (block, BN intermediate columns, K split): the gate and up rows of
     w13 are read straight from the shuffled bytes (16-byte loads = one MX block of one row; with
     MoeConfig.scale_words the scales as the 32-bit words holding them, so that Triton pipelines
     them with the weights), decoded to bf16 (PTX bit tricks + two bf16x2 FMAs; a portable
     integer/fp16 path for other dtypes and the interpreter), scaled by 2^(s-127) and fed to
     tl.dot with fp32 accumulation (or, with MoeConfig.scaled_dot and bf16 x, handed to
     tl.dot_scaled as e2m1 + e8m0 for Triton to decode).
     The weights are the MMA's M side (decode has few rows per expert). With a K split each
     split stores fp32 partials and the last split to finish (atomic counter) sums them in
     split order; then bias + silu / gpt-oss swiglu, stored in the activation dtype.
  2. GEMM2, same for w2 (optionally K split): fp32 partial y per (split, pair); b2 in split 0.
  3. combine: out[t] = sum_k topk_weight[t, k] * sum_s y[s, t*K + k] in fixed order (a separate
     kernel, or the last GEMM2 program per hidden tile with fused_combine). No float atomics.
  NVIDIA-only options (MoeConfig; results unchanged): prefetch_hint (a PTX prefetch of the next K step's lines
  instead of the register double buffer) and dependent_launch (GEMM2 and the combine as programmatic dependents).

Layout handling: both layouts store a row's 32-value MX block as 16 contiguous bytes inside a
16-row strip (see rocbench.formats.moe_layouts), so addressing splits into a per-row base
(layout dependent: the strip order and the scale tile row) plus a per-K-block part (shared).
The layout is a runtime argument: only the per-program row bases differ, every arithmetic
operation is the same, so both layouts give bitwise identical results. That device code (row bases, K steps,
decode) is in rocbench.kernels.mxfp4_weights.

Batch invariance: plan_moe picks BM, K splits and the routing from the token count, and K splits
change a token's summation order. With moe_plan.deterministic_plan (tiles and K splits fixed per shape)
every float operation a token meets is the same for every batch: each token's column of a dot is computed
on its own, and only the routing (integers: which program takes which pairs) follows the batch.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from rocbench.formats import moe_layouts as _lay
from rocbench.kernels.moe_plan import (PREFETCH_HINT_LEVELS, MoeConfig, cache_hint_available, check_config,
                                      moe_a16w4_unsupported_reason, plan_moe)
from rocbench.kernels.moe_route import route_blocks
from rocbench.kernels.mxfp4_fragments import (FRAG_K, FRAG_ROWS, STEP_K, TILE_ROWS, fragment_decode, fragment_load,
                                              fragment_tile, prefetch_fragment_step,
                                              to_fragments)
from rocbench.kernels.mxfp4_weights import (ONE_MUL_MAX_SCALE, ONE_MUL_UNDO, dequant, f16_factor_bias, f16_shift,
                                            prefetch_step, s_row_part, scale_rows, split_pairs, w_row_base,
                                            weight_step)
from rocbench.kernels.pdl import dependent_launch_supported, gdc_launch_dependents, gdc_wait, pdl_launch_option
from rocbench.kernels.target import nvidia_gpu

LAYOUT_IDS = {_lay.SEPARATED: 0, _lay.INTERLEAVE: 1}
ACTIVATION_IDS = {"silu": 0, "swiglu": 1}
_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}


# ---------------------------------------------------------------------------------------------
# Activation
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Cross-program finishing: the last of `count` programs to arrive at a counter does the
# finishing work in a fixed order (deterministic), then resets the counter for the next call.
# ---------------------------------------------------------------------------------------------

@triton.jit
def _arrive(cnt_ptr, idx, count):
    """Returns True in exactly one program: the last of `count` to arrive at counter idx.
    The barrier orders every thread's earlier global stores before the releasing atomic."""
    tl.debug_barrier()
    done = tl.atomic_add(cnt_ptr + idx, 1, sem="acq_rel", scope="gpu")
    return done == count - 1


@triton.jit
def _reset(cnt_ptr, idx):
    tl.atomic_xchg(cnt_ptr + idx, 0, sem="relaxed", scope="gpu")


# ---------------------------------------------------------------------------------------------
# x in fp16 for GEMM1's fp16 decode: each row divided by the power of two that puts its largest magnitude in
# [2^14, 2^15). Exact for every element above ~2^-31 of its row's largest (fp16's 11-bit significand holds bf16's 8;
# smaller ones become fp16 subnormals, invisible next to the largest in an fp32 sum); xs keeps the power of two.
# ---------------------------------------------------------------------------------------------

@triton.jit
def _x_to_f16_kernel(x_ptr, stride_x, x16_ptr, xs_ptr, H, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    amax = tl.zeros([BLOCK], tl.float32)
    for h0 in range(0, H, BLOCK):
        v = tl.load(x_ptr + t * stride_x + h0 + offs, mask=h0 + offs < H, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(v))
    # the exponent field of the largest magnitude, within [15, 254] (an all-zero row gets a harmless 2^126)
    biased = tl.minimum(tl.maximum(tl.max(amax, 0).to(tl.int32, bitcast=True) >> 23, 15), 254)
    scale = ((268 - biased) << 23).to(tl.float32, bitcast=True)  # 2^(14 - e), e = biased - 127
    for h0 in range(0, H, BLOCK):
        mask = h0 + offs < H
        v = tl.load(x_ptr + t * stride_x + h0 + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(x16_ptr + t * H + h0 + offs, (v * scale).to(tl.float16), mask=mask)
    tl.store(xs_ptr + t, ((biased - 14) << 23).to(tl.float32, bitcast=True))  # 1 / scale


# ---------------------------------------------------------------------------------------------
# GEMM1: act = activation(x @ w13^T + b13), one (block, BN intermediate columns, K split) each
# ---------------------------------------------------------------------------------------------

@triton.jit
def _store_act(act_ptr, b_ptr, e64, pair64, offs_n, m_mask, g, u, N, INTER, HAS_BIAS, ACT, alpha,
               limit, DTYPE: tl.constexpr):
    if HAS_BIAS:
        g += tl.load(b_ptr + e64 * N + offs_n).to(tl.float32)[:, None]
        u += tl.load(b_ptr + e64 * N + INTER + offs_n).to(tl.float32)[:, None]
    a = _activation(g, u, ACT, alpha, limit)
    tl.store(act_ptr + pair64[None, :] * INTER + offs_n[:, None], a.to(DTYPE), mask=m_mask[None, :])


@triton.jit
def _step_weights(w_rows, s_rows, s_shift, rows, ks, ahead, next_w, next_s, NB: tl.constexpr, WORDS: tl.constexpr,
                  PREFETCH: tl.constexpr, PREFETCH_HINT: tl.constexpr):
    """K step ks's packed weights and scales, and what the next step carries: with PREFETCH those loaded a step ago,
    the next step's loaded now (next_w, next_s: a register double buffer); else loaded now, after a cache prefetch of
    the next step's lines where PREFETCH_HINT asks (next_w, next_s unused)."""
    if PREFETCH:
        wq, sc = next_w, next_s
        next_w, next_s = weight_step(w_rows, s_rows, s_shift, ahead, NB, WORDS)
    else:
        if PREFETCH_HINT != 0:
            prefetch_step(w_rows, s_rows, rows, ahead, NB, WORDS, PREFETCH_HINT)
        wq, sc = weight_step(w_rows, s_rows, s_shift, ks, NB, WORDS)
    return wq, sc, next_w, next_s


@triton.jit
def _gemm1_stacked(w_ptr, s_ptr, x_rows, m_mask, e64, pid_n, N, INTER, KPB, SC, LAYOUT, ks0, ks1,
                   BM: tl.constexpr, BN: tl.constexpr, NB: tl.constexpr, DTYPE: tl.constexpr, DOT_PREC: tl.constexpr,
                   ASM: tl.constexpr, PREFETCH: tl.constexpr, WORDS: tl.constexpr, PREFETCH_HINT: tl.constexpr,
                   SPLIT_PAIRS: tl.constexpr, UPPER_BYTES: tl.constexpr, F16_BIAS: tl.constexpr):
    """GEMM1's K loop with the tile's gate rows and up rows stacked into one [2 BN, K] weight operand
    (MoeConfig.stacked_gate_up): one load, one decode and one dot per K step, and with 8 warps each warp owns 16
    distinct rows (two separate 64-row dots split their token columns between two warp groups, which then decode the
    same rows twice). Returns the gate and up accumulators [BN, BM] as the unstacked loop does."""
    i = tl.arange(0, 2 * BN)
    rows = tl.where(i < BN, pid_n * BN + i, INTER + pid_n * BN + i - BN)
    w_rows = w_ptr + w_row_base(e64, rows, N, KPB, LAYOUT, True)
    s_rows, s_shift = scale_rows(s_ptr, s_row_part(e64, rows, N, SC, LAYOUT, True), WORDS)
    offs_k = tl.arange(0, NB * 32)
    acc = tl.zeros([2 * BN, BM], dtype=tl.float32)
    next_w, next_s = 0, 0
    if PREFETCH:
        next_w, next_s = weight_step(w_rows, s_rows, s_shift, ks0, NB, WORDS)
    for ks in range(ks0, ks1):
        ahead = tl.minimum(ks + 1, ks1 - 1)
        wq, sc, next_w, next_s = _step_weights(w_rows, s_rows, s_shift, rows, ks, ahead, next_w, next_s, NB, WORDS,
                                               PREFETCH, PREFETCH_HINT)
        xt = tl.load(x_rows[:, None] + (ks * (NB * 32) + offs_k)[None, :], mask=m_mask[:, None], other=0.0)
        xt = tl.trans(split_pairs(xt, SPLIT_PAIRS))
        acc = tl.dot(dequant(wq, sc, DTYPE, ASM, SPLIT_PAIRS, UPPER_BYTES, F16_BIAS), xt, acc,
                     input_precision=DOT_PREC)
    return tl.split(tl.permute(tl.reshape(acc, [2, BN, BM]), (1, 2, 0)))


@triton.jit
def _fragment_dot(w_ptr, s_ptr, first, first_hi, ks, ks1, xt, acc, next_w, next_s, DTYPE: tl.constexpr,
                  DOT_PREC: tl.constexpr, ASM: tl.constexpr, PREFETCH: tl.constexpr, PREFETCH_HINT: tl.constexpr,
                  W: tl.constexpr):
    """One K step over weights in fragment order (MoeConfig.fragments): a 64-row tile for 4 warps, or (W 8) the tiles
    at first and first_hi stacked for two warp groups. With PREFETCH this step's bytes were loaded a step ago and the
    next step's are loaded now (next_w, next_s: registers in the fragment's own layout); else loaded now, after a
    cache prefetch of the next step's lines where PREFETCH_HINT asks. Decoded straight into the MMA's register
    operand (the PTX decode where ASM is 2, the one-multiply form's scaling) and accumulated."""
    ahead = tl.minimum(ks + 1, ks1 - 1)
    if PREFETCH:
        wq, sc = next_w, next_s
        next_w, next_s = fragment_load(w_ptr, s_ptr, first, first_hi, ahead, True, W)
    else:
        if PREFETCH_HINT != 0:
            prefetch_fragment_step(w_ptr, s_ptr, first, first_hi, ahead, PREFETCH_HINT, W)
        wq, sc = fragment_load(w_ptr, s_ptr, first, first_hi, ks, False, W)
    acc = tl.dot(fragment_decode(wq, sc, DTYPE, ASM == 2, PREFETCH), xt, acc, input_precision=DOT_PREC)
    return acc, next_w, next_s


@triton.jit
def _gemm1_fragments(w_ptr, s_ptr, x_rows, m_mask, e64, pid_n, INTER, KSTEPS, ks0, ks1, BM: tl.constexpr,
                     DTYPE: tl.constexpr, DOT_PREC: tl.constexpr, ASM: tl.constexpr, PREFETCH: tl.constexpr,
                     PREFETCH_HINT: tl.constexpr, STACKED: tl.constexpr):
    """GEMM1's K loop over w13 in fragment order: the gate tile pid_n and the up tile INTER / 64 + pid_n, as two
    4-warp dots, or with STACKED as one 8-warp dot of both (each warp group decodes its own tile)."""
    tiles = 2 * INTER // FRAG_ROWS
    gate = fragment_tile(e64, pid_n, tiles, KSTEPS)
    up = fragment_tile(e64, INTER // FRAG_ROWS + pid_n, tiles, KSTEPS)
    offs_k = tl.arange(0, FRAG_K)
    next_gw, next_gs, next_uw, next_us = 0, 0, 0, 0
    if STACKED:
        acc = tl.zeros([2 * FRAG_ROWS, BM], dtype=tl.float32)
        if PREFETCH:  # the first step's bytes, which _fragment_dot takes as loaded a step ago
            next_gw, next_gs = fragment_load(w_ptr, s_ptr, gate, up, ks0, True, 8)
        for ks in range(ks0, ks1):
            xt = tl.trans(tl.load(x_rows[:, None] + (offs_k + ks * FRAG_K)[None, :], mask=m_mask[:, None], other=0.0))
            acc, next_gw, next_gs = _fragment_dot(w_ptr, s_ptr, gate, up, ks, ks1, xt, acc, next_gw, next_gs, DTYPE,
                                                  DOT_PREC, ASM, PREFETCH, PREFETCH_HINT, 8)
        acc_g, acc_u = tl.split(tl.permute(tl.reshape(acc, [2, FRAG_ROWS, BM]), (1, 2, 0)))
    else:
        acc_g = tl.zeros([FRAG_ROWS, BM], dtype=tl.float32)
        acc_u = tl.zeros([FRAG_ROWS, BM], dtype=tl.float32)
        if PREFETCH:
            next_gw, next_gs = fragment_load(w_ptr, s_ptr, gate, gate, ks0, True, 4)
            next_uw, next_us = fragment_load(w_ptr, s_ptr, up, up, ks0, True, 4)
        for ks in range(ks0, ks1):
            xt = tl.trans(tl.load(x_rows[:, None] + (offs_k + ks * FRAG_K)[None, :], mask=m_mask[:, None], other=0.0))
            acc_g, next_gw, next_gs = _fragment_dot(w_ptr, s_ptr, gate, gate, ks, ks1, xt, acc_g, next_gw, next_gs,
                                                    DTYPE, DOT_PREC, ASM, PREFETCH, PREFETCH_HINT, 4)
            acc_u, next_uw, next_us = _fragment_dot(w_ptr, s_ptr, up, up, ks, ks1, xt, acc_u, next_uw, next_us,
                                                    DTYPE, DOT_PREC, ASM, PREFETCH, PREFETCH_HINT, 4)
    return acc_g, acc_u


@triton.jit(do_not_specialize=["P", "KSTEPS", "KS_PER_SPLIT", "SPLIT"])
def _moe_gemm1_kernel(
    x_ptr, stride_x, w_ptr, s_ptr, b_ptr,
    ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr, blk_n_ptr,
    part_ptr, act_ptr, cnt_ptr,
    P, E, TOPK, INTER, KPB, SC, KSTEPS, KS_PER_SPLIT, SPLIT, LAYOUT, HAS_BIAS, ACT, alpha, limit,
    xs_ptr, f16_undo,
    BM: tl.constexpr, BN: tl.constexpr, NB: tl.constexpr, INLINE: tl.constexpr,
    P_PAD: tl.constexpr, DTYPE: tl.constexpr, DOT_PREC: tl.constexpr, ASM: tl.constexpr,
    PREFETCH: tl.constexpr, SCALED_DOT: tl.constexpr, WORDS: tl.constexpr, PREFETCH_HINT: tl.constexpr,
    PDL: tl.constexpr, SPLIT_PAIRS: tl.constexpr, UPPER_BYTES: tl.constexpr, ACT_DTYPE: tl.constexpr,
    F16_BIAS: tl.constexpr, STACKED: tl.constexpr, FRAG: tl.constexpr,
):
    if PDL:  # GEMM2 may launch now; it waits for this grid's completion before reading act
        gdc_launch_dependents()
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_s = tl.program_id(2)
    nrows, e, pair, m_mask = _block_rows(pid_b, ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr,
                                         blk_n_ptr, P, E, BM, INLINE, P_PAD)
    if nrows == 0:
        return
    e64 = e.to(tl.int64)
    pair64 = pair.to(tl.int64)
    N = 2 * INTER
    offs_n = pid_n * BN + tl.arange(0, BN)
    row_g = offs_n
    row_u = offs_n + INTER
    wg_rows = w_ptr + w_row_base(e64, row_g, N, KPB, LAYOUT, True)
    wu_rows = w_ptr + w_row_base(e64, row_u, N, KPB, LAYOUT, True)
    sg_rows, sg_shift = scale_rows(s_ptr, s_row_part(e64, row_g, N, SC, LAYOUT, True), WORDS)
    su_rows, su_shift = scale_rows(s_ptr, s_row_part(e64, row_u, N, SC, LAYOUT, True), WORDS)
    x_rows = x_ptr + (pair // TOPK).to(tl.int64) * stride_x
    offs_k = tl.arange(0, NB * 32)
    acc_g = tl.zeros([BN, BM], dtype=tl.float32)
    acc_u = tl.zeros([BN, BM], dtype=tl.float32)
    ks0 = pid_s * KS_PER_SPLIT
    ks1 = tl.minimum(ks0 + KS_PER_SPLIT, KSTEPS)
    if FRAG:  # w_ptr, s_ptr: w13 in fragment order (MoeFragments)
        acc_g, acc_u = _gemm1_fragments(w_ptr, s_ptr, x_rows, m_mask, e64, pid_n, INTER, KSTEPS, ks0, ks1, BM, DTYPE,
                                        DOT_PREC, ASM, PREFETCH, PREFETCH_HINT, STACKED)
    elif STACKED:
        acc_g, acc_u = _gemm1_stacked(w_ptr, s_ptr, x_rows, m_mask, e64, pid_n, N, INTER, KPB, SC, LAYOUT, ks0, ks1,
                                      BM, BN, NB, DTYPE, DOT_PREC, ASM, PREFETCH, WORDS, PREFETCH_HINT, SPLIT_PAIRS,
                                      UPPER_BYTES, F16_BIAS)
    else:
        if PREFETCH:
            next_g, next_sg = weight_step(wg_rows, sg_rows, sg_shift, ks0, NB, WORDS)
            next_u, next_su = weight_step(wu_rows, su_rows, su_shift, ks0, NB, WORDS)
        for ks in range(ks0, ks1):
            ahead = tl.minimum(ks + 1, ks1 - 1)  # the next step (the last step takes itself again rather than branch)
            if PREFETCH:
                # the next step's weights are loaded before this step's decode and dots: a load that feeds the decode
                # is otherwise waited for in place
                wq_g, s_g, wq_u, s_u = next_g, next_sg, next_u, next_su
                next_g, next_sg = weight_step(wg_rows, sg_rows, sg_shift, ahead, NB, WORDS)
                next_u, next_su = weight_step(wu_rows, su_rows, su_shift, ahead, NB, WORDS)
            else:
                if PREFETCH_HINT != 0:  # the next step's lines
                    prefetch_step(wg_rows, sg_rows, offs_n, ahead, NB, WORDS, PREFETCH_HINT)
                    prefetch_step(wu_rows, su_rows, offs_n, ahead, NB, WORDS, PREFETCH_HINT)
                wq_g, s_g = weight_step(wg_rows, sg_rows, sg_shift, ks, NB, WORDS)
                wq_u, s_u = weight_step(wu_rows, su_rows, su_shift, ks, NB, WORDS)
            # x rows are contiguous along K: vector loads, transposed for the dot's B operand
            xt = tl.load(x_rows[:, None] + (ks * (NB * 32) + offs_k)[None, :], mask=m_mask[:, None],
                         other=0.0)
            xt = tl.trans(split_pairs(xt, SPLIT_PAIRS))
            if SCALED_DOT:
                acc_g = tl.dot_scaled(tl.reshape(wq_g, [BN, NB * 16]), s_g, "e2m1", xt, None, "bf16", acc_g)
                acc_u = tl.dot_scaled(tl.reshape(wq_u, [BN, NB * 16]), s_u, "e2m1", xt, None, "bf16", acc_u)
            else:
                w_g = dequant(wq_g, s_g, DTYPE, ASM, SPLIT_PAIRS, UPPER_BYTES, F16_BIAS)
                acc_g = tl.dot(w_g, xt, acc_g, input_precision=DOT_PREC)
                w_u = dequant(wq_u, s_u, DTYPE, ASM, SPLIT_PAIRS, UPPER_BYTES, F16_BIAS)
                acc_u = tl.dot(w_u, xt, acc_u, input_precision=DOT_PREC)
    if ASM == 2:  # the one-multiply decode's weights were 2^-ONE_MUL_SHIFT of their value
        acc_g *= ONE_MUL_UNDO
        acc_u *= ONE_MUL_UNDO
    if ASM == 3:  # the fp16 decode's weights were 2^-shift of their value, each x row 2^(14 - e) of it (_x_to_f16)
        col = f16_undo * tl.load(xs_ptr + pair // TOPK, mask=m_mask, other=0.0)
        acc_g *= col[None, :]
        acc_u *= col[None, :]
    if SPLIT == 1:
        _store_act(act_ptr, b_ptr, e64, pair64, offs_n, m_mask, acc_g, acc_u, N, INTER, HAS_BIAS,
                   ACT, alpha, limit, ACT_DTYPE)
    else:
        # fp32 partials; the last split to finish this tile sums them in split order
        base = part_ptr + ((pid_s * P + pair64[None, :]) * 2) * INTER + offs_n[:, None]
        tl.store(base, acc_g, mask=m_mask[None, :])
        tl.store(base + INTER, acc_u, mask=m_mask[None, :])
        tile = pid_b * tl.num_programs(0) + pid_n
        if _arrive(cnt_ptr, tile, SPLIT):
            g = tl.zeros([BN, BM], dtype=tl.float32)
            u = tl.zeros([BN, BM], dtype=tl.float32)
            for s in range(SPLIT):
                src = part_ptr + ((s * P + pair64[None, :]) * 2) * INTER + offs_n[:, None]
                g += tl.load(src, mask=m_mask[None, :], other=0.0, cache_modifier=".cg")
                u += tl.load(src + INTER, mask=m_mask[None, :], other=0.0, cache_modifier=".cg")
            _store_act(act_ptr, b_ptr, e64, pair64, offs_n, m_mask, g, u, N, INTER, HAS_BIAS,
                       ACT, alpha, limit, ACT_DTYPE)
            _reset(cnt_ptr, tile)


# ---------------------------------------------------------------------------------------------
# GEMM2: y[s, pair, :] = act @ w2^T (+ b2 in split 0), one (block, BN hidden rows, K split) each
# ---------------------------------------------------------------------------------------------

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
def _combined_pair(y_ptr, tw_ptr, ids_ptr, offs, mask, p, HID, E, P, SPLIT2, CG: tl.constexpr,
                   SPLIT2_UNROLLED: tl.constexpr):
    """w[p] * (sum_s y[s, p, offs]) in s order; 0 for a pair routed to no expert here."""
    e = tl.zeros([offs.shape[0]], dtype=tl.int32) + tl.load(ids_ptr + p)
    valid = (e >= 0) & (e < E) & mask
    w = tl.where(valid, tl.load(tw_ptr + p).to(tl.float32), 0.0)
    y = tl.zeros([offs.shape[0]], dtype=tl.float32)
    # (s * P + p) * HID + offs < 2^31 for every supported shape
    if SPLIT2_UNROLLED:
        for s in tl.static_range(SPLIT2_UNROLLED):
            y += _load_partial(y_ptr + (s * P + p) * HID + offs, valid, CG)
    else:
        for s in range(SPLIT2):
            y += _load_partial(y_ptr + (s * P + p) * HID + offs, valid, CG)
    return w * y


@triton.jit
def _load_partial(src, valid, CG: tl.constexpr):
    if CG:  # written by other programs of this launch: read from L2, not a stale L1
        y = tl.load(src, mask=valid, other=0.0, cache_modifier=".cg")
    else:
        y = tl.load(src, mask=valid, other=0.0)
    return y.to(tl.float32)  # (y in x's dtype with MoeConfig.narrow_y)


@triton.jit
def _combine_rows(y_ptr, tw_ptr, ids_ptr, out_ptr, offs, mask, t, TOPK, HID, E, P, SPLIT2,
                  CG: tl.constexpr, TOPK_UNROLLED: tl.constexpr = 0, SPLIT2_UNROLLED: tl.constexpr = 0):
    """out[t, offs] = sum_k w[t, k] * (sum_s y[s, t*TOPK + k, offs]); fixed order. With TOPK_UNROLLED (and
    SPLIT2_UNROLLED) = TOPK (SPLIT2) the loops unroll, so that every pair's loads are in flight at once rather
    than one dependent id-then-partials round trip per pair (ncu, H200, 1 token: the separate combine took
    4.5-10 us, 12-17% of the call, for a few KB); same sums in the same order."""
    acc = tl.zeros([offs.shape[0]], dtype=tl.float32)
    if TOPK_UNROLLED:
        for k in tl.static_range(TOPK_UNROLLED):
            acc += _combined_pair(y_ptr, tw_ptr, ids_ptr, offs, mask, t * TOPK_UNROLLED + k, HID, E, P, SPLIT2, CG,
                                  SPLIT2_UNROLLED)
    else:
        for k in range(TOPK):
            acc += _combined_pair(y_ptr, tw_ptr, ids_ptr, offs, mask, t * TOPK + k, HID, E, P, SPLIT2, CG,
                                  SPLIT2_UNROLLED)
    tl.store(out_ptr + t * HID + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["P", "T", "KS_PER_SPLIT", "SPLIT2"])
def _moe_gemm2_kernel(
    act_ptr, w_ptr, s_ptr, b2_ptr,
    ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr, blk_n_ptr, y_ptr,
    cnt_ptr, tw_ptr, out_ptr, T, TOPK,
    P, E, INTER, HID, KPB, SC, KSTEPS, KS_PER_SPLIT, SPLIT2, LAYOUT, HAS_BIAS,
    BM: tl.constexpr, BN: tl.constexpr, NB: tl.constexpr, INLINE: tl.constexpr,
    P_PAD: tl.constexpr, DTYPE: tl.constexpr, DOT_PREC: tl.constexpr, ASM: tl.constexpr,
    FUSED_COMBINE: tl.constexpr, PREFETCH: tl.constexpr, SCALED_DOT: tl.constexpr, WORDS: tl.constexpr,
    PREFETCH_HINT: tl.constexpr, PDL: tl.constexpr, SPLIT_PAIRS: tl.constexpr, UPPER_BYTES: tl.constexpr,
    FRAG: tl.constexpr,
):
    if PDL:  # a dependent may launch now (the combine, which waits for this grid before reading y)
        gdc_launch_dependents()
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_s = tl.program_id(2)
    nrows, e, pair, m_mask = _block_rows(pid_b, ids_ptr, sorted_ptr, blk_e_ptr, blk_row0_ptr,
                                         blk_n_ptr, P, E, BM, INLINE, P_PAD)
    if nrows == 0:
        return
    e64 = e.to(tl.int64)
    pair64 = pair.to(tl.int64)
    offs_n = pid_n * BN + tl.arange(0, BN)
    w_rows = w_ptr + w_row_base(e64, offs_n, HID, KPB, LAYOUT, False)
    s_rows, s_shift = scale_rows(s_ptr, s_row_part(e64, offs_n, HID, SC, LAYOUT, False), WORDS)
    a_rows = act_ptr + pair64 * INTER
    offs_k = tl.arange(0, NB * 32)
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    ks0 = pid_s * KS_PER_SPLIT
    ks1 = tl.minimum(ks0 + KS_PER_SPLIT, KSTEPS)
    next_w, next_s = 0, 0
    # with FRAG only: the program's 64-row tile, or (BN 128) its two, one per warp group of 8 warps
    W: tl.constexpr = BN // 16
    first = fragment_tile(e64, pid_n * (BN // FRAG_ROWS), HID // FRAG_ROWS, KSTEPS)
    first_hi = first + (BN // FRAG_ROWS - 1) * KSTEPS
    if FRAG:
        if PREFETCH:
            next_w, next_s = fragment_load(w_ptr, s_ptr, first, first_hi, ks0, True, W)
        if PREFETCH_HINT != 0:
            prefetch_fragment_step(w_ptr, s_ptr, first, first_hi, ks0, PREFETCH_HINT, W)
    elif PREFETCH:
        next_w, next_s = weight_step(w_rows, s_rows, s_shift, ks0, NB, WORDS)
    elif PREFETCH_HINT != 0:
        prefetch_step(w_rows, s_rows, offs_n, ks0, NB, WORDS, PREFETCH_HINT)
    if PDL:  # launched as GEMM1's dependent: everything above reads the inputs only; act is complete after this
        gdc_wait()
    for ks in range(ks0, ks1):
        if FRAG:  # w_ptr, s_ptr: w2 in fragment order (MoeFragments)
            at = tl.load(a_rows[:, None] + (ks * (NB * 32) + offs_k)[None, :], mask=m_mask[:, None], other=0.0)
            acc, next_w, next_s = _fragment_dot(w_ptr, s_ptr, first, first_hi, ks, ks1, tl.trans(at), acc, next_w,
                                                next_s, DTYPE, DOT_PREC, ASM, PREFETCH, PREFETCH_HINT, W)
        else:
            ahead = tl.minimum(ks + 1, ks1 - 1)  # as in GEMM1
            wq, sc, next_w, next_s = _step_weights(w_rows, s_rows, s_shift, offs_n, ks, ahead, next_w, next_s, NB,
                                                   WORDS, PREFETCH, PREFETCH_HINT)
            at = tl.load(a_rows[:, None] + (ks * (NB * 32) + offs_k)[None, :], mask=m_mask[:, None],
                         other=0.0)
            if SCALED_DOT:
                acc = tl.dot_scaled(tl.reshape(wq, [BN, NB * 16]), sc, "e2m1", tl.trans(at), None, "bf16", acc)
            else:
                acc = tl.dot(dequant(wq, sc, DTYPE, ASM, SPLIT_PAIRS, UPPER_BYTES),
                             tl.trans(split_pairs(at, SPLIT_PAIRS)), acc, input_precision=DOT_PREC)
    if ASM == 2:
        acc *= ONE_MUL_UNDO
    if HAS_BIAS:
        if pid_s == 0:
            acc += tl.load(b2_ptr + e64 * HID + offs_n).to(tl.float32)[:, None]
    tl.store(y_ptr + (pid_s * P + pair64[None, :]) * HID + offs_n[:, None], acc.to(y_ptr.dtype.element_ty),
             mask=m_mask[None, :])  # fp32, or x's dtype (MoeConfig.narrow_y)
    if FUSED_COMBINE:
        # the last program of this hidden tile (over blocks and splits) does the top-k sum
        if _arrive(cnt_ptr, pid_n, _inline_block_count(ids_ptr, P, E, BM, P_PAD) * SPLIT2):
            for t in range(T):
                _combine_rows(y_ptr, tw_ptr, ids_ptr, out_ptr, offs_n, offs_n < HID, t, TOPK, HID,
                              E, P, SPLIT2, True)
            _reset(cnt_ptr, pid_n)


# ---------------------------------------------------------------------------------------------
# combine: out[t] = sum_k w[t, k] * y[t*K + k]
# ---------------------------------------------------------------------------------------------

@triton.jit(do_not_specialize=["P"])
def _moe_combine_kernel(y_ptr, tw_ptr, ids_ptr, out_ptr, HID, E, P, BH: tl.constexpr, TOPK: tl.constexpr,
                        SPLIT2: tl.constexpr, PDL: tl.constexpr):
    if PDL:  # launched as GEMM2's dependent: y is complete after this
        gdc_wait()
    t = tl.program_id(0)
    offs = tl.program_id(1) * BH + tl.arange(0, BH)
    _combine_rows(y_ptr, tw_ptr, ids_ptr, out_ptr, offs, offs < HID, t, TOPK, HID, E, P, SPLIT2, False,
                  TOPK_UNROLLED=TOPK, SPLIT2_UNROLLED=SPLIT2)


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------

def _validate(x, w13, s13, w2, s2, topk_weights, topk_ids, layout, experts, inter, hidden, activation):
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
    if tuple(w13.shape) != (experts, 2 * inter, hidden // 2) or tuple(w2.shape) != (experts, hidden, inter // 2):
        raise ValueError(f"weight shapes {tuple(w13.shape)}, {tuple(w2.shape)} do not match "
                         f"E={experts}, inter={inter}, hidden={hidden}")
    if tuple(s13.shape) != _lay.shuffled_scale_shape(layout, experts, 2 * inter, hidden // 32) or \
            tuple(s2.shape) != _lay.shuffled_scale_shape(layout, experts, hidden, inter // 32):
        raise ValueError(f"scale shapes {tuple(s13.shape)}, {tuple(s2.shape)} do not match {layout}")
    for t in (w13, w2, s13, s2):
        if not t.is_contiguous():
            raise ValueError("weights and scales must be contiguous")


def _nvidia_knobs(cfg: MoeConfig, device: torch.device) -> tuple[int, bool]:
    """The NVIDIA-only knobs as the kernels get them on `device`: the prefetch hint level (PTX) and whether GEMM2
    and the combine launch as programmatic dependents. Elsewhere both are off; results are the same either way."""
    hint = PREFETCH_HINT_LEVELS[cfg.prefetch_hint] if cache_hint_available(device) else 0
    return hint, cfg.dependent_launch and dependent_launch_supported(device)


def largest_scale(*scales: torch.Tensor) -> int:
    """The largest E8M0 byte in these shuffled scale tensors: moe_a16w4's scale_max, computed once per weight set
    (it reads the tensors back to the host)."""
    return max(int(scale.view(torch.uint8).max()) for scale in scales)


def decode_mode(cfg: MoeConfig, x_dtype: torch.dtype | None, device: torch.device, scale_max: int | None) -> int:
    """How the GEMMs decode the weights (dequant's ASM): 0 the portable path (fp16/fp32 activations, ROCm, the
    interpreter) or tl.dot_scaled, 1 the PTX decode, 2 its one-multiply form where the caller vouches that no scale
    byte exceeds ONE_MUL_MAX_SCALE."""
    if not (cfg.asm_dequant and x_dtype == torch.bfloat16 and nvidia_gpu(device)) or cfg.scaled_dot:
        return 0
    return 2 if cfg.one_mul and scale_max is not None and scale_max <= ONE_MUL_MAX_SCALE else 1


def e4m3_conversion_available(device: torch.device) -> bool:
    """The GPU converts e4m3 to fp16 in one instruction (cvt.rn.f16x2.e4m3x2: NVIDIA sm_89 and later)."""
    return nvidia_gpu(device) and torch.cuda.get_device_capability(device) >= (8, 9)


def live_scale_range(packed: torch.Tensor, scales: torch.Tensor) -> tuple[int, int] | None:
    """The smallest and largest E8M0 byte among the MX blocks holding a nonzero code, from unshuffled weights
    (packed [..., K/2], scales [..., K/32]): moe_a16w4's w13_live_scales, computed once per weight set. Blocks of
    zeros (padding) are left out: any scale decodes them exactly. None if every block is zero."""
    live = packed.view(torch.uint8).reshape(*scales.shape, 16).ne(0).any(-1)
    if not bool(live.any()):
        return None
    chosen = scales.view(torch.uint8)[live]
    return int(chosen.min()), int(chosen.max())


def gemm1_decode(cfg: MoeConfig, x_dtype: torch.dtype | None, device: torch.device, scale_max: int | None,
                 w13_live_scales: tuple[int, int] | None) -> tuple[int, int | None]:
    """GEMM1's decode (dequant's ASM) and, for the fp16 decode (3), the power of two its weights are divided by:
    MoeConfig.f16_gemm1 where the PTX decode runs, the GPU converts e4m3, and w13's live scale bytes lie within
    F16_SCALE_SPREAD of each other (mxfp4_weights.f16_shift); else decode_mode's choice (GEMM2 always takes it)."""
    mode = decode_mode(cfg, x_dtype, device, scale_max)
    shift = f16_shift(w13_live_scales)
    if cfg.f16_gemm1 and mode and shift is not None and e4m3_conversion_available(device):
        return 3, shift
    return mode, None


def pair_order(cfg: MoeConfig, x_dtype: torch.dtype | None) -> bool:
    """Whether the GEMMs take split_pairs' K order: not with tl.dot_scaled, which takes the packed bytes in their own
    order (and runs for bf16 activations only)."""
    return cfg.split_pairs and not (cfg.scaled_dot and x_dtype == torch.bfloat16)


DECODE_WORDS = {0: "", 1: "ptx-decode", 2: "ptx-decode-1mul"}


def pipeline_description(cfg: MoeConfig, device: torch.device, x_dtype: torch.dtype | None = None,
                         scale_max: int | None = None, w13_live_scales: tuple[int, int] | None = None) -> str:
    """How a call with `cfg` on `device` feeds its K loops, for a result row's path: the register prefetch or the
    pipeline stages, plus the NVIDIA-only knobs where they take effect, the decode and the K order, as moe_a16w4
    picks them for these activations and scales."""
    hint, pdl = _nvidia_knobs(cfg, device)
    words = ["prefetch" if cfg.prefetch else f"stages={cfg.stages1}"]
    if hint:
        words.append(f"{cfg.prefetch_hint}-prefetch-hint")
    if pdl:
        words.append("dependent-launch")
    mode = decode_mode(cfg, x_dtype, device, scale_max)
    if cfg.fragments:  # weights in fragment order; their PTX decode has the one-multiply form only
        words.append("fragments" + ("-ptx-decode-1mul" if mode == 2 else ""))
    elif DECODE_WORDS[mode]:
        words.append(DECODE_WORDS[mode] + ("-upper-bytes" if cfg.upper_bytes else ""))
    if gemm1_decode(cfg, x_dtype, device, scale_max, w13_live_scales)[0] == 3:
        words.append("gemm1-f16")
    if pair_order(cfg, x_dtype):
        words.append("split-pairs")
    if cfg.stacked_gate_up:
        words.append(f"stacked-gate-up/{cfg.warps1}w")
    if narrow_y(cfg):
        words.append("y-in-x-dtype")
    return " ".join(words)


def narrow_y(cfg: MoeConfig) -> bool:
    """GEMM2 stores y in x's dtype (MoeConfig.narrow_y: only without a GEMM2 K split, whose partials stay fp32)."""
    return cfg.narrow_y and cfg.split2 == 1


@dataclasses.dataclass(frozen=True)
class MoeFragments:
    """w13 and w2 with their scales in fragment order (MoeConfig.fragments; rocbench.kernels.mxfp4_fragments)."""
    w13: torch.Tensor
    s13: torch.Tensor
    w2: torch.Tensor
    s2: torch.Tensor

    def check(self, experts: int, inter: int, hidden: int) -> None:
        shapes = {"w13": (self.w13, 2 * inter, hidden), "w2": (self.w2, hidden, inter)}
        for name, (weights, rows, k) in shapes.items():
            if tuple(weights.shape[:3]) != (experts, rows // TILE_ROWS, k // STEP_K):
                raise ValueError(f"{name} fragments {tuple(weights.shape)} are not those of "
                                 f"E={experts}, inter={inter}, hidden={hidden}")


def moe_fragments(w13_packed, w13_scales, w2_packed, w2_scales) -> MoeFragments:
    """The fragment-order copy of natural (unshuffled) weights, once per weight set, before the calls (to_fragments
    refuses shapes it cannot tile)."""
    return MoeFragments(*to_fragments(w13_packed, w13_scales), *to_fragments(w2_packed, w2_scales))


def moe_a16w4(x, w13_packed_shuffled, w13_scale_shuffled, w2_packed_shuffled, w2_scale_shuffled,
              topk_weights, topk_ids, *, layout, experts, inter, hidden, activation, b13=None,
              b2=None, alpha=1.702, limit=7.0, out=None, config: MoeConfig | None = None,
              counters: torch.Tensor | None = None, scale_max: int | None = None,
              w13_live_scales: tuple[int, int] | None = None, fragments: MoeFragments | None = None):
    """Fused MXFP4 MoE. x [T, H] bf16/fp16 (fp32 works too); weights/scales as returned by
    rocbench.moe.shuffle_weight / shuffle_scale for ``layout``; topk_* [T, k]; b13 [E, 2I] and
    b2 [E, H] optional (together). Returns [T, H] in x.dtype (``out`` if given).
    Graph-capturable (static grids, no host syncs); deterministic. `counters` (alloc_counters) is zeroed
    scratch the finishing steps leave zeroed; without it each call allocates and zeroes its own. Calls
    that run concurrently on several streams need a buffer each. `scale_max` (largest_scale of both scale
    tensors, if the caller knows it): up to ONE_MUL_MAX_SCALE the PTX decode multiplies once per value pair
    instead of twice, with bitwise the same results. `w13_live_scales` (live_scale_range of w13's unshuffled
    weights): with MoeConfig.f16_gemm1, GEMM1 decodes to fp16 where they allow it exactly (gemm1_decode).
    `fragments` (moe_fragments of the same weights): what MoeConfig.fragments reads instead of the shuffled ones."""
    w13 = w13_packed_shuffled.view(torch.uint8)
    w2 = w2_packed_shuffled.view(torch.uint8)
    s13 = w13_scale_shuffled.view(torch.uint8)
    s2 = w2_scale_shuffled.view(torch.uint8)
    _validate(x, w13, s13, w2, s2, topk_weights, topk_ids, layout, experts, inter, hidden, activation)
    if (b13 is None) != (b2 is None):
        raise ValueError("pass both b13 and b2, or neither")
    tokens, topk = topk_ids.shape
    device = x.device
    num_sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132
    cfg = config or plan_moe(tokens, topk, experts, inter, hidden, num_sms, device)
    check_config(cfg, inter, hidden)
    if cfg.fragments:
        if fragments is None:
            raise ValueError("MoeConfig.fragments needs the weights in fragment order (fragments=moe_fragments(...))")
        fragments.check(experts, inter, hidden)
    if counters is None:
        counters = alloc_counters(cfg, tokens, topk, experts, inter, hidden, device)
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
    b13_t = b13.contiguous() if b13 is not None else x  # dummy pointer when unused
    b2_t = b2.contiguous() if b2 is not None else x
    asm = decode_mode(cfg, x.dtype, device, scale_max)  # PTX: not for ROCm's "cuda"
    asm1, shift = gemm1_decode(cfg, x.dtype, device, scale_max, w13_live_scales)
    w13_read, s13_read, w2_read, s2_read = w13, s13, w2, s2
    if cfg.fragments:  # the PTX decode in its one-multiply form, else the portable one
        asm = asm1 = asm if asm == 2 else 0
        w13_read, s13_read, w2_read, s2_read = fragments.w13, fragments.s13, fragments.w2, fragments.s2
    prefetch_hint, pdl = _nvidia_knobs(cfg, device)
    scaled_dot = cfg.scaled_dot and x.dtype == torch.bfloat16
    even_then_odd = pair_order(cfg, x.dtype)
    # scale words need 4-byte-aligned scale tensors: every allocation is, a view at an odd offset may not be
    scale_words = cfg.scale_words and s13.data_ptr() % 4 == 0 and s2.data_ptr() % 4 == 0

    # routing
    if cfg.inline:
        grid_b = pairs
        p_pad = max(16, triton.next_power_of_2(pairs))
        sorted_ids = blk_e = blk_row0 = blk_n = ids  # unused
    else:
        grid_b = min(pairs, triton.cdiv(pairs, cfg.bm) + min(experts, pairs))
        p_pad = 16
        sorted_ids, blk_e, blk_row0, blk_n = route_blocks(ids, experts, cfg.bm, grid_b)

    # GEMM1 (+ bias + activation)
    ksteps1 = hidden // 32 // cfg.nb1
    ks_per1 = triton.cdiv(ksteps1, cfg.split1)
    split1 = triton.cdiv(ksteps1, ks_per1)
    tiles1 = inter // cfg.bn1
    act = torch.empty(pairs, inter, dtype=x.dtype, device=device)
    part = act
    x1, xs, dtype1, f16_undo, f16_bias = x, x, dtype, 1.0, 0  # (xs: a dummy pointer unless fp16)
    if asm1 == 3:  # GEMM1's fp16 decode takes x in fp16, each row scaled by a power of two
        x1 = torch.empty(tokens, hidden, dtype=torch.float16, device=device)
        xs = torch.empty(tokens, dtype=torch.float32, device=device)
        _x_to_f16_kernel[(tokens,)](x, x.stride(0), x1, xs, hidden, BLOCK=min(1024, triton.next_power_of_2(hidden)))
        dtype1, f16_undo, f16_bias = tl.float16, 2.0 ** shift, f16_factor_bias(shift)
    if split1 > 1:
        part = torch.empty(split1, pairs, 2, inter, dtype=torch.float32, device=device)
    _moe_gemm1_kernel[(tiles1, grid_b, split1)](
        x1, x1.stride(0), w13_read, s13_read, b13_t, ids, sorted_ids, blk_e, blk_row0, blk_n, part, act,
        counters, pairs, experts, topk, inter, hidden // 2, s13.shape[1], ksteps1, ks_per1, split1,
        LAYOUT_IDS[layout], has_bias, ACTIVATION_IDS[activation], float(alpha), float(limit),
        xs, f16_undo,
        BM=cfg.bm, BN=cfg.bn1, NB=cfg.nb1, INLINE=cfg.inline, P_PAD=p_pad, DTYPE=dtype1,
        DOT_PREC=dot_prec, ASM=asm1, PREFETCH=cfg.prefetch, SCALED_DOT=scaled_dot, WORDS=scale_words,
        PREFETCH_HINT=prefetch_hint, PDL=pdl, SPLIT_PAIRS=even_then_odd, UPPER_BYTES=cfg.upper_bytes,
        ACT_DTYPE=dtype, F16_BIAS=f16_bias, STACKED=cfg.stacked_gate_up, FRAG=cfg.fragments, num_warps=cfg.warps1,
        num_stages=cfg.stages1)

    # GEMM2 (+ b2), then the top-k sum
    ksteps2 = inter // 32 // cfg.nb2
    ks_per2 = triton.cdiv(ksteps2, cfg.split2)
    split2 = triton.cdiv(ksteps2, ks_per2)
    tiles2 = hidden // cfg.bn2
    y = torch.empty(split2, pairs, hidden, dtype=x.dtype if narrow_y(cfg) else torch.float32, device=device)
    fused = cfg.fused_combine and cfg.inline
    _moe_gemm2_kernel[(tiles2, grid_b, split2)](
        act, w2_read, s2_read, b2_t, ids, sorted_ids, blk_e, blk_row0, blk_n, y, counters, tw, out,
        tokens, topk, pairs, experts, inter, hidden, inter // 2, s2.shape[1], ksteps2, ks_per2,
        split2, LAYOUT_IDS[layout], has_bias,
        BM=cfg.bm, BN=cfg.bn2, NB=cfg.nb2, INLINE=cfg.inline, P_PAD=p_pad, DTYPE=dtype,
        DOT_PREC=dot_prec, ASM=asm, FUSED_COMBINE=fused, PREFETCH=cfg.prefetch, SCALED_DOT=scaled_dot,
        WORDS=scale_words, PREFETCH_HINT=prefetch_hint, PDL=pdl, SPLIT_PAIRS=even_then_odd,
        UPPER_BYTES=cfg.upper_bytes, FRAG=cfg.fragments, num_warps=cfg.warps2, num_stages=cfg.stages2,
        **pdl_launch_option(pdl))
    if not fused:
        bh = min(1024, triton.next_power_of_2(hidden))
        _moe_combine_kernel[(tokens, triton.cdiv(hidden, bh))](y, tw, ids, out, hidden, experts, pairs, BH=bh,
                                                              TOPK=topk, SPLIT2=split2, PDL=pdl,
                                                              **pdl_launch_option(pdl))
    return out


def counters_needed(config: MoeConfig, tokens: int, topk: int, experts: int, inter: int, hidden: int) -> int:
    """int32 counters the last-arriver finishing steps of one call use (GEMM1's K split, GEMM2's fused
    combine); both steps reset the counters they use, so one zeroed buffer serves every call and replay."""
    pairs = tokens * topk
    grid_b = pairs if config.inline else min(pairs, triton.cdiv(pairs, config.bm) + min(experts, pairs))
    gemm1 = (inter // config.bn1) * grid_b if config.split1 > 1 else 0
    gemm2 = hidden // config.bn2 if config.fused_combine and config.inline else 0
    return max(gemm1, gemm2, 1)


def alloc_counters(config: MoeConfig, tokens: int, topk: int, experts: int, inter: int, hidden: int,
                   device) -> torch.Tensor:
    """The counters buffer to pass as `counters=`; allocate it outside a CUDA-graph capture."""
    return torch.zeros(counters_needed(config, tokens, topk, experts, inter, hidden), dtype=torch.int32, device=device)
