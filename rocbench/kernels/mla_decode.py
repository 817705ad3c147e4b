"""Portable Triton kernels for absorbed (DeepSeek) MLA decode over a paged latent KV cache.

Two systems under test, same math (see rocbench.suites.mla.reference for the semantics):

- `mla_decode_split_kv`: non-persistent. Grid (head groups, batch, kv splits); every program
  attends its sequence's split and writes a partial output + LSE; a second kernel merges the
  splits with LSE weights.
- `mla_decode_persistent`: exactly `schedule.num_programs` programs, each looping over the work
  items that rocbench.formats.mla_schedule dealt it (load-balanced over all sequences); items
  that cover a whole (sequence, head group) write the output directly, the pieces of split
  ones write partial slots that a reduce kernel merges.

Tile: one program computes BLOCK_M query rows = qlen x heads_per_group (padded to a power of
two >= 16, the smallest tl.dot M) against BLOCK_N cached tokens at a time. Each KV block is
loaded from HBM once, as a [BLOCK_N, 512] latent part and a [BLOCK_N, 64] rope part; the latent
part serves as K (for QK^T) and as V (for PV) (the reload_v variant reads it a second time, from
L2). Online softmax in the exp2 domain, fp32 accumulation. fp8 KV is loaded as fp8 and converted
in registers to q's dtype, or to fp16 with bf16 q (config f16_mma, the built-in choice: q rescaled per
row to fit), or (config fp8_qk, the 64-row tiles' default) Q@K^T runs as two fp8 MMAs
on the tile as loaded, q split into a high and a low fp8 part with per-row scales; the per-tensor KV
scale is folded into the softmax scale (K) and applied to the fp32 accumulator (V), read from device
memory so that nothing syncs the host. With config tokens_as_m the two products run transposed, the block's
tokens on the MMAs' M side (_attend_tokens_as_m), so that 16-32 row tiles can take Hopper's 64-row wgmma.
Pick launch knobs with default_config(kv_dtype, nhead, qlen, device, persistent=...) (the two kernels' best
knobs differ) and the persistent schedule with build_persistent_schedule(..., config).

Both run functions launch a fixed number of kernels whose grids and buffers depend only on host
integers (shapes, split count, schedule sizes): they can be captured in a CUDA graph. They are
deterministic: the reductions are ordered loops, no atomics.

Batch invariance (deterministic inference: a request's output bitwise the same whatever else is in
its batch) needs more than determinism: where a sequence's KV is split, and whether its output
comes from one program or a merge of partials, must depend on that sequence alone. The default
modes do not give that (the split count, and the schedule's quota boundaries, follow the whole
batch). Fixed-size splits do: `mla_decode_split_kv(..., split_tokens=N)` and a schedule built
with `fixed_split_tokens=N` cut every sequence at multiples of N tokens and merge its pieces in KV
order. The config must not depend on the batch either (builtin_config without a batch, not a per-batch one).

Only Triton APIs present in 3.6 are used.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from rocbench.formats.fp8 import E4M3_DTYPES
from rocbench.kernels import tuned
from rocbench.kernels.target import nvidia_gpu
from rocbench.kernels.pdl import dependent_launch_supported, gdc_launch_dependents, gdc_wait, pdl_launch_option
from rocbench.formats.paged_kv import HEAD_DIM, KV_LORA_RANK, QK_ROPE_DIM, PagedKV
from rocbench.formats.mla_schedule import (
    DEFAULT_KV_GRANULARITY,
    WORK_INFO_COLS,
    MlaSchedule,
    build_mla_schedule,
    pick_heads_per_group,
)

LOG2E = 1.4426950408889634
NEG_BIG = tl.constexpr(-1.0e30)  # finite "minus infinity" for running maxima: keeps exp2(m_old - m_new) NaN-free


@dataclass(frozen=True)
class MlaKernelConfig:
    """Launch knobs. block_n tokens per KV block; the latent [block_n, 512] tile of one stage
    is 64 KiB in bf16 at block_n 64, so num_stages 2 fits the 228 KiB of an H100 SM."""

    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 2
    max_tile_rows: int = 32  # query rows (qlen x heads) per tile: 64 needs block_n 32 to fit registers
    prefetch: bool = False  # load block i+1 into registers while computing block i (use with num_stages=1)
    reload_v: bool = False  # load the latent block again (an L2 hit) for PV; see _attend_kv_range
    programs_per_sm: int = 1  # persistent grid = programs_per_sm x SMs (2 when two programs fit an SM)
    # persistent: leave programs idle rather than split finer than this (H200, batch 1 x 4096: 1 granule per
    # program beat 4 -- 23 vs 36 us at nhead 64 -- once the reduce loaded its partials together)
    min_granules_per_program: int = 1
    fp8_qk: bool = False  # fp8 KV: q split into two fp8 parts, Q@K^T as fp8 MMAs on the tile as loaded
    # fp8 KV with bf16 q: the MMAs that take converted KV run in fp16 (see _f16_rows): e4m3 -> fp16 is one exact
    # conversion instruction per two elements, e4m3 -> bf16 goes through fp16 and fp32
    f16_mma: bool = False
    # the reduce launched as a programmatic dependent (CUDA sm_90+; ignored elsewhere): its launch and prologue
    # overlap the attention kernel's tail. Built in at batch 1 with 16 heads (builtin_config); a --tune candidate
    dependent_reduce: bool = False
    # the reduce's shape where the run need not be batch-invariant (0: reduce_shape's choice): output channels
    # per reduce program and partials merged per load. ncu at batch 1 (H200): the reduce is latency-bound (2-8% of
    # issue slots), walking up to 64 partials in loads of 32; one load of 64 merges them in one round trip
    reduce_cols: int = 0
    reduce_chunk: int = 0
    # the KV block's tokens as the MMAs' M side (_attend_tokens_as_m): at 16-32 query rows Hopper's 64-row wgmma
    # instead of mma.sync, K read by the MMA where it was loaded (fp8 as fp8 with fp8_qk). wgmma needs block_n 64
    # with 4 warps (one warp group); prefetch and reload_v do not apply. Offline sm_90 SASS (Triton 3.6) in
    # mla-variants-h200 round 9; a --tune candidate
    tokens_as_m: bool = False
    # fp8 KV to fp16 by a PTX conversion Triton may not move (NVIDIA; else ignored): the tile is converted where it was
    # loaded, and its change into the MMA operand's layout moves 16-bit values instead of permuting bytes (_kv_as).
    # Offline sm_90 SASS in mla-variants-h200 round 10; a --tune candidate
    convert_where_loaded: bool = False


DEFAULT_CONFIG = MlaKernelConfig()

# Tuned on an H100 (Triton 3.6, batch 64 x ctx 4096, page 64, persistent kernel; microseconds
# per call, copy bandwidth 2.98 TB/s read+write), the 64-row tiles re-tuned on an H200 (4.24 TB/s;
# kernel_us, cold L2). `rocbench mla --tune` re-measures the candidates.
# bf16 KV:
#   tile rows <= 16 (nhead 16): 4 warps, 2 programs per SM   119 us, 2.53 TB/s of KV (85%)
#                               (8 warps, 1 program per SM   134 us, 76%)
#   tile rows 32 (nhead 32):    8 warps, block 64            155 us, 65%  (H200: 4 warps, 2 per SM, see below)
#   tile rows 64 (nhead >= 64): H200: block 64, 2 stages     179 us (nhead 64), 316 us (nhead 128; 231 TFLOP/s)
#                               (block 32: 229 / 431 us; block 64 with 3 stages 191 / 340; 1 stage 225 / 401)
BF16_TWO_PER_SM_CONFIG = MlaKernelConfig(num_warps=4, programs_per_sm=2)
# H200 (Triton 3.6, kernel_us): the same at 32 rows, from batch 8 up: persistent batch 8 33.2 vs 34.2 us (8 warps),
# 16: 41.5 vs 48.9, 32: 61.9 vs 84.2, 64: 106.1 vs 153.2, 128: 196.4 vs 290.8; split-KV batch 64 154.6 vs 190.9; MTP
# (nhead 16 x qlen 2, batch 32) 63.8 vs 84.6. At batch 2 8 warps stay ahead (17.9 vs 19.7; batch 1 15.9 vs 16.1, batch 4 equal)
# (mla-variants-h200/rows32.jsonl; `--tune` found it)
BF16_SMALL_BATCH_MAX = 4
BF16_LARGE_TILE_CONFIG = MlaKernelConfig(max_tile_rows=64, block_n=64)
# fp8 KV, converted for the MMAs: Triton keeps a single fp8 latent load that feeds both MMAs
# synchronous (see _attend_kv_range), so either prefetch one block ahead in registers or load the
# latent twice, HBM once and L2 once (reload_v). At 64 rows Q@K^T runs as fp8 MMAs (fp8_qk; H200: 263 us
# at nhead 64, 489 us at nhead 128, against 356 / 678 us converting K too); at 16-32 rows fp8_qk was slower
# (175-180 vs 144 us at nhead 16). With bf16 q the converted MMAs run in fp16 (f16_mma: e4m3 -> fp16 is one
# instruction per two elements, -> bf16 three; offline sm_90 SASS: the 16-row loop 1105 -> 859 instructions per
# warp). H200, kernel_us, batch 64, bf16 -> fp16 MMAs at each row count's best config:
#   16 rows (nhead 16): prefetch, 8 warps 144.5 -> 135.0 us; reload_v, 4 warps, 2 per SM 124.0 us
#   32 rows (nhead 32): reload_v 192.4 -> 177.1 us; reload_v, 3 stages 164.8 us
#   64 rows (nhead 64 / 128): fp8_qk 259.3 -> 242.2 / 486.5 -> 445.7 us
# (results/examples/mla-variants-h200/round3-f16-mma.jsonl). Still slower than bf16 KV (86.7 / 153.1 / 177.3 /
# 313.0 us): the converted tile costs registers and issue slots the bf16 kernel spends on loads.
FP8_SMALL_TILE_CONFIG = MlaKernelConfig(reload_v=True, num_warps=4, programs_per_sm=2, f16_mma=True)
# The persistent kernel at 16-32 rows from batch 16 up: the same with 32-token blocks. Offline sm_90 SASS (Triton
# 3.6): with 64-token blocks it spills 44 registers and reloads 48 per block; with 32 none. H200 `--tune` (persistent,
# ctx 4096, graph us, 2026-12-04): nhead 16 batch 16 44.7 -> 40.5, 64 125.6 -> 110.1, 128 235.8 -> 207.6; nhead 32
# (against FP8_CONFIG below) batch 64 167.2 -> 150.6; at 64 rows it lost (nhead 64 282.3, 128 535.4 vs 246 / 451).
# `make bench` (kernel_us, uniform): persistent nhead 16 batch 64 124.5 -> 107.7, nhead 32 168.2 -> 148.7; but the
# split-KV kernel lost with it (nhead 16 batch 64 118.8 -> 151.2, nhead 32 batch 128 skewed 1229 -> 2070), so
# split-KV keeps FP8_SMALL_TILE_CONFIG and FP8_CONFIG (compare-sweep-deepseek-r1-h200-batch1-tiles-vs-block32-reduce64)
FP8_PERSISTENT_CONFIG = dataclasses.replace(FP8_SMALL_TILE_CONFIG, block_n=32)
# ... but at small batches (persistent, nhead 16, ctx 4096, H200 kernel_us) the 8-warp prefetch config wins, where a
# program gets one or two KV blocks: batch 1 13.8 vs 15.7 us, 2: 14.3 vs 18.4, 4: 18.6 vs 21.2, 8: 25.9 vs 28.6;
# from batch 16 on the one above (then with 64-token blocks: 42.8 vs 43.5, 32: 68.5 vs 73.0, 64: 124.8 vs 135.6;
# mla-variants-h200/smallbatch.jsonl)
FP8_SMALL_TILE_SMALL_BATCH_CONFIG = MlaKernelConfig(prefetch=True, num_stages=1, f16_mma=True)
FP8_SMALL_BATCH_MAX = 8
# 32 rows: split-KV's config at any batch; at batch <= 4 also the persistent kernel's, and at 64 heads (128 in the
# persistent kernel) both kernels' instead of the 64-row tile (see TINY_BATCH_CONFIG below)
FP8_CONFIG = MlaKernelConfig(reload_v=True, num_stages=3, f16_mma=True)
FP8_LARGE_TILE_CONFIG = MlaKernelConfig(max_tile_rows=64, block_n=64, fp8_qk=True, f16_mma=True)
# 16-32 rows with the block's tokens on the MMAs' M side and the tile converted where it was loaded (rounds 9-10 of
# mla-variants-h200: offline 63 / 80 warp-instructions per token at 16 / 32 rows, bf16's built-in 64 / 85). Not
# measured yet: a --tune candidate ("tokens_as_m,fp8qk,cvt,stages1,2/sm")
FP8_TOKENS_AS_M_CONFIG = MlaKernelConfig(tokens_as_m=True, fp8_qk=True, f16_mma=True, convert_where_loaded=True,
                                         num_stages=1, num_warps=4, programs_per_sm=2)
# Batch 1-4, one query row per head (H200, Triton 3.6, persistent, ctx 4096, graph us; `--tune` on 2026-12-04, the
# builtin of the time against the winner). So few sequences leave SMs idle; 16-row tiles, two programs per SM, split
# them into more work items (the KV they share is read once from HBM, then from L2):
#   bf16 nhead 32: batch 1 17.3 -> 16.8, batch 4 26.3 -> 24.8; nhead 64: batch 1 19.7 -> 17.8 (a second run 20.2
#   -> 17.6), batch 4 33.4 -> 33.3. nhead 128 keeps its 64-row tile (batch 1 22.9 vs 23.1).
#   fp8 nhead 32, batch 1: 18.8 -> 15.4 (at batch 4 the 32-row config stays ahead)
TINY_BATCH_MAX = 4
TINY_BATCH_CONFIG = MlaKernelConfig(max_tile_rows=16, programs_per_sm=2)
# fp8 at nhead 64 and batch <= 4: fp8_qk's 64-row tile loses to the 32-row FP8_CONFIG: batch 1 26.6 -> 19.6, batch 4
# 41.1 -> 34.8 (make bench's sweep, batch 1 kernel_us: persistent 25.8 -> 18.4, split-KV 22.4 -> 17.1). At nhead 128
# the persistent kernel gains too (batch 1 29.9 -> 25.1; sweep 28.1 -> 23.6) but split-KV loses (sweep 26.1 -> 29.1)
# so at 128 heads only the persistent kernel takes it (batch 4: 49.2 both). At batch 1 and 16 heads the reduce
# runs as a programmatic dependent (dependent_reduce): bf16 14.1 -> 13.1 (again 14.2 -> 13.0), fp8 15.4 -> 13.9
# (elsewhere within +-1 us at batch 1-4 and +-1.5% at 16-128; off there)
# Up to 64 rows to merge (qlen 1: batch x heads), the reduce takes 64 channels per program and merges 64 partials per
# load (ncu: it was latency-bound, walking its partials in two dependent loads of 32). `--tune`, graph us, H200:
# batch 1 bf16 nhead 16 12.9 -> 11.2, nhead 64 17.6 -> 16.2; fp8 14.1 -> 12.2, 19.6 -> 18.1; batch 4 nhead 16 bf16
# 20.7 -> 19.2, fp8 20.4 -> 19.0. At 256 rows (nhead 64, batch 4) it did not pay (bf16 >= 32.6 vs 32.2, fp8 35.5 vs 34.0)
TINY_REDUCE_ROWS = 64


@dataclass
class MlaWorkspace:
    """Partial results: partial_out [slots, rows, 512] fp32 and partial_lse [slots, rows] fp32
    (log2 domain). Allocate outside a CUDA graph capture and pass it in."""

    partial_out: torch.Tensor
    partial_lse: torch.Tensor


def _tile_rows(qlen: int, heads_per_group: int) -> int:
    return max(16, triton.next_power_of_2(qlen * heads_per_group))


# --------------------------------------------------------------------------------------------
# Device code
# --------------------------------------------------------------------------------------------


@triton.jit
def _kv_token_offsets(KV_INDICES, page_start, start, kv_end, stride_kv_page, stride_kv_tok,
                      BLOCK_N: tl.constexpr, PAGE_SIZE: tl.constexpr, PAGE_ALIGNED: tl.constexpr):
    """Element offsets of tokens start..start+BLOCK_N-1 of a sequence in the page pool, and
    which of them are < kv_end (a block wholly past kv_end looks up no page)."""
    n = start + tl.arange(0, BLOCK_N)
    n_ok = n < kv_end
    if PAGE_ALIGNED:
        # The block lies inside one page: one page-table lookup, contiguous rows.
        page = tl.load(KV_INDICES + page_start + start // PAGE_SIZE, mask=start < kv_end, other=0)
    else:
        page = tl.load(KV_INDICES + page_start + n // PAGE_SIZE, mask=n_ok, other=0)
    tok_off = page.to(tl.int64) * stride_kv_page + (n % PAGE_SIZE) * stride_kv_tok
    return tok_off, n_ok


@triton.jit
def _load_rows(PTR, tok_off, n_ok, COL0: tl.constexpr, WIDTH: tl.constexpr):
    """[BLOCK_N, WIDTH] channels COL0.. of the given tokens, zero for masked ones: slots past
    the sequence's end hold garbage (NaN in the tests) and must not be read."""
    cols = COL0 + tl.arange(0, WIDTH)
    return tl.load(PTR + tok_off[:, None] + cols[None, :], mask=n_ok[:, None], other=0.0)


