"""The persistent MLA decode's attention tile in Gluon (Triton 3.6's lower-level language), warp-specialized, for
Hopper (sm_90): `MlaKernelConfig.gluon_ws` (rocbench.kernels.mla_config) routes mla_decode_persistent here where
rocbench.kernels.mla_gluon_scope allows it. Import this module only there: it needs Triton's Gluon.

Why: Nsight Compute (results/examples/ncu-mla-h200, 2026-12-06) has the Triton 64-row tile (nhead 64 / 128) stalling
most at the CTA barrier that guards each pipeline stage: one 8-warp program per SM, both warp groups in lockstep, loads
issued by the same warps that compute. Triton's own warp specialization does not take this loop (the correction after
round 10 in results/examples/mla-variants-h200). Here the roles are explicit:
- a 1-warp producer partition streams q and the KV blocks by TMA into a 2-stage ring (mbarriers, no CTA barrier);
- two 4-warp consumer partitions each own half of the 512 output channels (four [64, 64] fp32 accumulators). At
  64-row tiles they split S = q K^T by the block's tokens (gluon_split_s, as FlashMLA divides it) and exchange row
  maxima, P's halves and row sums through shared memory; without the split each computes all of S for itself (as
  the Triton tile does) and syncs only with the producer.
The paged KV goes through a 3-D descriptor over the page pool ([pages, page_size, 576], 64 x 64 boxes): a sequence's
last, partial block is read from 64 - n tokens before its page position, so the rows before the page are TMA's zeros
and no row past the sequence's end is read (the cache past it may hold anything, NaN in the tests).

16-32 query rows (nhead 16 / 32): the same kernel, producer and two consumers with the block's 64 tokens
on the MMAs' M side (S^T = K q^T, the softmax down the columns, P^T through each consumer's own shared buffer,
O^T += V^T P^T), 2 KV stages in bf16, 3 in fp8. Each consumer multiplies all of S^T; with gluon_split_k (fp8's
config) they split its Q@K^T by K and add their partial products through shared memory (fp8 at 32 rows then takes 2
stages), in rows swizzled against bank conflicts with gluon_swizzled_parts (fp8's config: 0.86-0.88x unswizzled at 32
rows).

fp8 (e4m3fn) KV: q is split first into two fp8 parts with per-row scales (a small Triton kernel; the Triton 64-row
tile splits it in-kernel the same way), at one scale so that both parts' Q@K^T is one MMA chain (gluon_one_chain), or
cast to one part (fp8_q_one_part: triton_fp8q's numerics). Q@K^T runs as fp8 wgmmas on the tile as loaded, and each
consumer converts its half of V to fp16 into its own shared buffer and releases the stage before its softmax.

Scope (mla_gluon_scope.unsupported_reason): bf16 q, bf16 or e4m3fn KV, nhead 16, 32 or a multiple of 64 (more than
one query token per sequence, MTP, only with 64-head tiles: the schedule then takes the query tokens one by one,
rocbench.kernels.mla_decode.one_token_lens, and a work item's sequence is b // qlen for its pages), page_size a
multiple of 64, the persistent schedule (rocbench.formats.mla_schedule) built for the tile (one program per SM), the
persistent kernel's reduce for split units.

Measured against the Triton tile (H100, 2026-12-06, results/examples/mla-gluon-ws-ab-h100, 96 + 192 gated rows):
batch 64 / 128 bf16 1.01-1.79x its kernel time (nhead 128 batch 64 303.7 -> 171.2 us, 33 -> 58% of the roofline),
fp8 1.03-1.31x; batch 1 bf16 0.86-1.01x, fp8 0.53-0.71x. Built in where the KV read is large enough
(mla_config.GLUON_MIN_KV_TOKENS), MTP at 64-head tiles included; its knobs' measurements are mla_config's
(results/examples/mla-gluon-knobs-ab-h100).
"""
from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

import triton.language as tl

from rocbench.formats.mla_schedule import WORK_INFO_COLS
from rocbench.formats.paged_kv import KV_LORA_RANK, QK_ROPE_DIM
from rocbench.kernels.mla_attend import _row_amax