@triton.jit
def _scores(q_nope, q_pe, k_nope, k_pe):
    s = tl.dot(q_nope, tl.trans(k_nope))  # [M, N]
    return tl.dot(q_pe, tl.trans(k_pe), s)


@triton.jit
def _softmax_step_rows(acc, m_i, l_i, s, v, visible):
    """One online-softmax step with query rows as the MMA's M side: s [M, N] scaled scores
    (log2 domain), acc [M, 512]."""
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def _row_amax(x_nope, x_pe):
    """The largest magnitude of each row of x (its latent and rope parts together)."""
    return tl.maximum(tl.max(tl.abs(x_nope), 1), tl.max(tl.abs(x_pe), 1))


@triton.jit
def _fp8_rows(x_nope, x_pe, FP8_TYPE: tl.constexpr, FP8_MAX: tl.constexpr):
    """x's rows (fp32) in fp8 with one scale per row (amax / FP8_MAX; 1 for an all-zero row)."""
    amax = _row_amax(x_nope, x_pe)
    scale = tl.where(amax > 0.0, amax / FP8_MAX, 1.0)
    return (x_nope / scale[:, None]).to(FP8_TYPE), (x_pe / scale[:, None]).to(FP8_TYPE), scale


@triton.jit
def _f16_rows(q_nope, q_pe):
    """q's rows in fp16, each divided by the power of two that puts its largest magnitude in [2^14, 2^15)
    (returned, for the softmax scale). Exact for every element above 2^-28 of its row's largest (fp16's
    11-bit significand holds bf16's 8); smaller ones, which an fp32-accumulated dot product cannot see
    next to the largest, become fp16 subnormals. Without the scale, bf16 q overflows fp16 past 65504."""
    q_nope = q_nope.to(tl.float32)
    q_pe = q_pe.to(tl.float32)
    amax = _row_amax(q_nope, q_pe)
    # the exponent field of amax, less 14 (at least 1: an all-zero row gets the harmless scale 2^-126)
    biased_exp = tl.maximum((amax.to(tl.int32, bitcast=True) >> 23) - 14, 1)
    scale = (biased_exp << 23).to(tl.float32, bitcast=True)
    return (q_nope / scale[:, None]).to(tl.float16), (q_pe / scale[:, None]).to(tl.float16), scale


@triton.jit
def _split_q_fp8(q_nope, q_pe, FP8_TYPE: tl.constexpr, FP8_MAX: tl.constexpr):
    """q = hi * hi_scale + lo * lo_scale (per row), hi and lo in fp8: lo holds what hi's 3 mantissa
    bits lost, so the pair carries about bf16's precision and two fp8 MMAs cost what one bf16 MMA does."""
    q_nope = q_nope.to(tl.float32)
    q_pe = q_pe.to(tl.float32)
    hi_nope, hi_pe, hi_scale = _fp8_rows(q_nope, q_pe, FP8_TYPE, FP8_MAX)
    lo_nope, lo_pe, lo_scale = _fp8_rows(q_nope - hi_nope.to(tl.float32) * hi_scale[:, None],
                                         q_pe - hi_pe.to(tl.float32) * hi_scale[:, None], FP8_TYPE, FP8_MAX)
    return hi_nope, hi_pe, hi_scale, lo_nope, lo_pe, lo_scale


# PTX (sm_89+): four e4m3 bytes -> four fp16 ($0, $1: fp16x2), exact
_ASM_E4M3X4_F16 = tl.constexpr("""
{
.reg .b16 lo, hi;
mov.b32 {lo, hi}, $2;
cvt.rn.f16x2.e4m3x2 $0, lo;
cvt.rn.f16x2.e4m3x2 $1, hi;
}
""")


@triton.jit
def _kv_as(x, MMA_DTYPE: tl.constexpr, CVT_ASM: tl.constexpr):
    """A KV tile in the MMA's dtype. CVT_ASM (fp8 KV to fp16, NVIDIA): by a PTX conversion marked impure, which
    Triton does not move past a layout change. A plain cast it moves after the change into the MMA operand's
    layout, which then permutes single bytes (PRMT, or byte loads from shared memory); this way the tile is
    converted where it was loaded and the change moves 16-bit values (shared memory and ldmatrix). Same values."""
    if CVT_ASM:
        y = tl.inline_asm_elementwise(_ASM_E4M3X4_F16, "=r,=r,r", [x.to(tl.uint8, bitcast=True)], dtype=tl.float16,
                                      is_pure=False, pack=4)
    else:
        y = x.to(MMA_DTYPE)
    return y