# The TMA copy: Triton 3.6's async_copy_global_to_shared, renamed async_load later (3.9 keeps the old name only to
# raise). The GPU runs used 3.6, which mla_gluon_scope requires; the new name lets later Tritons compile this module
# offline (tests/test_mla_gluon.py)
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
# a barrier of this partition's warps: thread_barrier in 3.6, barrier later
_partition_barrier = getattr(gl, "thread_barrier", None) or gl.barrier
TILE = 64  # query rows per tile, tokens per KV block, channels per TMA box (host side)
BLOCK = gl.constexpr(TILE)
BOXES = gl.constexpr((KV_LORA_RANK + QK_ROPE_DIM) // 64)  # 9: eight latent boxes, one rope box
HALF = gl.constexpr(KV_LORA_RANK // 64 // 2)  # 4: latent boxes per consumer (its 256 output channels)
NEG_BIG = gl.constexpr(-1.0e30)
D_LATENT = gl.constexpr(KV_LORA_RANK)


@gluon.jit
def _program_items(WORK_INDPTR):
    """This program's work items [first, last) of the schedule (the same walk in every partition)."""
    pid = gl.program_id(0)
    return gl.load(WORK_INDPTR + pid), gl.load(WORK_INDPTR + pid + 1)


@gluon.jit
def _work_item(WORK_INFO, item, INFO_COLS: gl.constexpr):
    """(sequence, head group, kv_start, kv_end, partial slot or -1): rocbench.formats.mla_schedule's WI_* columns."""
    info = WORK_INFO + item * INFO_COLS
    return gl.load(info + 0), gl.load(info + 1), gl.load(info + 2), gl.load(info + 3), gl.load(info + 4)


@gluon.jit
def _q_scales(HI_SCALE, LO_SCALE, KV_SCALE, row0, rows, qk_scale):
    """(kv_scale, hi_scale / lo_scale, lo_scale * qk_scale * kv_scale) for q's rows row0 + rows: the low part's scale
    carries the softmax's and the KV's, the high part's product is rescaled onto it."""
    kv_scale = gl.load(KV_SCALE)
    lo_scale = gl.load(LO_SCALE + row0 + rows)
    return kv_scale, gl.load(HI_SCALE + row0 + rows) / lo_scale, lo_scale * (qk_scale * kv_scale)


@gluon.jit
def _item_start(WORK_INFO, item, first, q_full, INFO_COLS: gl.constexpr):
    """A work item's _work_item, once its q is in shared memory."""
    b, g, kv_start, kv_end, slot = _work_item(WORK_INFO, item, INFO_COLS)
    mbarrier.wait(q_full, (item - first) & 1)
    return b, g, kv_start, kv_end, slot


@gluon.jit
def _fp8_row_scales(HI_SCALE, LO_SCALE, KV_SCALE, row0, qk_scale, rows_layout: gl.constexpr, s_rows: gl.constexpr):
    """A 64-row fp8 tile's (KV scale, hi_over_lo, the scores' scale), the last two as columns in the scores' row
    layout s_rows (_q_scales of rows row0 .., laid out in rows_layout)."""
    rows = gl.arange(0, BLOCK, layout=rows_layout)
    kv_scale, hi_over_lo, lo_scale = _q_scales(HI_SCALE, LO_SCALE, KV_SCALE, row0, rows, qk_scale)
    return kv_scale, gl.convert_layout(hi_over_lo, s_rows)[:, None], gl.convert_layout(lo_scale, s_rows)[:, None]


@gluon.jit
def _zeros4(shape: gl.constexpr, layout: gl.constexpr):
    """Four zero fp32 accumulators: a consumer's four 64-channel boxes."""
    return (gl.zeros(shape, gl.float32, layout), gl.zeros(shape, gl.float32, layout),
            gl.zeros(shape, gl.float32, layout), gl.zeros(shape, gl.float32, layout))


@gluon.jit
def _scaled4(acc0, acc1, acc2, acc3, factor):
    """A consumer's four accumulators times factor (a scalar, or a column per row)."""
    return acc0 * factor, acc1 * factor, acc2 * factor, acc3 * factor


@gluon.jit
def _item_end(q_empty, acc0, acc1, acc2, acc3, kv_scale, FP8: gl.constexpr):
    """An item's q released to the producer, and its accumulators (fp8: times the KV's scale, V's)."""
    mbarrier.arrive(q_empty, count=1)
    if FP8:
        return _scaled4(acc0, acc1, acc2, acc3, kv_scale)
    return acc0, acc1, acc2, acc3


@gluon.jit
def _qk_chain(q_parts, q_first, kv_smem, first_box, acc, TOKENS_M: gl.constexpr, TOKEN_HALF: gl.constexpr = -1,
              BOX0: gl.constexpr = 0, NBOX: gl.constexpr = BOXES):
    """The 64-channel boxes' Q@K^T products accumulated onto acc, issued together: S (64 query rows on M) or S^T
    (TOKENS_M: the block's tokens on M); TOKEN_HALF 0 or 1: S for the block's first or second 32 tokens only. q_first:
    q's first box, 0 (_q_first). Boxes BOX0 .. BOX0 + NBOX - 1 of the nine (_my_boxes: a consumer's share of K)."""
    for j in gl.static_range(BOX0, BOX0 + NBOX):
        k = _kv_box(kv_smem, first_box + j)
        if TOKEN_HALF >= 0:
            k = k.slice(TOKEN_HALF * (BLOCK // 2), BLOCK // 2)
        if TOKENS_M:
            acc = warpgroup_mma(k, q_parts.index(q_first + j).permute((1, 0)), acc, is_async=True)
        else:
            acc = warpgroup_mma(q_parts.index(q_first + j), k.permute((1, 0)), acc, is_async=True)
    return acc


@gluon.jit
def _q_first(stage, shared):
    """q's first box for a block's Q@K^T: 0. With MlaKernelConfig.gluon_remat_q (shared[27] 1) a value the compiler
    cannot know is 0, so that q's wgmma descriptors are computed at each block rather than hoisted out of the loop,
    where the fp8 64-row tile spills them (offline sm_90: 24 64-bit values stored, reloaded before the QGMMAs)."""
    return (stage >> 24) * shared[27]


@gluon.constexpr_function
def _q_parts(q_lo_smem, fp8):
    """How many fp8 parts q comes in: 2, or 1 where _kernel gave the low part a one-word marker (Q_ONE_PART; the
    partitions get no constexpr, so a buffer's shape says it); 1 for bf16 q."""
    return 2 if fp8 and q_lo_smem.shape[0] == BOXES else 1


@gluon.jit
def _fp8_scores(q_smem, q_lo_smem, q_first, kv_smem, first_box, zeros, hi_over_lo, lo_scale, TOKENS_M: gl.constexpr,
                ONE_CHAIN: gl.constexpr, TOKEN_HALF: gl.constexpr = -1, BOX0: gl.constexpr = 0,
                NBOX: gl.constexpr = BOXES, v16_smem=None, DV_BASE: gl.constexpr = 0, CONVERT: gl.constexpr = False):
    """q's fp8 parts' scores (scaled for exp2; hi_over_lo and lo_scale broadcast to zeros' shape). One part (q cast to
    fp8 at split_q's one scale): its product. Two: the low part's product accumulated onto the high part's, rescaled,
    so that one product is live (as the product's tile); ONE_CHAIN (the parts at one scale, split_q's one_scale): the
    18 + 18 MMAs as one chain, waited for once. BOX0, NBOX: _qk_chain's boxes (the product over those alone).
    CONVERT (MlaKernelConfig.gluon_convert_under_qk): this consumer's V boxes converted to fp16 into v16_smem
    (_v_to_f16) while the MMAs run, before their wait; the caller releases the stage after it (the MMAs read K)."""
    s = _qk_chain(q_smem, q_first, kv_smem, first_box, zeros, TOKENS_M, TOKEN_HALF, BOX0, NBOX)
    if _q_parts(q_lo_smem, True) == 1:
        if CONVERT:
            _v_to_f16(kv_smem, v16_smem, first_box, DV_BASE)
        s = warpgroup_mma_wait(num_outstanding=0, deps=[s]) * lo_scale
    else:
        s = _second_part_scores(s, q_lo_smem, q_first, kv_smem, first_box, hi_over_lo, lo_scale, TOKENS_M, ONE_CHAIN,
                                TOKEN_HALF, BOX0, NBOX, v16_smem, DV_BASE, CONVERT)
    return s


@gluon.constexpr_function
def _converts_under_qk(exchanged):
    """MlaKernelConfig.gluon_convert_under_qk, as the split-S exchanges' barrier array says it: a fifth, unused
    barrier (the partitions get no constexpr; see _q_parts)."""
    return exchanged.shape[0] == 5


@gluon.jit
def _second_part_scores(s, q_lo_smem, q_first, kv_smem, first_box, hi_over_lo, lo_scale, TOKENS_M: gl.constexpr,
                        ONE_CHAIN: gl.constexpr, TOKEN_HALF: gl.constexpr, BOX0: gl.constexpr, NBOX: gl.constexpr,
                        v16_smem, DV_BASE: gl.constexpr, CONVERT: gl.constexpr):
    """_fp8_scores with q's low part, s the high part's MMAs issued (CONVERT: V converted under the one chain, or
    under the high part's MMAs)."""
    # two returns, not a branch that redefines s: ONE_CHAIN reaches the partitions as a runtime i1 (see _kernel), and
    # the branch's sides would give s two types (an MMA accumulator, a tensor)
    if ONE_CHAIN:
        s = _qk_chain(q_lo_smem, q_first, kv_smem, first_box, s, TOKENS_M, TOKEN_HALF, BOX0, NBOX)
        if CONVERT:
            _v_to_f16(kv_smem, v16_smem, first_box, DV_BASE)
        return warpgroup_mma_wait(num_outstanding=0, deps=[s]) * lo_scale
    if CONVERT:
        _v_to_f16(kv_smem, v16_smem, first_box, DV_BASE)
    s = warpgroup_mma_wait(num_outstanding=0, deps=[s]) * hi_over_lo
    s = _qk_chain(q_lo_smem, q_first, kv_smem, first_box, s, TOKENS_M, TOKEN_HALF, BOX0, NBOX)
    return warpgroup_mma_wait(num_outstanding=0, deps=[s]) * lo_scale


@gluon.jit
def _row_scores(shared, stage, zeros, hi_over_lo, s_scale, ONE_CHAIN: gl.constexpr, TOKEN_HALF: gl.constexpr = -1):
    """The 64-row tile's scaled scores for the KV block in stage (TOKEN_HALF 0 or 1: of its first or second 32
    tokens): fp8 q's parts' products (_fp8_scores), or bf16's one chain issued together and waited for once."""
    q_smem, kv_smem, q_lo_smem = shared[2], shared[3], shared[16]
    if kv_smem.dtype.is_fp8():
        return _fp8_scores(q_smem, q_lo_smem, _q_first(stage, shared), kv_smem, stage * BOXES, zeros, hi_over_lo,
                           s_scale, False, ONE_CHAIN, TOKEN_HALF)
    s = _qk_chain(q_smem, _q_first(stage, shared), kv_smem, stage * BOXES, zeros, False, TOKEN_HALF)
    return warpgroup_mma_wait(num_outstanding=0, deps=[s]) * s_scale


@gluon.jit
def _producer(shared, PAGE_SIZE: gl.constexpr, INFO_COLS: gl.constexpr):
    """The loads: q once per work item (FP8: its fp8 parts), the KV blocks through the ring, each completion
    signalled by the TMA."""
    q_desc, kv_desc, q_smem, kv_smem, bars, WORK_INDPTR, WORK_INFO, KV_INDPTR, KV_INDICES, nhead = shared[:10]
    q_lo_desc = shared[21]
    q_lo_smem = shared[16]
    qlen = shared[23]  # query tokens per sequence: item b is query token b % qlen of sequence b // qlen
    q_full, q_empty, kv_full, kv_empty = bars
    FP8: gl.constexpr = kv_desc.dtype.is_fp8()
    ROWS: gl.constexpr = q_desc.block_type.shape[0]  # query rows per tile
    NUM_STAGES: gl.constexpr = kv_full.shape[0]
    first, last = _program_items(WORK_INDPTR)
    it = 0
    for item in range(first, last):
        b, g, kv_start, kv_end, slot = _work_item(WORK_INFO, item, INFO_COLS)
        page_start = gl.load(KV_INDPTR + b // qlen)
        n_item = item - first
        # q of this item, once both consumers released the last one (mbarriers start at phase 1 complete)
        mbarrier.wait(q_empty, (n_item & 1) ^ 1)
        mbarrier.expect(q_full, _q_parts(q_lo_smem, FP8) * BOXES * q_desc.block_type.nbytes)
        for j in gl.static_range(BOXES):
            _tma_load(q_desc, [b * nhead + g * ROWS, j * BLOCK], q_full, q_smem.index(j))
            if _q_parts(q_lo_smem, FP8) == 2:
                _tma_load(q_lo_desc, [b * nhead + g * ROWS, j * BLOCK], q_full, q_lo_smem.index(j))
        for start in range(kv_start, kv_end, BLOCK):
            stage = it % NUM_STAGES
            mbarrier.wait(kv_empty.index(stage), ((it // NUM_STAGES) & 1) ^ 1)
            page = gl.load(KV_INDICES + page_start + start // PAGE_SIZE)
            # a partial last block ends at kv_end: its rows before the page are out of bounds (zeros)
            tok = start % PAGE_SIZE + gl.minimum(kv_end - start, BLOCK) - BLOCK
            bar = kv_full.index(stage)
            mbarrier.expect(bar, BOXES * kv_desc.block_type.nbytes)
            for j in gl.static_range(BOXES):
                _tma_load(kv_desc, [page, tok, j * BLOCK], bar, kv_smem.index(stage * BOXES + j))
            it += 1


@gluon.jit
def _consumer(shared, DV_BASE: gl.constexpr, INFO_COLS: gl.constexpr, ONE_CHAIN: gl.constexpr):
    """One consumer warp group: channels DV_BASE * 64 .. + 256 of the output for every item of this program. FP8: q's
    two fp8 parts' products with the fp8 KV tile as loaded, V converted to fp16 into this group's own buffer."""
    q_desc, kv_desc, q_smem, kv_smem, bars, WORK_INDPTR, WORK_INFO, KV_INDPTR, KV_INDICES, nhead = shared[:10]
    OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, qk_scale = shared[10:16]
    q_lo_smem, v16_smem, HI_SCALE, LO_SCALE, KV_SCALE = shared[16:21]
    q_full, q_empty, kv_full, kv_empty = bars
    FP8: gl.constexpr = kv_desc.dtype.is_fp8()
    NUM_STAGES: gl.constexpr = kv_full.shape[0]
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK, 16])
    qk_k: gl.constexpr = 32 if FP8 else 16  # an MMA's K: 32 bytes of its operands
    qk_mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                     instr_shape=[16, BLOCK, qk_k])
    rows_l: gl.constexpr = gl.SliceLayout(1, mma)
    first, last = _program_items(WORK_INDPTR)
    it = 0
    for item in range(first, last):
        b, g, kv_start, kv_end, slot = _item_start(WORK_INFO, item, first, q_full, INFO_COLS)
        kv_scale, hi_over_lo, s_scale = 1.0, qk_scale, qk_scale
        if FP8:
            kv_scale, hi_over_lo, s_scale = _fp8_row_scales(HI_SCALE, LO_SCALE, KV_SCALE, b.to(gl.int64) * nhead
                                                            + g * BLOCK, qk_scale, rows_l, gl.SliceLayout(1, qk_mma))
        m_i = gl.full([BLOCK], NEG_BIG, gl.float32, rows_l)
        l_i = gl.zeros([BLOCK], gl.float32, rows_l)
        acc0, acc1, acc2, acc3 = _zeros4([BLOCK, BLOCK], mma)
        for start in range(kv_start, kv_end, BLOCK):
            stage = it % NUM_STAGES
            mbarrier.wait(kv_full.index(stage), (it // NUM_STAGES) & 1)
            s = _row_scores(shared, stage, gl.zeros([BLOCK, BLOCK], gl.float32, qk_mma), hi_over_lo, s_scale,
                            ONE_CHAIN)
            m_i, l_i, acc0, acc1, acc2, acc3, p_a = _softmax_pv(
                gl.convert_layout(s, mma), start, kv_end, m_i, l_i, acc0, acc1, acc2, acc3, kv_smem, v16_smem,
                kv_empty, stage, DV_BASE, FP8)
            acc0, acc1, acc2, acc3, p_a = warpgroup_mma_wait(num_outstanding=0, deps=[acc0, acc1, acc2, acc3, p_a])
            if not FP8:
                mbarrier.arrive(kv_empty.index(stage), count=1)
            it += 1
        acc0, acc1, acc2, acc3 = _item_end(q_empty, acc0, acc1, acc2, acc3, kv_scale, FP8)
        _store4(acc0, acc1, acc2, acc3, l_i, m_i, b, g, slot, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, DV_BASE,
                BLOCK)


@gluon.jit
def _softmax_pv(s, start, kv_end, m_i, l_i, acc0, acc1, acc2, acc3, kv_smem, v16_smem, kv_empty, stage,
                DV_BASE: gl.constexpr, FP8: gl.constexpr):
    """One KV block of the 64-row tile after its scores s (scaled, in the P V MMA's layout): fp8's V conversion (which
    releases the stage), the online softmax, and this group's four P V MMAs issued, not waited for."""
    mma: gl.constexpr = s.type.layout
    p_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    if FP8:
        _v_to_f16_and_release(kv_smem, v16_smem, kv_empty, stage, DV_BASE)
    # row i of the block holds token first_tok + i (a partial last block was read to end at kv_end)
    first_tok = start + gl.minimum(kv_end - start, BLOCK) - BLOCK
    visible = (first_tok + gl.arange(0, BLOCK, layout=gl.SliceLayout(0, mma))) >= start
    s = gl.where(visible[None, :], s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1))
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + gl.sum(p, 1)
    p_a = gl.convert_layout(p.to(_v_box(kv_smem, v16_smem, stage, DV_BASE).dtype), p_op)  # P in V's dtype
    acc0 = warpgroup_mma(p_a, _v_box(kv_smem, v16_smem, stage, DV_BASE + 0), acc0 * alpha[:, None], is_async=True)
    acc1 = warpgroup_mma(p_a, _v_box(kv_smem, v16_smem, stage, DV_BASE + 1), acc1 * alpha[:, None], is_async=True)
    acc2 = warpgroup_mma(p_a, _v_box(kv_smem, v16_smem, stage, DV_BASE + 2), acc2 * alpha[:, None], is_async=True)
    acc3 = warpgroup_mma(p_a, _v_box(kv_smem, v16_smem, stage, DV_BASE + 3), acc3 * alpha[:, None], is_async=True)
    return m_new, l_i, acc0, acc1, acc2, acc3, p_a


@gluon.jit
def _consumer_split_s(shared, DV_BASE: gl.constexpr, INFO_COLS: gl.constexpr, ONE_CHAIN: gl.constexpr):
    """The 64-row tile with S split between the two consumers (gluon_split_s, FlashMLA's division of work): consumer c
    computes S for the block's tokens 32c .. 32c + 31 only (half the Q@K^T MMAs that _consumer issues, where each
    consumer computes all of S), the two exchange their row maxima through shared memory, each writes its half of P
    there, and each multiplies the whole P by V for its own 256 output channels. Two exchanges per block, each a
    partition barrier and an mbarrier of both consumers; the row sums are exchanged once per item."""
    q_desc, kv_desc, q_smem, kv_smem, bars, WORK_INDPTR, WORK_INFO, KV_INDPTR, KV_INDICES, nhead = shared[:10]
    OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, qk_scale = shared[10:16]
    q_lo_smem, v16_smem, HI_SCALE, LO_SCALE, KV_SCALE = shared[16:21]
    stats_smem, p_halves, exchanged = shared[24:27]
    q_full, q_empty, kv_full, kv_empty = bars
    FP8: gl.constexpr = kv_desc.dtype.is_fp8()
    NUM_STAGES: gl.constexpr = kv_full.shape[0]
    HALF_BLOCK: gl.constexpr = BLOCK // 2
    MINE: gl.constexpr = DV_BASE // HALF  # this consumer's tokens: the block's first or second half
    qk_k: gl.constexpr = 32 if FP8 else 16
    s_mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                    instr_shape=[16, HALF_BLOCK, qk_k])
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK, 16])
    rows_s: gl.constexpr = gl.SliceLayout(1, s_mma)
    toks = MINE * HALF_BLOCK + gl.arange(0, HALF_BLOCK, layout=gl.SliceLayout(0, s_mma))
    first, last = _program_items(WORK_INDPTR)
    it = 0
    for item in range(first, last):
        b, g, kv_start, kv_end, slot = _item_start(WORK_INFO, item, first, q_full, INFO_COLS)
        kv_scale, hi_over_lo, s_scale = 1.0, qk_scale, qk_scale
        if FP8:  # per query row: this consumer's scores' rows
            kv_scale, hi_over_lo, s_scale = _fp8_row_scales(HI_SCALE, LO_SCALE, KV_SCALE, b.to(gl.int64) * nhead
                                                            + g * BLOCK, qk_scale, rows_s, rows_s)
        m_i = gl.full([BLOCK], NEG_BIG, gl.float32, rows_s)
        l_i = gl.zeros([BLOCK], gl.float32, rows_s)  # this consumer's tokens' share of the row sums
        acc0, acc1, acc2, acc3 = _zeros4([BLOCK, BLOCK], mma)
        for start in range(kv_start, kv_end, BLOCK):
            stage = it % NUM_STAGES
            mbarrier.wait(kv_full.index(stage), (it // NUM_STAGES) & 1)
            if FP8 and _converts_under_qk(exchanged):  # V converted while the Q@K^T MMAs run
                s = _fp8_scores(q_smem, q_lo_smem, _q_first(stage, shared), kv_smem, stage * BOXES,
                                gl.zeros([BLOCK, HALF_BLOCK], gl.float32, s_mma), hi_over_lo, s_scale, False,
                                ONE_CHAIN, MINE, 0, BOXES, v16_smem, DV_BASE, True)
                mbarrier.arrive(kv_empty.index(stage), count=1)
            else:
                s = _row_scores(shared, stage, gl.zeros([BLOCK, HALF_BLOCK], gl.float32, s_mma), hi_over_lo,
                                s_scale, ONE_CHAIN, MINE)
                if FP8:
                    _v_to_f16_and_release(kv_smem, v16_smem, kv_empty, stage, DV_BASE)
            first_tok = start + gl.minimum(kv_end - start, BLOCK) - BLOCK
            s = gl.where(((first_tok + toks) >= start)[None, :], s, float("-inf"))
            # the row maxima of both halves: each consumer's through shared memory
            m_mine = gl.max(s, 1)
            stats_smem.slice(MINE * BLOCK, BLOCK).store(m_mine)
            _exchange(exchanged.index(0), it)
            m_new = gl.maximum(m_i, gl.maximum(m_mine, stats_smem.slice((1 - MINE) * BLOCK, BLOCK).load(rows_s)))
            alpha = gl.exp2(m_i - m_new)
            p = gl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + gl.sum(p, 1)
            m_i = m_new
            p_halves.index(MINE).store(p.to(p_halves.dtype))
            fence_async_shared()  # P's stores before either consumer's MMAs read them
            _exchange(exchanged.index(1), it)
            acc0, acc1, acc2, acc3 = _scaled4(acc0, acc1, acc2, acc3,
                                              gl.convert_layout(alpha, gl.SliceLayout(1, mma))[:, None])
            for h in gl.static_range(2):  # P's two token halves by V's
                p_h = p_halves.index(h)
                acc0 = warpgroup_mma(p_h, _v_half(kv_smem, v16_smem, stage, DV_BASE + 0, h), acc0, is_async=True)
                acc1 = warpgroup_mma(p_h, _v_half(kv_smem, v16_smem, stage, DV_BASE + 1, h), acc1, is_async=True)
                acc2 = warpgroup_mma(p_h, _v_half(kv_smem, v16_smem, stage, DV_BASE + 2, h), acc2, is_async=True)
                acc3 = warpgroup_mma(p_h, _v_half(kv_smem, v16_smem, stage, DV_BASE + 3, h), acc3, is_async=True)
            acc0, acc1, acc2, acc3 = warpgroup_mma_wait(num_outstanding=0, deps=[acc0, acc1, acc2, acc3])
            if not FP8:
                mbarrier.arrive(kv_empty.index(stage), count=1)
            it += 1
        acc0, acc1, acc2, acc3 = _item_end(q_empty, acc0, acc1, acc2, acc3, kv_scale, FP8)
        # the row sums: both halves' (the same maxima scaled them)
        stats_smem.slice(MINE * BLOCK, BLOCK).store(l_i)
        _exchange(exchanged.index(2), item - first)
        l_i = l_i + stats_smem.slice((1 - MINE) * BLOCK, BLOCK).load(rows_s)
        _exchange(exchanged.index(3), item - first)  # both read before the next item's maxima overwrite them
        l_o = gl.convert_layout(l_i, gl.SliceLayout(1, mma))
        m_o = gl.convert_layout(m_i, gl.SliceLayout(1, mma))
        _store4(acc0, acc1, acc2, acc3, l_o, m_o, b, g, slot, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, DV_BASE,
                BLOCK)


@gluon.jit
def _exchange(bar, n):
    """Both consumers past this point, for the n-th time (each barrier completes once per n): this consumer's shared
    stores done (its partition's barrier), then one arrival each on `bar` (count 2) and the wait for both."""
    _partition_barrier()
    mbarrier.arrive(bar, count=1)
    mbarrier.wait(bar, n & 1)


@gluon.jit
def _consumer_tokens_m(shared, DV_BASE: gl.constexpr, INFO_COLS: gl.constexpr, ONE_CHAIN: gl.constexpr):
    """The 16-32 row tile's consumer: the block's 64 tokens on the MMAs' M side (S^T = K q^T, O^T += V^T P^T, the
    softmax down the columns), P^T through this group's own shared buffer, channels DV_BASE * 64 .. + 256. With
    gluon_split_k (_kernel's SPLIT_K: a barrier of one) S^T is split between the consumers by K: each multiplies its
    share of the nine boxes (_my_boxes) and the two add their partial products through shared memory
    (_add_partial_scores), so each block's K tile is read by one set of MMAs, not by both consumers'."""
    q_desc, kv_desc, q_smem, kv_smem, bars, WORK_INDPTR, WORK_INFO, KV_INDPTR, KV_INDICES, nhead = shared[:10]
    OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, qk_scale = shared[10:16]
    q_lo_smem, v16_smem, HI_SCALE, LO_SCALE, KV_SCALE = shared[16:21]
    p_smem = shared[22]
    s_parts, exchanged = shared[24], shared[26]
    SPLIT_K: gl.constexpr = exchanged.shape[0] == 1  # the constexpr as a buffer's shape, as SPLIT_S (see _kernel)
    BOX0: gl.constexpr = _my_boxes(DV_BASE, SPLIT_K)[0]
    NBOX: gl.constexpr = _my_boxes(DV_BASE, SPLIT_K)[1]
    q_full, q_empty, kv_full, kv_empty = bars
    FP8: gl.constexpr = kv_desc.dtype.is_fp8()
    ROWS: gl.constexpr = q_desc.block_type.shape[0]
    NUM_STAGES: gl.constexpr = kv_full.shape[0]
    qk_k: gl.constexpr = 32 if FP8 else 16
    s_mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, ROWS, qk_k])
    o_mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, ROWS, 16])
    toks = gl.arange(0, BLOCK, layout=gl.SliceLayout(1, s_mma))
    qrows = gl.arange(0, ROWS, layout=gl.SliceLayout(0, s_mma))
    first, last = _program_items(WORK_INDPTR)
    it = 0
    for item in range(first, last):
        b, g, kv_start, kv_end, slot = _item_start(WORK_INFO, item, first, q_full, INFO_COLS)
        kv_scale = 1.0
        if FP8:  # per query row: a column of S^T
            kv_scale, hi_over_lo, lo_scale = _q_scales(HI_SCALE, LO_SCALE, KV_SCALE, b.to(gl.int64) * nhead + g * ROWS,
                                                       qrows, qk_scale)
        m_i = gl.full([ROWS], NEG_BIG, gl.float32, gl.SliceLayout(0, s_mma))
        l_i = gl.zeros([ROWS], gl.float32, gl.SliceLayout(0, s_mma))
        acc0, acc1, acc2, acc3 = _zeros4([BLOCK, ROWS], o_mma)
        for start in range(kv_start, kv_end, BLOCK):
            stage = it % NUM_STAGES
            mbarrier.wait(kv_full.index(stage), (it // NUM_STAGES) & 1)
            s = gl.zeros([BLOCK, ROWS], gl.float32, s_mma)
            if FP8:  # q's two parts' products
                s = _fp8_scores(q_smem, q_lo_smem, _q_first(stage, shared), kv_smem, stage * BOXES, s,
                                hi_over_lo[None, :], lo_scale[None, :], True, ONE_CHAIN, -1, BOX0, NBOX)
            else:
                s = _qk_chain(q_smem, _q_first(stage, shared), kv_smem, stage * BOXES, s, True, -1, BOX0, NBOX)
                s = warpgroup_mma_wait(num_outstanding=0, deps=[s]) * qk_scale
            if SPLIT_K:
                _offer_partial_scores(s, s_parts, exchanged, it, DV_BASE)
            if FP8:  # V to fp16 in this group's buffer (under the exchange, with SPLIT_K)
                _v_to_f16_and_release(kv_smem, v16_smem, kv_empty, stage, DV_BASE)
            if SPLIT_K:
                s = _add_partial_scores(s, s_parts, exchanged, it, DV_BASE)
            first_tok = start + gl.minimum(kv_end - start, BLOCK) - BLOCK
            s = gl.where(((first_tok + toks) >= start)[:, None], s, float("-inf"))
            m_new = gl.maximum(m_i, gl.max(s, 0))
            alpha = gl.exp2(m_i - m_new)
            p = gl.exp2(s - m_new[None, :])
            l_i = l_i * alpha + gl.sum(p, 0)
            m_i = m_new
            p_smem.store(p.to(p_smem.dtype))
            fence_async_shared()  # P^T's stores before the MMAs read it
            alpha_o = gl.convert_layout(alpha, gl.SliceLayout(0, o_mma))[None, :]
            acc0 = warpgroup_mma(_v_box(kv_smem, v16_smem, stage, DV_BASE + 0).permute((1, 0)), p_smem, acc0 * alpha_o,
                                 is_async=True)
            acc1 = warpgroup_mma(_v_box(kv_smem, v16_smem, stage, DV_BASE + 1).permute((1, 0)), p_smem, acc1 * alpha_o,
                                 is_async=True)
            acc2 = warpgroup_mma(_v_box(kv_smem, v16_smem, stage, DV_BASE + 2).permute((1, 0)), p_smem, acc2 * alpha_o,
                                 is_async=True)
            acc3 = warpgroup_mma(_v_box(kv_smem, v16_smem, stage, DV_BASE + 3).permute((1, 0)), p_smem, acc3 * alpha_o,
                                 is_async=True)
            acc0, acc1, acc2, acc3 = warpgroup_mma_wait(num_outstanding=0, deps=[acc0, acc1, acc2, acc3])
            if not FP8:
                mbarrier.arrive(kv_empty.index(stage), count=1)
            it += 1
        acc0, acc1, acc2, acc3 = _item_end(q_empty, acc0, acc1, acc2, acc3, kv_scale, FP8)
        rows_of: gl.constexpr = gl.SliceLayout(1, gl.permute(acc0, (1, 0)).type.layout)  # [ROWS, 64] views
        l_o = gl.convert_layout(l_i, rows_of)
        m_o = gl.convert_layout(m_i, rows_of)
        _store4(gl.permute(acc0, (1, 0)), gl.permute(acc1, (1, 0)), gl.permute(acc2, (1, 0)), gl.permute(acc3, (1, 0)),
                l_o, m_o, b, g, slot, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, DV_BASE, ROWS)


@gluon.constexpr_function
def _my_boxes(dv_base, split_k):
    """(first box, boxes) of the nine whose Q@K^T a 16-32 row consumer multiplies: all of them, or split by K the
    first five for the first consumer (DV_BASE 0) and the last four for the second."""
    if not split_k:
        return 0, BOXES
    return (0, (BOXES + 1) // 2) if dv_base == 0 else ((BOXES + 1) // 2, BOXES // 2)


@gluon.jit
def _offer_partial_scores(s, s_parts, exchanged, it, DV_BASE: gl.constexpr):
    """This consumer's partial S^T of the it-th block into its slot (two slots per consumer, by the block's parity:
    the other consumer has read the older one before either passes the next exchange), then its arrival."""
    s_parts.index((it % 2) * 2 + DV_BASE // HALF).store(s)
    _partition_barrier()  # the group's stores before its arrival
    mbarrier.arrive(exchanged.index(0), count=1)


@gluon.jit
def _add_partial_scores(s, s_parts, exchanged, it, DV_BASE: gl.constexpr):
    """S^T of the it-th block: this consumer's partial s plus the other's, once both offered theirs (in one order in
    both consumers' sums, mine + other's, which IEEE addition makes the same bits)."""
    mbarrier.wait(exchanged.index(0), it & 1)
    return s + s_parts.index((it % 2) * 2 + 1 - DV_BASE // HALF).load(s.type.layout)


@gluon.constexpr_function
def _partial_scores_layout(rows, swizzled):
    """The shared layout of a consumer's partial S^T ([64 tokens, rows] fp32, rows 16 or 32: 64 or 128 bytes). Its
    stores and loads are the wgmma accumulator's: per 64-bit access, a half-warp covers 4 tokens x 8 rows, 32 bytes of
    each token's row. Unswizzled those four 32-byte pieces fall in the same banks every 128 bytes: 2-way conflicts at
    16 rows, 4-way at 32. Swizzled, the 32-byte vectors are XORed by the token (every 128 bytes' worth of tokens) so
    that the four land in four bank groups (MlaKernelConfig.gluon_swizzled_parts)."""
    if not swizzled:
        return gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    return gl.SwizzledSharedLayout(8, 128 // (rows * 4), rows // 8, [1, 0])


@gluon.jit
def _kv_box(kv_smem, i):
    """Box i of the KV ring as a [64, 64] operand (the TMA writes it as [1, 64, 64], a page's slice)."""
    return kv_smem.index(i).reshape([BLOCK, BLOCK])


@gluon.jit
def _v_box(kv_smem, v16_smem, stage, box):
    """V's box `box` (0-7, 64 output channels) of the block in stage, as P @ V's operand: fp8 KV's in fp16, this
    consumer's converted copy (_v_to_f16_and_release); bf16 KV's in the ring as loaded."""
    return v16_smem.index(box) if kv_smem.dtype.is_fp8() else _kv_box(kv_smem, stage * BOXES + box)


@gluon.jit
def _v_half(kv_smem, v16_smem, stage, box, h: gl.constexpr):
    """_v_box's 32 tokens of half h, as P's half h multiplies them (the S split)."""
    return _v_box(kv_smem, v16_smem, stage, box).slice(h * (BLOCK // 2), BLOCK // 2)


@gluon.jit
def _v_to_f16_and_release(kv_smem, v16_smem, kv_empty, stage, DV_BASE: gl.constexpr):
    """fp8: this consumer's four V boxes of the stage converted to fp16 into its own buffer, then the stage released
    (this consumer is done reading it)."""
    _v_to_f16(kv_smem, v16_smem, stage * BOXES, DV_BASE)
    mbarrier.arrive(kv_empty.index(stage), count=1)


@gluon.jit
def _v_to_f16(kv_smem, v16_smem, first_box, DV_BASE: gl.constexpr):
    """fp8: this consumer's four V boxes of the stage whose first box is first_box, converted to fp16 into its own
    buffer (the stage not released: its Q@K^T MMAs may still be reading it)."""
    v_load: gl.constexpr = gl.BlockedLayout([1, 16], [8, 4], [4, 1], [1, 0])
    for j in gl.static_range(HALF):
        v = _kv_box(kv_smem, first_box + DV_BASE + j).load(v_load)
        v16_smem.index(DV_BASE + j).store(v.to(gl.float16))
    fence_async_shared()  # the V reads before the stage's refill; the stores before the MMAs


@gluon.jit
def _store4(acc0, acc1, acc2, acc3, l_i, m_i, b, g, slot, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh,
            DV_BASE: gl.constexpr, ROWS: gl.constexpr):
    """A consumer's four 64-channel boxes, each [ROWS query rows, 64], through _store."""
    _store(acc0, l_i, m_i, 0, b, g, slot, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, DV_BASE, ROWS)
    _store(acc1, l_i, m_i, 1, b, g, slot, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, DV_BASE, ROWS)
    _store(acc2, l_i, m_i, 2, b, g, slot, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, DV_BASE, ROWS)
    _store(acc3, l_i, m_i, 3, b, g, slot, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, DV_BASE, ROWS)


@gluon.jit
def _store(acc, l_i, m_i, box, b, g, slot, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, DV_BASE: gl.constexpr,
           ROWS: gl.constexpr):
    """64 output channels of a tile, acc [ROWS query rows, 64]: the final output (slot < 0) or a partial and its
    log2-sum-exp (l_i, m_i: [ROWS], sliced from acc's layout)."""
    rows = gl.arange(0, ROWS, layout=gl.SliceLayout(1, acc.type.layout))
    d = (DV_BASE + box) * BLOCK + gl.arange(0, BLOCK, layout=gl.SliceLayout(0, acc.type.layout))
    if slot < 0:
        o = acc / l_i[:, None]
        off = b.to(gl.int64) * stride_ot + (g * ROWS + rows).to(gl.int64) * stride_oh
        gl.store(OUT + off[:, None] + d[None, :], o.to(OUT.dtype.element_ty))
    else:
        has = l_i > 0.0
        o = gl.where(has[:, None], acc / gl.where(has, l_i, 1.0)[:, None], 0.0)
        base = slot.to(gl.int64) * ROWS
        gl.store(PART_OUT + (base + rows)[:, None] * D_LATENT + d[None, :], o)
        if DV_BASE == 0 and box == 0:
            lse = gl.where(has, m_i + gl.log2(gl.where(has, l_i, 1.0)), float("-inf"))
            gl.store(PART_LSE + base + rows, lse)


@gluon.jit
def _consumer_of(shared, DV_BASE: gl.constexpr, INFO_COLS: gl.constexpr, ONE_CHAIN: gl.constexpr):
    """The consumer for the tile q's descriptor holds: 64 rows (S split between the consumers, or each computing all
    of it), or 16-32 with the tokens on M (no S split)."""
    # decided from a buffer's shape: the partitions' constexpr arguments arrive as runtime values (see _kernel), and a
    # branch on one compiled both consumers into each partition, where Triton 3.6's LLVM lowering failed an assertion
    if shared[25].shape[0] == 2:  # P's two halves: S split between the consumers
        _consumer_split_s(shared, DV_BASE, INFO_COLS, ONE_CHAIN)
    elif shared[0].block_type.shape[0] == BLOCK:
        _consumer(shared, DV_BASE, INFO_COLS, ONE_CHAIN)
    else:
        _consumer_tokens_m(shared, DV_BASE, INFO_COLS, ONE_CHAIN)


@gluon.jit
def _first_consumer(shared, PAGE_SIZE: gl.constexpr, INFO_COLS: gl.constexpr, ONE_CHAIN: gl.constexpr):
    _consumer_of(shared, 0, INFO_COLS, ONE_CHAIN)


@gluon.jit
def _second_consumer(shared, PAGE_SIZE: gl.constexpr, INFO_COLS: gl.constexpr, ONE_CHAIN: gl.constexpr):
    _consumer_of(shared, HALF, INFO_COLS, ONE_CHAIN)


@gluon.jit
def _barriers(NUM_STAGES: gl.constexpr):
    """(q_full, q_empty, kv_full, kv_empty), initialized: the producer fills, both consumers release."""
    q_full = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_full = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_full, count=1)
    mbarrier.init(q_empty, count=2)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(kv_full.index(i), count=1)
        mbarrier.init(kv_empty.index(i), count=2)
    fence_async_shared()
    return q_full, q_empty, kv_full, kv_empty


@gluon.jit
def _kernel(q_desc, q_lo_desc, kv_desc, WORK_INDPTR, WORK_INFO, KV_INDPTR, KV_INDICES, OUT, PART_OUT, PART_LSE,
            HI_SCALE, LO_SCALE, KV_SCALE, nhead, qlen, stride_ot, stride_oh, qk_scale, PAGE_SIZE: gl.constexpr,
            INFO_COLS: gl.constexpr, NUM_STAGES: gl.constexpr, ONE_CHAIN: gl.constexpr, SPLIT_S: gl.constexpr,
            CONSUMER_REGS: gl.constexpr, REMAT_Q: gl.constexpr, Q_ONE_PART: gl.constexpr, SPLIT_K: gl.constexpr,
            SWIZZLE_PARTS: gl.constexpr, CONVERT_UNDER_QK: gl.constexpr):
    """The tile q's descriptor holds (64 query rows, or 16-32 with the tokens on M), its buffers and barriers, and the
    three partitions."""
    FP8: gl.constexpr = kv_desc.dtype.is_fp8()
    ROWS: gl.constexpr = q_desc.block_type.shape[0]
    q_smem = gl.allocate_shared_memory(q_desc.dtype, [BOXES, ROWS, BLOCK], q_desc.layout)
    kv_smem = gl.allocate_shared_memory(kv_desc.dtype, [NUM_STAGES * BOXES, 1, BLOCK, BLOCK], kv_desc.layout)
    p_dtype: gl.constexpr = gl.float16 if FP8 else gl.bfloat16  # P @ V's operands: fp8 V is converted to fp16
    if ROWS < BLOCK:  # each consumer's P^T, the second MMA's shared operand
        p_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK, ROWS], p_dtype)
        p0_smem = gl.allocate_shared_memory(p_dtype, [BLOCK, ROWS], p_layout)
        p1_smem = gl.allocate_shared_memory(p_dtype, [BLOCK, ROWS], p_layout)
    else:
        p0_smem = q_smem
        p1_smem = q_smem
    if FP8:  # q's low part (one part: a marker of one word, which _q_parts reads); each consumer's V in fp16
        if Q_ONE_PART:
            q_lo_smem = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
        else:
            q_lo_smem = gl.allocate_shared_memory(q_lo_desc.dtype, [BOXES, ROWS, BLOCK], q_lo_desc.layout)
        v16_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK, BLOCK], gl.float16)
        v16_smem = gl.allocate_shared_memory(gl.float16, [2 * HALF, BLOCK, BLOCK], v16_layout)
    else:
        q_lo_smem = q_smem
        v16_smem = q_smem
    common = (q_desc, kv_desc, q_smem, kv_smem, _barriers(NUM_STAGES), WORK_INDPTR, WORK_INFO, KV_INDPTR, KV_INDICES,
              nhead, OUT, PART_OUT, PART_LSE, stride_ot, stride_oh, qk_scale, q_lo_smem, v16_smem, HI_SCALE, LO_SCALE,
              KV_SCALE, q_lo_desc)
    if SPLIT_S:  # the consumers' exchanges: row maxima (then sums), P's two token halves, four barriers of both
        stats_smem = gl.allocate_shared_memory(gl.float32, [2 * BLOCK], gl.SwizzledSharedLayout(1, 1, 1, [0]))
        p_halves = gl.allocate_shared_memory(p_dtype, [2, BLOCK, BLOCK // 2],
                                             gl.NVMMASharedLayout.get_default_for([BLOCK, BLOCK // 2], p_dtype))
        # a fifth barrier, never used, says CONVERT_UNDER_QK to the consumers (_converts_under_qk)
        exchanged = gl.allocate_shared_memory(gl.int64, [4 + CONVERT_UNDER_QK, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(4):
            mbarrier.init(exchanged.index(i), count=2)
        fence_async_shared()
    elif SPLIT_K:  # 16-32 rows (the launcher sees to it): the partial S^T, two slots per consumer, a barrier of both
        stats_smem = gl.allocate_shared_memory(gl.float32, [4, BLOCK, ROWS],
                                               _partial_scores_layout(ROWS, SWIZZLE_PARTS))
        p_halves = q_smem
        exchanged = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
        mbarrier.init(exchanged.index(0), count=2)
        fence_async_shared()
    else:
        stats_smem = q_smem
        p_halves = q_smem
        exchanged = q_smem
    split = (stats_smem, p_halves, exchanged, REMAT_Q)  # shared[24:28]
    # the partitions get these constexprs as runtime values (Triton 3.6's warp_specialize: ONE_CHAIN arrives as an
    # i1), which LLVM folds; both sides of a branch on one are compiled, so SPLIT_S is a buffer's shape instead
    args0 = (common + (p0_smem, qlen) + split, PAGE_SIZE, INFO_COLS, ONE_CHAIN)
    args1 = (common + (p1_smem, qlen) + split, PAGE_SIZE, INFO_COLS, ONE_CHAIN)
    # registers (setmaxnreg): the launch's 168 x 384 threads is 64K; the producer's warp group (its warp and 3 idle
    # ones) gives up all but 40 (24 beside 240), and the consumers share the rest, the first (the default partition)
    # taking what Triton's AllocateWarpGroups leaves over: 232 or 240, as the second asks
    producer_regs: gl.constexpr = 24 if CONSUMER_REGS > 232 else 40
    gl.warp_specialize([(_first_consumer, args0), (_second_consumer, args1), (_producer, args1[:3])], [4, 1],
                       [CONSUMER_REGS, producer_regs])


@triton.jit
def _e4m3_grid(v):
    """v (fp32, |v| <= 448) rounded to the nearest e4m3 value, ties to even, in fp32 arithmetic: v's exponent (at
    least -6, e4m3's smallest normal one) gives the spacing 2^(e - 3) of its 3 mantissa bits; v over the spacing is
    rounded to an integer by adding and removing 1.5 x 2^23."""
    e = tl.maximum(((v.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127, -6)
    k = v * ((130 - e) << 23).to(tl.float32, bitcast=True)  # v / 2^(e - 3), exact
    k = (k + 12582912.0) - 12582912.0
    return k * ((124 + e) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _split_q_kernel(Q, HI, LO, HI_SCALE, LO_SCALE, num_rows, FP8_MAX: tl.constexpr, ROWS: tl.constexpr,
                    ONE_SCALE: tl.constexpr, STORE_LO: tl.constexpr):
    """q's rows (ROWS per program, num_rows in all) as two fp8 parts with per-row scales, as the product's 64-row fp8
    tile splits them (rocbench.kernels.mla_attend._split_q_fp8): q = hi * hi_scale + lo * lo_scale.

    The high part's residual comes from hi rounded in fp32 (_e4m3_grid), not from the fp8 tile converted back: with
    Triton 3.6 on sm_90 that conversion gave wrong residuals here (H100, 2026-12-06, dumped: the rope tile's columns
    mixed in groups of four, the low scale 24-50x too large), the first GPU runs' wrong fp8 scores."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    ok = (rows < num_rows)[:, None]
    nope = rows[:, None] * 576 + tl.arange(0, 512)[None, :]
    pe = rows[:, None] * 576 + 512 + tl.arange(0, 64)[None, :]
    q_nope = tl.load(Q + nope, mask=ok, other=0.0).to(tl.float32)
    q_pe = tl.load(Q + pe, mask=ok, other=0.0).to(tl.float32)
    amax = _row_amax(q_nope, q_pe)
    hi_scale = tl.where(amax > 0.0, amax / FP8_MAX, 1.0)
    hi_nope = _e4m3_grid(q_nope / hi_scale[:, None])
    hi_pe = _e4m3_grid(q_pe / hi_scale[:, None])
    res_nope = q_nope - hi_nope * hi_scale[:, None]
    res_pe = q_pe - hi_pe * hi_scale[:, None]
    if ONE_SCALE:  # the residual, at most half a step of hi's (16 x hi_scale), fits e4m3 at hi's scale
        lo_scale = hi_scale
    else:
        res_max = _row_amax(res_nope, res_pe)
        lo_scale = tl.where(res_max > 0.0, res_max / FP8_MAX, 1.0)
    fp8: tl.constexpr = HI.dtype.element_ty
    tl.store(HI + nope, hi_nope.to(fp8), mask=ok)  # exact: already on the grid
    tl.store(HI + pe, hi_pe.to(fp8), mask=ok)
    if STORE_LO:  # lo rounded by _e4m3_grid too: the interpreter's cast drops the carry into the exponent (-1.96 ->
        # -1.0, not -2.0)
        tl.store(LO + nope, _e4m3_grid(res_nope / lo_scale[:, None]).to(fp8), mask=ok)
        tl.store(LO + pe, _e4m3_grid(res_pe / lo_scale[:, None]).to(fp8), mask=ok)
    tl.store(HI_SCALE + rows, hi_scale, mask=rows < num_rows)
    tl.store(LO_SCALE + rows, lo_scale, mask=rows < num_rows)


LAUNCH_REGS = 168  # 64K registers over the 3 warp groups (the producer's padded to 4 warps), rounded down to 8
# q rows per program of the split: 4. H100 (2026-12-06), batch 64: 16 rows made 64 programs at nhead 16, each warp
# 3096 instructions in a row (offline sm_90; 896 at 4 rows), and took 7.8 us of the fp8 call's ~92 (Nsight Compute);
# 4 rows: 4.6 us, and the call (two fp8 parts) 91.8 -> 88.4-89.4 us at nhead 16, 127.7 -> 120.1-120.6 at 64, 201.7
# -> 196.7-198.1 at 128. 64 rows spilled: 255 registers and 1.3 KB of stack per thread offline
SPLIT_ROWS = 4


def split_q(q2d: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor | None, hi_scale: torch.Tensor,
            lo_scale: torch.Tensor, one_scale: bool = False):
    """q [rows, 576] into hi, lo (fp8, q's shape) and their per-row scales: q = hi * hi_scale + lo * lo_scale; lo
    None: hi alone (q in one fp8 part, MlaKernelConfig.fp8_q_one_part), lo_scale still written.
    one_scale: lo_scale = hi_scale, so that the two parts' products add in one MMA chain
    (MlaKernelConfig.gluon_one_chain).
    hi's rounding leaves at most half its step, 16 x hi_scale at e4m3's top binade, which lo holds at hi's scale as
    closely as at its own (3 mantissa bits either way; only residuals under 2^-6 x hi_scale go subnormal)."""
    _split_q_kernel[(triton.cdiv(q2d.shape[0], SPLIT_ROWS),)](q2d, hi, hi if lo is None else lo, hi_scale, lo_scale,
                                                              q2d.shape[0], FP8_MAX=torch.finfo(hi.dtype).max,
                                                              ROWS=SPLIT_ROWS, ONE_SCALE=one_scale,
                                                              STORE_LO=lo is not None)


def default_stages(fp8: bool, rows: int, split_k: bool = False) -> int:
    """The KV ring's depth that fits beside q, P, fp8's converted V and the 16-32 row consumers' partial S^T
    (split_k): 2, or 3 for fp8 at 16-32 rows (half-size stages; with split_k at 16 rows only). Offline sm_90 (Triton
    3.6), shared memory per program of the 227 KB: fp8 64-row with q's two parts 222 KB at 2 stages; with q in one
    part 185 KB at 2, 222 KB at 3; fp8 16-row with q in one part 190 KB at 3, 227 KB at 4; with split_k fp8 16-row
    211 KB at 3, 32-row 213 KB at 2 and 249 KB at 3, bf16 32-row 221 KB at 2 (MlaKernelConfig.gluon_stages)."""
    return 3 if fp8 and rows < TILE and (rows == 16 or not split_k) else 2


def _descriptor(t: torch.Tensor, block: list[int]) -> TensorDescriptor:
    dtype = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float8_e4m3fn: gl.float8e4nv}[t.dtype]
    return TensorDescriptor.from_tensor(t, block, gl.NVMMASharedLayout.get_default_for(block, dtype))


def attend(q: torch.Tensor, kv, schedule, sm_scale: float, out: torch.Tensor, workspace, *, one_chain: bool = False,
           regs: int = 232, split_s: bool = False, remat_q: bool = False, q_one_part: bool = False,
           stages: int = 0, split_k: bool = False, swizzled_parts: bool = False,
           convert_under_qk: bool = False) -> None:
    """The persistent decode's attention with this kernel: final rows into out, split units' partials into the
    workspace for the persistent kernel's reduce (the caller's: rocbench.kernels.mla_decode.mla_decode_persistent,
    within mla_gluon_scope.unsupported_reason's scope). fp8 KV: q split into its two fp8 parts first (one small Triton
    kernel, counted in the call's time). one_chain, regs, split_s, remat_q: MlaKernelConfig.gluon_one_chain (fp8 only),
    gluon_regs (each consumer's registers: 232 or 240), gluon_split_s (64-row tiles only), gluon_remat_q. q_one_part
    (MlaKernelConfig.fp8_q_one_part, fp8 only): q in one fp8 part, AITER's numerics (the triton_fp8q backend).
    stages: the KV ring's depth (MlaKernelConfig.gluon_stages; 0: `default_stages`). split_k, swizzled_parts:
    MlaKernelConfig.gluon_split_k (16-32 row tiles only), gluon_swizzled_parts (with split_k). convert_under_qk:
    MlaKernelConfig.gluon_convert_under_qk (fp8 64-row tiles with S split only)."""
    rows = schedule.heads_per_group  # of one query token: the schedule takes them one by one
    assert rows in (16, 32, TILE) and schedule.kv_granularity % TILE == 0 and schedule.batch % kv.batch == 0
    fp8 = kv.kv_buffer.dtype == torch.float8_e4m3fn
    q_one_part = fp8 and q_one_part
    one_chain = fp8 and (one_chain or q_one_part)  # one part: its scale is split_q's one scale
    assert regs in (232, 240), regs
    assert 0 <= stages <= 4, stages  # 0: default_stages
    q2d = q.view(q.shape[0] * q.shape[1], q.shape[2])
    if fp8:
        hi = torch.empty(q2d.shape, dtype=kv.kv_buffer.dtype, device=q.device)
        lo = None if q_one_part else torch.empty_like(hi)
        hi_scale, lo_scale = (torch.empty(q2d.shape[0], dtype=torch.float32, device=q.device) for _ in range(2))
        split_q(q2d, hi, lo, hi_scale, lo_scale, one_scale=one_chain)
        q_desc = _descriptor(hi, [rows, TILE])
        q_lo_desc = q_desc if lo is None else _descriptor(lo, [rows, TILE])
        scales = (hi_scale, lo_scale, kv.kv_scale if kv.kv_scale is not None else torch.ones((), device=q.device))
    else:
        q_desc = q_lo_desc = _descriptor(q2d, [rows, TILE])
        scales = (workspace.partial_lse,) * 3  # unused
    kv_desc = _descriptor(kv.kv_buffer, [1, TILE, TILE])
    log2e = 1.4426950408889634
    args = (q_desc, q_lo_desc, kv_desc, schedule.work_indptr, schedule.work_info, kv.kv_indptr, kv.kv_indices, out,
            workspace.partial_out, workspace.partial_lse, *scales, q.shape[1], schedule.batch // kv.batch,
            out.stride(0), out.stride(1), sm_scale * log2e)
    options = dict(PAGE_SIZE=kv.page_size, INFO_COLS=WORK_INFO_COLS, num_warps=4, maxnreg=LAUNCH_REGS)
    split_k = split_k and rows < TILE
    _kernel[(schedule.num_programs,)](*args, NUM_STAGES=stages or default_stages(fp8, rows, split_k),
                                      ONE_CHAIN=one_chain, SPLIT_S=split_s and rows == TILE, CONSUMER_REGS=regs,
                                      REMAT_Q=int(remat_q), Q_ONE_PART=q_one_part, SPLIT_K=split_k,
                                      SWIZZLE_PARTS=split_k and swizzled_parts,
                                      CONVERT_UNDER_QK=int(convert_under_qk and fp8 and split_s and rows == TILE),
                                      **options)


__all__ = ["attend", "split_q"]