@triton.jit
def _tile_start(Q, q_row0, head0, seq_len, qk_scale, stride_qt, stride_qh, KV_DTYPE: tl.constexpr,
                QLEN: tl.constexpr, HPG: tl.constexpr, BLOCK_M: tl.constexpr, FP8_QK: tl.constexpr,
                F16_MMA: tl.constexpr, FP8_MAX: tl.constexpr, D_LATENT: tl.constexpr, D_ROPE: tl.constexpr):
    """A tile's queries as the MMAs take them, its causal limits and its empty softmax state: (q_nope [M, 512],
    q_pe [M, 64], scale, lo_nope, lo_pe, lo_scale, limit [M], m [M], l [M]). q's scores are scaled by `scale`
    (qk_scale folded in). FP8_QK: q = hi + lo, two fp8 parts with per-row scales [M]; F16_MMA: q in fp16 with a
    per-row scale [M] (lo_* unused); else q as loaded and the scalar qk_scale. Rows past the tile's queries are
    zero. Row j of a sequence of seq_len tokens sees its first seq_len - QLEN + j + 1 tokens (limit)."""
    rows = tl.arange(0, BLOCK_M)
    j = rows // HPG
    row_ok = j < QLEN
    limit = seq_len - QLEN + 1 + j
    q_off = (q_row0 + j).to(tl.int64) * stride_qt + (head0 + rows % HPG) * stride_qh
    d = tl.arange(0, D_LATENT)
    dr = tl.arange(0, D_ROPE)
    m_i = tl.full([BLOCK_M], NEG_BIG, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    q_nope = tl.load(Q + q_off[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)  # [M, 512]
    q_pe = tl.load(Q + q_off[:, None] + D_LATENT + dr[None, :], mask=row_ok[:, None], other=0.0)
    if FP8_QK:
        q_nope, q_pe, hi_scale, lo_nope, lo_pe, lo_scale = _split_q_fp8(q_nope, q_pe, KV_DTYPE, FP8_MAX)
        scale = hi_scale * qk_scale
        lo_scale = lo_scale * qk_scale
    elif F16_MMA:
        q_nope, q_pe, q_scale = _f16_rows(q_nope, q_pe)
        scale = q_scale * qk_scale
        lo_nope, lo_pe, lo_scale = q_nope, q_pe, scale
    else:
        scale = qk_scale
        lo_nope, lo_pe, lo_scale = q_nope, q_pe, scale
    return q_nope, q_pe, scale, lo_nope, lo_pe, lo_scale, limit, m_i, l_i


@triton.jit
def _scores_t(k_nope, k_pe, qt_nope, qt_pe):
    s = tl.dot(k_nope, qt_nope)  # [N, M]
    return tl.dot(k_pe, qt_pe, s)


@triton.jit
def _cat_cols(a, b):
    """[M, C] and [M, C] side by side: [M, 2C]."""
    return tl.reshape(tl.permute(tl.join(a, b), (0, 2, 1)), (a.shape[0], 2 * a.shape[1]))


@triton.jit
def _pv_chunk_t(acc_t, V, tok_off, n_ok, p_t, alpha, COL0: tl.constexpr, CH: tl.constexpr, MMA_DTYPE: tl.constexpr,
                CVT_ASM: tl.constexpr):
    """acc_t [CH, M] rescaled by alpha and += V^T P^T for latent channels COL0..COL0+CH-1 (loaded again: an L2 hit)."""
    v = _kv_as(_load_rows(V, tok_off, n_ok, COL0, CH), MMA_DTYPE, CVT_ASM)
    return acc_t * alpha[None, :] + tl.dot(tl.trans(v), p_t)


@triton.jit
def _attend_tokens_as_m(
    Q, KV, V, KV_INDICES, page_start, q_row0, head0, kv_start, kv_end, seq_len, qk_scale, v_scale,
    stride_qt, stride_qh, stride_kv_page, stride_kv_tok,
    QLEN: tl.constexpr, HPG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PAGE_SIZE: tl.constexpr, PAGE_ALIGNED: tl.constexpr, FP8_QK: tl.constexpr, F16_MMA: tl.constexpr,
    FP8_MAX: tl.constexpr, CVT_ASM: tl.constexpr, D_LATENT: tl.constexpr, D_ROPE: tl.constexpr,
):
    """_attend_kv_range with the KV block's tokens as the MMAs' M side: S^T = K Q^T [BLOCK_N, BLOCK_M], and
    O^T += V^T P^T [D_LATENT, BLOCK_M], the softmax running down the columns. Below 64 query rows (nhead 16-32)
    the row form runs on mma.sync, whose K^T and V operands Triton loads into registers (an fp8 tile one byte
    per load); here a 64-token block fills Hopper's 64-row wgmma, K is read where it was loaded, in fp8 as fp8
    (FP8_QK, q in two fp8 parts), and q^T is the small operand. bf16 V is the same tile read transposed; fp8 V
    is loaded again (an L2 hit) in four 128-channel chunks, each converted and accumulated on its own, which
    bounds the registers the conversion takes."""
    q_nope, q_pe, scale, lo_nope, lo_pe, lo_scale, limit, m_i, l_i = _tile_start(
        Q, q_row0, head0, seq_len, qk_scale, stride_qt, stride_qh, KV.dtype.element_ty,
        QLEN, HPG, BLOCK_M, FP8_QK, F16_MMA, FP8_MAX, D_LATENT, D_ROPE)
    if FP8_QK or F16_MMA:
        scale = scale[None, :]
        lo_scale = lo_scale[None, :]
    qt_nope = tl.trans(q_nope)
    qt_pe = tl.trans(q_pe)
    lot_nope = tl.trans(lo_nope)
    lot_pe = tl.trans(lo_pe)
    mma_dtype: tl.constexpr = tl.float16 if F16_MMA else Q.dtype.element_ty
    fp8_kv: tl.constexpr = KV.dtype.element_ty.is_fp8()
    CH: tl.constexpr = D_LATENT // 4
    acc_t = tl.zeros([D_LATENT, BLOCK_M], tl.float32)  # bf16 / fp16 / fp32 KV
    a0 = tl.zeros([CH, BLOCK_M], tl.float32)  # fp8 KV: latent channels in four chunks
    a1 = tl.zeros([CH, BLOCK_M], tl.float32)
    a2 = tl.zeros([CH, BLOCK_M], tl.float32)
    a3 = tl.zeros([CH, BLOCK_M], tl.float32)
    for start in range(kv_start, kv_end, BLOCK_N):
        tok_off, n_ok = _kv_token_offsets(KV_INDICES, page_start, start, kv_end, stride_kv_page, stride_kv_tok,
                                          BLOCK_N, PAGE_SIZE, PAGE_ALIGNED)
        k_nope = _load_rows(KV, tok_off, n_ok, 0, D_LATENT)
        k_pe = _load_rows(KV, tok_off, n_ok, D_LATENT, D_ROPE)
        if FP8_QK:
            s_t = _scores_t(k_nope, k_pe, qt_nope, qt_pe) * scale + _scores_t(k_nope, k_pe, lot_nope, lot_pe) * lo_scale
        else:
            k_nope = _kv_as(k_nope, mma_dtype, CVT_ASM)
            s_t = _scores_t(k_nope, _kv_as(k_pe, mma_dtype, CVT_ASM), qt_nope, qt_pe) * scale
        n = start + tl.arange(0, BLOCK_N)
        s_t = tl.where((n[:, None] < limit[None, :]) & (n < kv_end)[:, None], s_t, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s_t, 0))
        alpha = tl.exp2(m_i - m_new)
        p_t = tl.exp2(s_t - m_new[None, :])
        l_i = l_i * alpha + tl.sum(p_t, 0)
        p_t = p_t.to(mma_dtype)
        if fp8_kv:
            a0 = _pv_chunk_t(a0, V, tok_off, n_ok, p_t, alpha, 0, CH, mma_dtype, CVT_ASM)
            a1 = _pv_chunk_t(a1, V, tok_off, n_ok, p_t, alpha, CH, CH, mma_dtype, CVT_ASM)
            a2 = _pv_chunk_t(a2, V, tok_off, n_ok, p_t, alpha, 2 * CH, CH, mma_dtype, CVT_ASM)
            a3 = _pv_chunk_t(a3, V, tok_off, n_ok, p_t, alpha, 3 * CH, CH, mma_dtype, CVT_ASM)
        else:
            acc_t = acc_t * alpha[None, :] + tl.dot(tl.trans(k_nope), p_t)
        m_i = m_new
    if fp8_kv:
        acc = _cat_cols(_cat_cols(tl.trans(a0), tl.trans(a1)), _cat_cols(tl.trans(a2), tl.trans(a3)))
    else:
        acc = tl.trans(acc_t)
    return acc * v_scale, m_i, l_i


@triton.jit
def _attend_kv_range(
    Q, KV, V, KV_INDICES, page_start, q_row0, head0, kv_start, kv_end, seq_len, qk_scale, v_scale,
    stride_qt, stride_qh, stride_kv_page, stride_kv_tok,
    QLEN: tl.constexpr, HPG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PAGE_SIZE: tl.constexpr, PAGE_ALIGNED: tl.constexpr, PREFETCH: tl.constexpr,
    RELOAD_V: tl.constexpr, FP8_QK: tl.constexpr, F16_MMA: tl.constexpr, FP8_MAX: tl.constexpr,
    TOKENS_AS_M: tl.constexpr, CVT_ASM: tl.constexpr, D_LATENT: tl.constexpr, D_ROPE: tl.constexpr,
):
    """Attend the tile's rows to tokens [kv_start, kv_end) of one sequence, the query rows as the MMAs' M
    side, or with TOKENS_AS_M the KV block's tokens (_attend_tokens_as_m).

    Row r of the tile is query row q_row0 + r // HPG, head head0 + r % HPG. Returns the
    unnormalized fp32 accumulator [BLOCK_M, D_LATENT] (V scale applied), the running max m
    and the running sum l (both log2 domain, [BLOCK_M]).

    Variants (all compute the same function):
    - PREFETCH issues the next block's loads before computing the current one (register double
      buffering, for num_stages=1).
    - RELOAD_V loads the latent block a second time, through the alias V of the cache pointer
      (so the compiler cannot merge the loads), for the PV product. HBM traffic is unchanged
      (the second read hits L2) but each load then feeds one MMA, which lets Triton's pipeliner
      make it asynchronous; with fp8 a single load feeding both MMAs stays synchronous.
    - FP8_QK (fp8 KV): q split into two fp8 parts with per-row scales (folded into the softmax
      scale), so that Q@K^T runs as fp8 MMAs on the KV tile as loaded; only V is converted. (fp8
      P@V was tried too: no faster at 16-32 rows, and wrong results from Triton 3.6's 64-row fp8
      MMA with V as the second operand.)
    - F16_MMA (fp8 KV, bf16 q): the MMAs that take converted KV run in fp16, q rescaled per row by a
      power of two (_f16_rows; the scale folded into the softmax scale), P in fp16 (finer than bf16 in
      [0, 1]); e4m3 converts to fp16 exactly.
    - CVT_ASM (with fp16 MMAs, NVIDIA): that conversion by PTX that Triton does not move (_kv_as)."""
    if TOKENS_AS_M:
        acc, m_i, l_i = _attend_tokens_as_m(
            Q, KV, V, KV_INDICES, page_start, q_row0, head0, kv_start, kv_end, seq_len, qk_scale, v_scale,
            stride_qt, stride_qh, stride_kv_page, stride_kv_tok, QLEN, HPG, BLOCK_M, BLOCK_N, PAGE_SIZE,
            PAGE_ALIGNED, FP8_QK, F16_MMA, FP8_MAX, CVT_ASM, D_LATENT, D_ROPE)
    else:
        q_nope, q_pe, hi_scale, lo_nope, lo_pe, lo_scale, limit, m_i, l_i = _tile_start(
            Q, q_row0, head0, seq_len, qk_scale, stride_qt, stride_qh, KV.dtype.element_ty,
            QLEN, HPG, BLOCK_M, FP8_QK, F16_MMA, FP8_MAX, D_LATENT, D_ROPE)
        if FP8_QK:
            hi_scale = hi_scale[:, None]
            lo_scale = lo_scale[:, None]
        elif F16_MMA:
            qk_scale = hi_scale[:, None]
        mma_dtype = tl.float16 if F16_MMA else Q.dtype.element_ty  # the non-fp8 MMAs: fp16, or q's dtype
        acc = tl.zeros([BLOCK_M, D_LATENT], tl.float32)
        if PREFETCH:
            tok_off, n_ok = _kv_token_offsets(KV_INDICES, page_start, kv_start, kv_end, stride_kv_page,
                                              stride_kv_tok, BLOCK_N, PAGE_SIZE, PAGE_ALIGNED)
            next_nope = _load_rows(KV, tok_off, n_ok, 0, D_LATENT)
            next_pe = _load_rows(KV, tok_off, n_ok, D_LATENT, D_ROPE)
        for start in range(kv_start, kv_end, BLOCK_N):
            if PREFETCH:
                k_nope = next_nope
                k_pe = next_pe
                tok_off, n_ok = _kv_token_offsets(KV_INDICES, page_start, start + BLOCK_N, kv_end, stride_kv_page,
                                                  stride_kv_tok, BLOCK_N, PAGE_SIZE, PAGE_ALIGNED)
                next_nope = _load_rows(KV, tok_off, n_ok, 0, D_LATENT)
                next_pe = _load_rows(KV, tok_off, n_ok, D_LATENT, D_ROPE)
            else:
                tok_off, n_ok = _kv_token_offsets(KV_INDICES, page_start, start, kv_end, stride_kv_page,
                                                  stride_kv_tok, BLOCK_N, PAGE_SIZE, PAGE_ALIGNED)
                k_nope = _load_rows(KV, tok_off, n_ok, 0, D_LATENT)
                k_pe = _load_rows(KV, tok_off, n_ok, D_LATENT, D_ROPE)
            if not FP8_QK:
                k_nope = _kv_as(k_nope, mma_dtype, CVT_ASM)
                k_pe = _kv_as(k_pe, mma_dtype, CVT_ASM)
            if RELOAD_V:
                tok_off, n_ok = _kv_token_offsets(KV_INDICES, page_start, start, kv_end, stride_kv_page,
                                                  stride_kv_tok, BLOCK_N, PAGE_SIZE, PAGE_ALIGNED)
                v = _kv_as(_load_rows(V, tok_off, n_ok, 0, D_LATENT), mma_dtype, CVT_ASM)
            elif FP8_QK:
                v = _kv_as(k_nope, mma_dtype, CVT_ASM)
            else:
                # V is the latent part of the same cached tokens, already converted
                v = k_nope
            n = start + tl.arange(0, BLOCK_N)
            visible = (n[None, :] < limit[:, None]) & (n < kv_end)[None, :]
            if FP8_QK:
                s = _scores(q_nope, q_pe, k_nope, k_pe) * hi_scale + _scores(lo_nope, lo_pe, k_nope, k_pe) * lo_scale
            else:
                s = _scores(q_nope, q_pe, k_nope, k_pe) * qk_scale
            acc, m_i, l_i = _softmax_step_rows(acc, m_i, l_i, s, v, visible)
        acc = acc * v_scale
    return acc, m_i, l_i


@triton.jit
def _store_final(
    OUT, acc, l_i, q_row0, head0, stride_ot, stride_oh,
    QLEN: tl.constexpr, HPG: tl.constexpr, BLOCK_M: tl.constexpr, D_LATENT: tl.constexpr,
):
    rows = tl.arange(0, BLOCK_M)
    j = rows // HPG
    d = tl.arange(0, D_LATENT)
    o_off = (q_row0 + j).to(tl.int64) * stride_ot + (head0 + rows % HPG) * stride_oh
    o = acc / l_i[:, None]
    tl.store(OUT + o_off[:, None] + d[None, :], o.to(OUT.dtype.element_ty), mask=(j < QLEN)[:, None])


@triton.jit
def _store_partial(
    PART_OUT, PART_LSE, slot, acc, m_i, l_i,
    ROWS: tl.constexpr, BLOCK_M: tl.constexpr, D_LATENT: tl.constexpr,
):
    rows = tl.arange(0, BLOCK_M)
    d = tl.arange(0, D_LATENT)
    has = l_i > 0.0  # a causal row may see no token of this piece
    o = tl.where(has[:, None], acc / tl.where(has, l_i, 1.0)[:, None], 0.0)
    lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    base = slot.to(tl.int64) * ROWS
    row_ok = rows < ROWS
    tl.store(PART_OUT + (base + rows)[:, None] * D_LATENT + d[None, :], o, mask=row_ok[:, None])
    tl.store(PART_LSE + base + rows, lse, mask=row_ok)


@triton.jit
def _load_kv_scale(KV_SCALE, HAS_SCALE: tl.constexpr):
    if HAS_SCALE:
        scale = tl.load(KV_SCALE).to(tl.float32)
    else:
        scale = 1.0
    return scale


@triton.jit
def _split_range(seq_len, split, num_splits, SPLIT_TOKENS: tl.constexpr, BLOCK_N: tl.constexpr):
    """Tokens [kv_start, kv_end) of a sequence's split `split` (kv_start >= kv_end: empty).

    SPLIT_TOKENS > 0: split i is tokens [i * SPLIT_TOKENS, (i + 1) * SPLIT_TOKENS), whatever the
    grid; else num_splits equal splits of whole BLOCK_N blocks. Either way the grid's last split
    takes any rest, which only a fixed-split grid too small for the sequence leaves (the result
    stays right but then depends on the grid)."""
    if SPLIT_TOKENS > 0:
        split_len = SPLIT_TOKENS
    else:
        split_len = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    kv_start = split * split_len
    kv_end = tl.where(split == num_splits - 1, seq_len, tl.minimum(seq_len, kv_start + split_len))
    return kv_start, kv_end


# num_splits follows the batch; specializing on it (== 1) would compile another kernel for some
# batches, and a batch-invariant result needs the same machine code for every batch.
@triton.jit(do_not_specialize=["num_splits"])
def _split_kv_kernel(
    Q, KV, V, KV_SCALE, KV_INDPTR, KV_INDICES, SEQ_LENS, OUT, PART_OUT, PART_LSE,
    sm_scale_log2, num_splits,
    stride_qt, stride_qh, stride_kv_page, stride_kv_tok, stride_ot, stride_oh,
    DIRECT_OUT: tl.constexpr, SPLIT_TOKENS: tl.constexpr,
    QLEN: tl.constexpr, HPG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PAGE_SIZE: tl.constexpr, PAGE_ALIGNED: tl.constexpr, PREFETCH: tl.constexpr,
    RELOAD_V: tl.constexpr, FP8_QK: tl.constexpr, F16_MMA: tl.constexpr, FP8_MAX: tl.constexpr,
    TOKENS_AS_M: tl.constexpr, CVT_ASM: tl.constexpr, HAS_SCALE: tl.constexpr, D_LATENT: tl.constexpr,
    D_ROPE: tl.constexpr,
    PDL: tl.constexpr,
):
    if PDL:  # the reduce may launch now; it waits for this grid's completion before reading partials
        gdc_launch_dependents()
    # Head groups vary fastest so that the programs reading the same sequence's KV run together
    # (the second group's reads hit L2).
    g = tl.program_id(0)
    b = tl.program_id(1)
    split = tl.program_id(2)
    num_groups = tl.num_programs(0)
    seq_len = tl.load(SEQ_LENS + b)
    # Splits are whole BLOCK_N blocks (so PAGE_ALIGNED holds); trailing splits may be empty.
    kv_start, kv_end = _split_range(seq_len, split, num_splits, SPLIT_TOKENS, BLOCK_N)
    if SPLIT_TOKENS > 0:
        if kv_start >= seq_len:  # past this sequence's end: the reduce reads only its own splits
            return
    kv_scale = _load_kv_scale(KV_SCALE, HAS_SCALE)
    acc, m_i, l_i = _attend_kv_range(
        Q, KV, V, KV_INDICES, tl.load(KV_INDPTR + b), b * QLEN, g * HPG, kv_start, kv_end, seq_len,
        sm_scale_log2 * kv_scale, kv_scale,
        stride_qt, stride_qh, stride_kv_page, stride_kv_tok,
        QLEN, HPG, BLOCK_M, BLOCK_N, PAGE_SIZE, PAGE_ALIGNED, PREFETCH, RELOAD_V, FP8_QK, F16_MMA, FP8_MAX,
        TOKENS_AS_M, CVT_ASM, D_LATENT, D_ROPE,
    )
    if DIRECT_OUT:  # a single split: no partials, no reduce
        _store_final(OUT, acc, l_i, b * QLEN, g * HPG, stride_ot, stride_oh, QLEN, HPG, BLOCK_M, D_LATENT)
    else:
        slot = (b * num_groups + g) * num_splits + split
        _store_partial(PART_OUT, PART_LSE, slot, acc, m_i, l_i, QLEN * HPG, BLOCK_M, D_LATENT)


@triton.jit
def _persistent_kernel(
    Q, KV, V, KV_SCALE, KV_INDPTR, KV_INDICES, WORK_INDPTR, WORK_INFO, OUT, PART_OUT, PART_LSE,
    sm_scale_log2,
    stride_qt, stride_qh, stride_kv_page, stride_kv_tok, stride_ot, stride_oh,
    INFO_COLS: tl.constexpr,
    QLEN: tl.constexpr, HPG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PAGE_SIZE: tl.constexpr, PAGE_ALIGNED: tl.constexpr, PREFETCH: tl.constexpr,
    RELOAD_V: tl.constexpr, FP8_QK: tl.constexpr, F16_MMA: tl.constexpr, FP8_MAX: tl.constexpr,
    TOKENS_AS_M: tl.constexpr, CVT_ASM: tl.constexpr, HAS_SCALE: tl.constexpr, D_LATENT: tl.constexpr,
    D_ROPE: tl.constexpr,
    PDL: tl.constexpr,
):
    if PDL:  # the reduce may launch now; it waits for this grid's completion before reading partials
        gdc_launch_dependents()
    pid = tl.program_id(0)
    first = tl.load(WORK_INDPTR + pid)
    last = tl.load(WORK_INDPTR + pid + 1)
    kv_scale = _load_kv_scale(KV_SCALE, HAS_SCALE)
    for item in range(first, last):
        info = WORK_INFO + item * INFO_COLS  # columns: rocbench.formats.mla_schedule.WI_*
        b = tl.load(info + 0)
        g = tl.load(info + 1)
        kv_start = tl.load(info + 2)
        kv_end = tl.load(info + 3)
        slot = tl.load(info + 4)
        seq_len = tl.load(info + 5)
        acc, m_i, l_i = _attend_kv_range(
            Q, KV, V, KV_INDICES, tl.load(KV_INDPTR + b), b * QLEN, g * HPG, kv_start, kv_end, seq_len,
            sm_scale_log2 * kv_scale, kv_scale,
            stride_qt, stride_qh, stride_kv_page, stride_kv_tok,
            QLEN, HPG, BLOCK_M, BLOCK_N, PAGE_SIZE, PAGE_ALIGNED, PREFETCH, RELOAD_V, FP8_QK, F16_MMA, FP8_MAX,
            TOKENS_AS_M, CVT_ASM, D_LATENT, D_ROPE,
        )
        if slot < 0:
            _store_final(OUT, acc, l_i, b * QLEN, g * HPG, stride_ot, stride_oh, QLEN, HPG, BLOCK_M, D_LATENT)
        else:
            _store_partial(PART_OUT, PART_LSE, slot, acc, m_i, l_i, QLEN * HPG, BLOCK_M, D_LATENT)


@triton.jit
def _merge_chunk(acc, m, l, PART_OUT, PART_LSE, slots, ok, row, col0, ROWS: tl.constexpr, D_LATENT: tl.constexpr):
    """Online LSE merge of up to CHUNK partials (`slots` where `ok`), row `row`, the acc's channels
    from col0, into (acc, m, l), log2 domain. The chunk's loads are independent, so they
    are in flight together (merging one partial per step waits out an L2 round trip per partial)."""
    d = col0 + tl.arange(0, acc.shape[0])
    base = slots.to(tl.int64) * ROWS + row
    lse = tl.load(PART_LSE + base, mask=ok, other=float("-inf"))
    part = tl.load(PART_OUT + base[:, None] * D_LATENT + d[None, :], mask=ok[:, None], other=0.0)
    m_new = tl.maximum(m, tl.max(lse, 0))
    keep = tl.exp2(m - m_new)
    w = tl.exp2(lse - m_new)  # 0 for an empty piece or a masked slot (lse = -inf)
    return acc * keep + tl.sum(part * w[:, None], 0), m_new, l * keep + tl.sum(w, 0)


@triton.jit
def _merge_start(pid, D_LATENT: tl.constexpr, COLS: tl.constexpr):
    """A reduce program's tile row and first channel (program `pid` along the row axis: D_LATENT // COLS
    programs per row) and the empty merge (acc, m, l)."""
    row = pid // (D_LATENT // COLS)  # j * HPG + h
    col0 = pid % (D_LATENT // COLS) * COLS
    return row, col0, tl.zeros([COLS], tl.float32), tl.full([], NEG_BIG, tl.float32), tl.full([], 0.0, tl.float32)


@triton.jit
def _store_row(OUT, acc, l, b, g, row, col0, stride_ot, stride_oh, QLEN: tl.constexpr, HPG: tl.constexpr):
    d = col0 + tl.arange(0, acc.shape[0])
    t = b * QLEN + row // HPG
    h = g * HPG + row % HPG
    tl.store(OUT + t.to(tl.int64) * stride_ot + h * stride_oh + d, (acc / l).to(OUT.dtype.element_ty))


@triton.jit(do_not_specialize=["num_splits"])
def _reduce_splits_kernel(
    OUT, PART_OUT, PART_LSE, SEQ_LENS, num_splits, stride_ot, stride_oh,
    QLEN: tl.constexpr, HPG: tl.constexpr, D_LATENT: tl.constexpr, SPLIT_TOKENS: tl.constexpr,
    COLS: tl.constexpr, CHUNK: tl.constexpr, PDL: tl.constexpr,
):
    g = tl.program_id(0)
    b = tl.program_id(1)
    row, col0, acc, m, l = _merge_start(tl.program_id(2), D_LATENT, COLS)
    unit = b * tl.num_programs(0) + g
    merged = num_splits
    if SPLIT_TOKENS > 0:  # the sequence's own splits only (the attention kernel skipped the rest)
        merged = tl.minimum(num_splits, tl.cdiv(tl.load(SEQ_LENS + b), SPLIT_TOKENS))
    if PDL:  # launched early (programmatic dependent launch): the partials are complete only after this
        gdc_wait()
    for first in range(0, merged, CHUNK):  # fixed chunks in split order: deterministic
        split = first + tl.arange(0, CHUNK)
        acc, m, l = _merge_chunk(acc, m, l, PART_OUT, PART_LSE, unit * num_splits + split, split < merged, row, col0,
                                 QLEN * HPG, D_LATENT)
    _store_row(OUT, acc, l, b, g, row, col0, stride_ot, stride_oh, QLEN, HPG)


@triton.jit
def _reduce_schedule_kernel(
    OUT, PART_OUT, PART_LSE, REDUCE_INDPTR, REDUCE_FINAL, REDUCE_PARTIAL, stride_ot, stride_oh,
    QLEN: tl.constexpr, HPG: tl.constexpr, D_LATENT: tl.constexpr, COLS: tl.constexpr, CHUNK: tl.constexpr,
    PDL: tl.constexpr,
):
    r = tl.program_id(0)  # one split (sequence, head group)
    row, col0, acc, m, l = _merge_start(tl.program_id(1), D_LATENT, COLS)
    lo = tl.load(REDUCE_INDPTR + r)  # the schedule: the host's, not the attention kernel's output
    hi = tl.load(REDUCE_INDPTR + r + 1)
    b = tl.load(REDUCE_FINAL + 2 * r)
    g = tl.load(REDUCE_FINAL + 2 * r + 1)
    if PDL:  # launched early (programmatic dependent launch): the partials are complete only after this
        gdc_wait()
    for first in range(lo, hi, CHUNK):  # KV order in fixed chunks: the merge order is fixed, so deterministic
        i = first + tl.arange(0, CHUNK)
        ok = i < hi
        slots = tl.load(REDUCE_PARTIAL + i, mask=ok, other=0)
        acc, m, l = _merge_chunk(acc, m, l, PART_OUT, PART_LSE, slots, ok, row, col0, QLEN * HPG, D_LATENT)
    _store_row(OUT, acc, l, b, g, row, col0, stride_ot, stride_oh, QLEN, HPG)


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------


def _check_inputs(q: torch.Tensor, kv: PagedKV, qlen: int) -> None:
    if q.dim() != 3 or q.shape[2] != HEAD_DIM or q.stride(2) != 1:
        raise ValueError(f"q must be [tokens, nhead, {HEAD_DIM}] with unit last stride, got {tuple(q.shape)}")
    if q.shape[0] != kv.batch * qlen:
        raise ValueError(f"q has {q.shape[0]} rows; expected batch {kv.batch} x qlen {qlen}")
    if not kv.kv_buffer.is_contiguous() or kv.kv_buffer.shape[1:] != (kv.page_size, HEAD_DIM):
        raise ValueError("kv_buffer must be a contiguous [num_pages, page_size, 576] tensor")
    if kv.kv_buffer.dtype != q.dtype and kv.kv_buffer.dtype not in E4M3_DTYPES:
        raise ValueError(f"kv dtype {kv.kv_buffer.dtype} must equal q's ({q.dtype}) or be an fp8 e4m3 flavour")
    if (kv.kv_buffer.dtype in E4M3_DTYPES) != (kv.kv_scale is not None):
        raise ValueError("fp8 KV needs kv_scale; other dtypes must not have one")


def _out_like(q: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    shape = (q.shape[0], q.shape[1], KV_LORA_RANK)
    if out is None:
        return torch.empty(shape, dtype=q.dtype, device=q.device)
    if tuple(out.shape) != shape or out.stride(2) != 1:
        raise ValueError(f"out must be {shape} with unit last stride")
    return out


def _common_args(q, kv: PagedKV, out, sm_scale):
    scale_ptr = kv.kv_scale if kv.kv_scale is not None else kv.kv_buffer  # dummy when unused
    return dict(
        sm_scale_log2=float(sm_scale) * LOG2E,
        stride_qt=q.stride(0),
        stride_qh=q.stride(1),
        stride_kv_page=kv.kv_buffer.stride(0),
        stride_kv_tok=kv.kv_buffer.stride(1),
        stride_ot=out.stride(0),
        stride_oh=out.stride(1),
        PAGE_SIZE=kv.page_size,
        HAS_SCALE=kv.kv_scale is not None,
        D_LATENT=KV_LORA_RANK,
        D_ROPE=QK_ROPE_DIM,
    ), scale_ptr


@dataclass(frozen=True)
class ReduceShape:
    cols: int  # output channels per reduce program
    chunk: int  # partials a reduce program loads at once


# Few merged rows (small batches, long splits lists): 4 programs per row, 32 partials per load, so that more
# loads are in flight (H200, batch 1 x 4096, 64 splits: 14.8 -> 12.1 us per call). Many rows (batch 64): one
# program per row and 16 partials per load (the split shape made those 9-17% slower).
WIDE_REDUCE, NARROW_REDUCE = ReduceShape(cols=128, chunk=32), ReduceShape(cols=KV_LORA_RANK, chunk=16)


def reduce_shape(merged_rows: int, invariant: bool, config: MlaKernelConfig | None = None) -> ReduceShape:
    """The merge's launch shape for this many output rows to merge, or the one config asks for. A batch-invariant
    run keeps one shape whatever the batch and the config: the shape sets the order of the sums over a chunk's
    partials."""
    if invariant:
        return WIDE_REDUCE
    shape = WIDE_REDUCE if merged_rows < 512 else NARROW_REDUCE
    if config is None or not (config.reduce_cols or config.reduce_chunk):
        return shape
    shape = ReduceShape(cols=config.reduce_cols or shape.cols, chunk=config.reduce_chunk or shape.chunk)
    powers_of_two = all(n > 0 and n & (n - 1) == 0 for n in (shape.cols, shape.chunk))
    if not powers_of_two or shape.cols > KV_LORA_RANK:
        raise ValueError(f"config {config}: reduce_cols (<= {KV_LORA_RANK}) and reduce_chunk must be powers of two")
    return shape


def _fp8_args(q: torch.Tensor, kv: PagedKV, config: MlaKernelConfig) -> dict:
    """The fp8 and fp16 MMA switches (only for fp8 KV; fp16 only for bf16 q: fp16 q runs its MMAs in fp16
    anyway) and the e4m3 flavour's largest finite value."""
    fp8 = kv.kv_buffer.dtype in E4M3_DTYPES
    f16_mma = fp8 and config.f16_mma and q.dtype == torch.bfloat16
    # the PTX conversion gives fp16: where the converted MMAs run in fp16 (fp16 q, or f16_mma), on NVIDIA only
    cvt_asm = fp8 and config.convert_where_loaded and (f16_mma or q.dtype == torch.float16) and nvidia_gpu(q.device)
    return dict(FP8_QK=fp8 and config.fp8_qk, F16_MMA=f16_mma, CVT_ASM=cvt_asm,
                FP8_MAX=torch.finfo(kv.kv_buffer.dtype).max if fp8 else 1.0)


def _dependent_launch(config: MlaKernelConfig, device: torch.device) -> bool:
    """Programmatic dependent launch of the reduce (config.dependent_reduce) where it exists."""
    return config.dependent_reduce and dependent_launch_supported(device)


def pick_num_kv_splits(batch: int, num_head_groups: int, avg_seq_len: int, num_sms: int,
                       min_tokens_per_split: int = 64, max_splits: int = 64) -> int:
    """Split count for the non-persistent kernel.

    Aim for about two programs per SM (batch x head groups x splits >= 2 x num_sms) so that
    every SM has work and a second program hides the first one's tail, but keep every split at
    >= min_tokens_per_split tokens of the average sequence, since each split pays a fixed cost
    (loading q, writing and re-reading a fp32 partial; H200, batch 1 x 4096 tokens: 64 splits of one
    64-token block ran 14.8 us, 16 splits 20.5 us). Clamped to [1, max_splits]. The count is
    the same for every sequence, which is what makes this kernel lose on skewed batches."""
    programs = max(1, batch * num_head_groups)
    want = -(-2 * num_sms // programs)
    cap = max(1, avg_seq_len // min_tokens_per_split)
    return int(max(1, min(want, cap, max_splits)))


def tune_key(kv_dtype: torch.dtype, nhead: int, qlen: int, batch: int | None, *, persistent: bool = True) -> str:
    """What a tuned config is stored under: the KV element kind, the heads, the q length, the batch
    (rounded up to a power of two, at most 256: one decode batch plays like its neighbours) and the kernel."""
    batch_bucket = min(256, triton.next_power_of_2(max(1, batch))) if batch else "any"
    kv = "fp8" if kv_dtype in E4M3_DTYPES else dtype_kind(kv_dtype)
    kernel = "persistent" if persistent else "split_kv"
    return f"kv={kv},nhead={nhead},qlen={qlen},batch<={batch_bucket},kernel={kernel}"


def dtype_kind(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def default_config(kv_dtype: torch.dtype, nhead: int = 16, qlen: int = 1, device: torch.device | None = None,
                   batch: int | None = None, *, persistent: bool = True) -> MlaKernelConfig:
    """Launch knobs for a KV dtype and head count and one of the two kernels: the config `rocbench mla --tune`
    stored for this device (and batch) when there is one, else the sweep winners listed above."""
    stored = tuned.lookup("mla_decode", device, tune_key(kv_dtype, nhead, qlen, batch, persistent=persistent))
    if stored:
        return MlaKernelConfig(**stored)
    return builtin_config(kv_dtype, nhead, qlen, batch, persistent=persistent)


def builtin_config(kv_dtype: torch.dtype, nhead: int = 16, qlen: int = 1, batch: int | None = None, *,
                   persistent: bool = True) -> MlaKernelConfig:
    """The H100/H200 sweep winners listed above for a KV dtype, head count, q length and kernel (persistent or
    split-KV). With a batch, the small-batch winner where one differs; batch None gives the one config for every
    batch, which a batch-invariant caller (triton_det) must use."""
    config = _config_by_tile(kv_dtype, nhead, qlen, batch, persistent)
    if batch is None or qlen != 1 or batch > TINY_BATCH_MAX:
        return config
    fp8 = kv_dtype in E4M3_DTYPES  # batch 1-4, one query row per head: the winners listed with TINY_BATCH_CONFIG
    if nhead <= 16:
        config = dataclasses.replace(config, dependent_reduce=True) if batch == 1 else config
    elif not fp8 and nhead <= 64 or fp8 and nhead <= 32 and batch == 1:
        config = dataclasses.replace(TINY_BATCH_CONFIG, f16_mma=fp8)
    elif fp8 and (nhead <= 64 or persistent):
        config = FP8_CONFIG
    if batch * nhead <= TINY_REDUCE_ROWS:
        config = dataclasses.replace(config, reduce_cols=64, reduce_chunk=64)
    return config


def _config_by_tile(kv_dtype: torch.dtype, nhead: int, qlen: int, batch: int | None,
                    persistent: bool) -> MlaKernelConfig:
    """The winners by tile size (batch only splits fp8 16-row and bf16 32-row tiles at small batches; the kernel
    only fp8's 16-32 row tiles)."""
    small_tile = qlen * pick_heads_per_group(nhead, qlen, DEFAULT_CONFIG.max_tile_rows) <= 16
    large_tile = qlen * pick_heads_per_group(nhead, qlen, BF16_LARGE_TILE_CONFIG.max_tile_rows) >= 64
    if kv_dtype in E4M3_DTYPES:
        if small_tile and batch is not None and batch <= FP8_SMALL_BATCH_MAX:
            return FP8_SMALL_TILE_SMALL_BATCH_CONFIG
        if large_tile or persistent:
            return FP8_LARGE_TILE_CONFIG if large_tile else FP8_PERSISTENT_CONFIG
        return FP8_SMALL_TILE_CONFIG if small_tile else FP8_CONFIG
    if large_tile:
        return BF16_LARGE_TILE_CONFIG
    if small_tile or batch is None or batch > BF16_SMALL_BATCH_MAX:
        return BF16_TWO_PER_SM_CONFIG
    return DEFAULT_CONFIG


def tune_candidates(kv_dtype: torch.dtype, nhead: int, qlen: int, batch: int | None = None, *,
                    persistent: bool = True) -> dict[str, MlaKernelConfig]:
    """What `--tune` tries for a case: the built-in choice and the alternatives that won somewhere."""
    fp8 = kv_dtype in E4M3_DTYPES
    c = functools.partial(MlaKernelConfig, f16_mma=True) if fp8 else MlaKernelConfig  # fp16 MMAs won everywhere
    # fp8: ncu on an H200 (nhead 16, batch 64, persistent, prefetch config) showed 255 registers per thread with
    # spills and one 8-warp program per SM (12.5% occupancy, DRAM 23%): the 4-warp, 2-per-SM shapes test that
    options = ({"reload_v": c(reload_v=True), "prefetch": c(prefetch=True, num_stages=1),
                "reload_v,stages3": c(reload_v=True, num_stages=3), "plain": c(),
                "warps4,2/sm": c(num_warps=4, programs_per_sm=2),
                "reload_v,warps4,2/sm": c(reload_v=True, num_warps=4, programs_per_sm=2),
                "fp8qk": c(fp8_qk=True), "fp8qk,reload_v": c(fp8_qk=True, reload_v=True),
                "fp8qk,rows64": c(fp8_qk=True, max_tile_rows=64, block_n=64),
                "fp8qk,rows64,block32": c(fp8_qk=True, max_tile_rows=64, block_n=32),
                "reload_v,stages3,warps4,2/sm": c(reload_v=True, num_stages=3, num_warps=4, programs_per_sm=2),
                "rows16,2/sm": c(max_tile_rows=16, programs_per_sm=2),
                # offline sm_90 SASS (Triton 3.6): the 16-row 4-warp config above spills 44 registers to local memory
                # and reloads 48 per 64-token block (ncu at nhead 16 batch 64: 1.5 M spill requests); 32-token blocks
                # spill none in the loop (1224 instructions per 32 tokens against 2213 per 64)
                "reload_v,warps4,2/sm,block32": c(reload_v=True, num_warps=4, programs_per_sm=2, block_n=32),
                # 16-row tiles take mma.sync, whose K^T and V operands live in registers: Triton reads the fp8 tile
                # that cp.async left in shared memory one byte per load (offline sm_90 SASS, Triton 3.6: 128 LDS.U8
                # per 32-token block) and converts K and V apart (reload_v). A register prefetch converts the tile
                # once, where it was loaded: 1224 -> 875 instructions per block, no spills in the loop (at 32 rows it
                # spills 282 registers per block). Not measured yet
                "prefetch,warps4,2/sm,block32": c(prefetch=True, num_stages=1, num_warps=4, programs_per_sm=2,
                                                  block_n=32),
                # the block's 64 tokens as the MMAs' M side (wgmma at 16-32 rows, K read as fp8 by the MMA): offline
                # sm_90 SASS (Triton 3.6), loop warp-instructions per token 153 -> 105 at 16 rows, 216 -> 122 at 32,
                # 255 registers, no spills (2 stages spill). Not measured yet (mla-variants-h200 round 9)
                "tokens_as_m,fp8qk,stages1,2/sm": c(tokens_as_m=True, fp8_qk=True, num_stages=1, num_warps=4,
                                                    programs_per_sm=2),
                # ... with V converted where it was loaded (convert_where_loaded): offline 105 -> 63 warp-instructions
                # per token at 16 rows (bf16's built-in: 64), 122 -> 80 at 32 (bf16: 85), no byte permutes, no spills
                "tokens_as_m,fp8qk,cvt,stages1,2/sm": FP8_TOKENS_AS_M_CONFIG} if fp8 else
               {"plain": c(), "warps4,2/sm": c(num_warps=4, programs_per_sm=2), "2/sm": c(programs_per_sm=2),
                "stages3": c(num_stages=3), "rows64,block32": c(max_tile_rows=64, block_n=32),
                "rows64": c(max_tile_rows=64, block_n=64), "rows64,stages3": c(max_tile_rows=64, block_n=64, num_stages=3),
                "rows16,2/sm": c(max_tile_rows=16, programs_per_sm=2)})
    builtin = builtin_config(kv_dtype, nhead, qlen, batch, persistent=persistent)
    if qlen * kernel_heads_per_group(nhead, qlen, builtin) > 32:
        # the built-in 64-row tile runs wgmma already, and needs fewer instructions per token and head (offline: 151
        # warp-instructions per token for 64 rows, against 122 for each of two 32-row tiles)
        for name in ("tokens_as_m,fp8qk,stages1,2/sm", "tokens_as_m,fp8qk,cvt,stages1,2/sm"):
            options.pop(name, None)
    elif fp8:  # 16-32 rows: the row form's conversion where loaded (offline, 16 rows: 153 -> 92 warp-instructions
        # per token, but 120 KB of shared memory, so one program per SM; the 64-row tile's code does not change)
        options["cvt"] = dataclasses.replace(builtin, convert_where_loaded=True)
    if fp8:
        options["bf16_mma"] = dataclasses.replace(builtin, f16_mma=False)
    options["dependent_reduce"] = dataclasses.replace(builtin, dependent_reduce=True)
    if batch is not None and batch <= TINY_BATCH_MAX:  # up to 64 partials per row merged in one load
        options["reduce64x64"] = dataclasses.replace(builtin, reduce_cols=64, reduce_chunk=64)
        options["reduce64x128"] = dataclasses.replace(builtin, reduce_cols=128, reduce_chunk=64)
        # reduce_shape's own choice by rows, where the built-in config asks for a shape
        options["reduce_by_rows"] = dataclasses.replace(builtin, reduce_cols=0, reduce_chunk=0)
    return {"builtin": builtin, **{name: cfg for name, cfg in options.items() if cfg != builtin}}


def smaller_configs(config: MlaKernelConfig) -> list[MlaKernelConfig]:
    """`config`, then what to fall back on where a GPU cannot hold it (rocbench.kernels.fit): the KV block halved
    down to 16 tokens, then one pipeline stage. Offline compiles (Triton 3.6, `tests/compile_only.py`): on gfx942
    (64 KiB of LDS) every bf16 config and half the fp8 ones need 68-80 KiB at 64-token blocks, and all fit at 32; on
    sm_89 (99 KiB) the 32- and 64-row tiles need 108-152 KiB. Neither knob changes which heads a tile holds, nor,
    from block_n 64 down, the schedule (its granularity is at least 64 tokens; callers build it per config anyway)."""
    chain = [config]
    while chain[-1].block_n > 16:
        chain.append(dataclasses.replace(chain[-1], block_n=chain[-1].block_n // 2))
    if chain[-1].num_stages > 1:
        chain.append(dataclasses.replace(chain[-1], num_stages=1))
    return chain


def persistent_num_programs(num_sms: int, config: MlaKernelConfig) -> int:
    """Programs for the persistent grid (build the schedule with this many)."""
    return num_sms * config.programs_per_sm


def build_persistent_schedule(seq_lens, qlen: int, nhead: int, num_sms: int,
                              config: MlaKernelConfig, fixed_split_tokens: int | None = None) -> MlaSchedule:
    """The schedule mla_decode_persistent expects for `config` (head tile, grid size, minimum
    work per program, granularity a multiple of block_n), on CPU: call .to(device).
    fixed_split_tokens (a multiple of that granularity): batch-invariant splits, see
    rocbench.formats.mla_schedule."""
    return build_mla_schedule(
        seq_lens, qlen, nhead, kernel_heads_per_group(nhead, qlen, config),
        persistent_num_programs(num_sms, config),
        kv_granularity=max(DEFAULT_KV_GRANULARITY, config.block_n),
        min_granules_per_program=config.min_granules_per_program,
        fixed_split_tokens=fixed_split_tokens,
    )


def kernel_heads_per_group(nhead: int, qlen: int, config: MlaKernelConfig) -> int:
    """The head tile both kernels use for this config (build the schedule with the same)."""
    return pick_heads_per_group(nhead, qlen, config.max_tile_rows)


def _workspace(ws: MlaWorkspace | None, slots: int, rows: int, device) -> MlaWorkspace:
    if ws is None:
        return MlaWorkspace(
            partial_out=torch.empty(slots, rows, KV_LORA_RANK, dtype=torch.float32, device=device),
            partial_lse=torch.empty(slots, rows, dtype=torch.float32, device=device),
        )
    if (ws.partial_out.shape[0] < slots or tuple(ws.partial_out.shape[1:]) != (rows, KV_LORA_RANK)
            or ws.partial_lse.shape[0] < slots or ws.partial_lse.shape[1] != rows
            or not ws.partial_out.is_contiguous() or not ws.partial_lse.is_contiguous()):
        raise ValueError(f"workspace too small or misshaped: need [{slots}, {rows}, {KV_LORA_RANK}] and [{slots}, {rows}]")
    return ws


def fixed_split_count(longest_seq_len: int, split_tokens: int) -> int:
    """The split-KV grid's split count for fixed splits of split_tokens: enough for the longest
    sequence of the batch (pass it as num_kv_splits, and to alloc_split_kv_workspace)."""
    return max(1, -(-longest_seq_len // split_tokens))


def alloc_split_kv_workspace(q: torch.Tensor, num_kv_splits: int, qlen: int = 1,
                             heads_per_group: int | None = None,
                             config: MlaKernelConfig = DEFAULT_CONFIG) -> MlaWorkspace:
    """Workspace for mla_decode_split_kv: batch x head groups x splits slots. Pass the
    heads_per_group or config the run will use (a mismatch raises in the run)."""
    nhead = q.shape[1]
    hpg = heads_per_group or kernel_heads_per_group(nhead, qlen, config)
    slots = (q.shape[0] // qlen) * (nhead // hpg) * num_kv_splits
    return _workspace(None, slots, qlen * hpg, q.device)


def alloc_persistent_workspace(schedule: MlaSchedule, device) -> MlaWorkspace:
    """Workspace for mla_decode_persistent: one slot per partial of the schedule."""
    return _workspace(None, max(1, schedule.num_partials), schedule.rows_per_item, device)


def mla_decode_split_kv(q: torch.Tensor, kv: PagedKV, sm_scale: float, qlen: int, num_kv_splits: int,
                        out: torch.Tensor | None = None, workspace: MlaWorkspace | None = None,
                        config: MlaKernelConfig | None = None,
                        heads_per_group: int | None = None, split_tokens: int | None = None) -> torch.Tensor:
    """Non-persistent split-KV MLA decode. Returns out [tokens, nhead, 512] in q's dtype.

    Grid (head groups, batch, num_kv_splits); every split of a sequence has the same number of
    BLOCK_N blocks (trailing splits of short sequences may be empty). With num_kv_splits == 1
    the attention kernel writes the output directly and no reduce runs.

    split_tokens (a multiple of config.block_n): batch-invariant fixed splits instead. Split i of
    every sequence is tokens [i * split_tokens, (i + 1) * split_tokens), num_kv_splits is only the
    grid's count (fixed_split_count of the longest sequence; checking it would sync the host), and
    every sequence goes through partials and the reduce, whatever the grid."""
    _check_inputs(q, kv, qlen)
    if num_kv_splits < 1:
        raise ValueError("num_kv_splits must be >= 1")
    config = config or default_config(kv.kv_buffer.dtype, q.shape[1], qlen, persistent=False)
    if split_tokens is not None and (split_tokens < 1 or split_tokens % config.block_n):
        raise ValueError(f"split_tokens {split_tokens} must be a positive multiple of block_n {config.block_n}")
    direct_out = num_kv_splits == 1 and split_tokens is None
    nhead = q.shape[1]
    hpg = heads_per_group or kernel_heads_per_group(nhead, qlen, config)
    if nhead % hpg:
        raise ValueError(f"nhead {nhead} is not a multiple of heads_per_group {hpg}")
    groups = nhead // hpg
    out = _out_like(q, out)
    workspace = _workspace(workspace, kv.batch * groups * num_kv_splits, qlen * hpg, q.device)
    args, scale_ptr = _common_args(q, kv, out, sm_scale)
    pdl = not direct_out and _dependent_launch(config, q.device)
    _split_kv_kernel[(groups, kv.batch, num_kv_splits)](
        q, kv.kv_buffer, kv.kv_buffer, scale_ptr, kv.kv_indptr, kv.kv_indices, kv.seq_lens, out,
        workspace.partial_out, workspace.partial_lse, num_splits=num_kv_splits,
        DIRECT_OUT=direct_out, SPLIT_TOKENS=split_tokens or 0, QLEN=qlen, HPG=hpg, BLOCK_M=_tile_rows(qlen, hpg),
        BLOCK_N=config.block_n,
        # split boundaries are multiples of block_n, so a block never straddles a page
        PAGE_ALIGNED=kv.page_size >= config.block_n,
        PREFETCH=config.prefetch, RELOAD_V=config.reload_v, TOKENS_AS_M=config.tokens_as_m,
        **_fp8_args(q, kv, config), PDL=pdl,
        num_warps=config.num_warps, num_stages=config.num_stages, **args,
    )
    if not direct_out:
        shape = reduce_shape(groups * kv.batch * qlen * hpg, invariant=split_tokens is not None, config=config)
        _reduce_splits_kernel[(groups, kv.batch, qlen * hpg * (KV_LORA_RANK // shape.cols))](
            out, workspace.partial_out, workspace.partial_lse, kv.seq_lens, num_kv_splits, out.stride(0),
            out.stride(1), QLEN=qlen, HPG=hpg, D_LATENT=KV_LORA_RANK, SPLIT_TOKENS=split_tokens or 0,
            COLS=shape.cols, CHUNK=shape.chunk, PDL=pdl, num_warps=4, **pdl_launch_option(pdl),
        )
    return out


def mla_decode_persistent(q: torch.Tensor, kv: PagedKV, schedule: MlaSchedule, sm_scale: float, qlen: int,
                          out: torch.Tensor | None = None, workspace: MlaWorkspace | None = None,
                          config: MlaKernelConfig | None = None) -> torch.Tensor:
    """Persistent MLA decode: one launch of schedule.num_programs programs, then the reduce.

    `schedule` (rocbench.formats.mla_schedule.build_mla_schedule, with heads_per_group from
    kernel_heads_per_group) must be on q's device and built for this batch's seq_lens, qlen
    and nhead. Returns out [tokens, nhead, 512] in q's dtype."""
    _check_inputs(q, kv, qlen)
    if (schedule.qlen, schedule.nhead, schedule.batch) != (qlen, q.shape[1], kv.batch):
        raise ValueError(
            f"schedule built for qlen={schedule.qlen} nhead={schedule.nhead} batch={schedule.batch}, "
            f"called with qlen={qlen} nhead={q.shape[1]} batch={kv.batch}"
        )
    if schedule.work_info.device != q.device:
        raise ValueError("move the schedule to q's device first (schedule.to(device))")
    config = config or default_config(kv.kv_buffer.dtype, q.shape[1], qlen)
    hpg = schedule.heads_per_group
    out = _out_like(q, out)
    workspace = _workspace(workspace, max(1, schedule.num_partials), schedule.rows_per_item, q.device)
    args, scale_ptr = _common_args(q, kv, out, sm_scale)
    pdl = schedule.num_reduce > 0 and _dependent_launch(config, q.device)
    _persistent_kernel[(schedule.num_programs,)](
        q, kv.kv_buffer, kv.kv_buffer, scale_ptr, kv.kv_indptr, kv.kv_indices, schedule.work_indptr, schedule.work_info,
        out, workspace.partial_out, workspace.partial_lse,
        INFO_COLS=WORK_INFO_COLS, QLEN=qlen, HPG=hpg, BLOCK_M=_tile_rows(qlen, hpg), BLOCK_N=config.block_n,
        # item boundaries are multiples of the granularity; blocks stay inside a page only if
        # the granularity is a multiple of block_n
        PAGE_ALIGNED=kv.page_size >= config.block_n and schedule.kv_granularity % config.block_n == 0,
        PREFETCH=config.prefetch, RELOAD_V=config.reload_v, TOKENS_AS_M=config.tokens_as_m,
        **_fp8_args(q, kv, config), PDL=pdl,
        num_warps=config.num_warps, num_stages=config.num_stages, **args,
    )
    if schedule.num_reduce > 0:
        shape = reduce_shape(schedule.num_reduce * schedule.rows_per_item,
                             invariant=schedule.fixed_split_tokens is not None, config=config)
        _reduce_schedule_kernel[(schedule.num_reduce, schedule.rows_per_item * (KV_LORA_RANK // shape.cols))](
            out, workspace.partial_out, workspace.partial_lse,
            schedule.reduce_indptr, schedule.reduce_final_map, schedule.reduce_partial_map,
            out.stride(0), out.stride(1), QLEN=qlen, HPG=hpg, D_LATENT=KV_LORA_RANK, COLS=shape.cols,
            CHUNK=shape.chunk, PDL=pdl, num_warps=4, **pdl_launch_option(pdl),
        )
    return out
