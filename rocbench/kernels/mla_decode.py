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
tokens on the MMAs' M side, so that 16-32 row tiles can take Hopper's 64-row wgmma. The tile's device code is in
rocbench.kernels.mla_attend. Pick launch knobs with rocbench.kernels.mla_config.default_config(kv_dtype, nhead, qlen,
device, persistent=...) (the two kernels' best knobs differ) and the persistent schedule with
build_persistent_schedule(..., config).

Both run functions launch a fixed number of kernels whose grids and buffers depend only on host
integers (shapes, split count, schedule sizes): they can be captured in a CUDA graph. They are
deterministic: the reductions are ordered loops, no atomics.

Batch invariance (deterministic inference: a request's output bitwise the same whatever else is in
its batch) needs more than determinism: where a sequence's KV is split, and whether its output
comes from one program or a merge of partials, must depend on that sequence alone. The default
modes do not give that (the split count, and the schedule's quota boundaries, follow the whole
batch). Fixed-size splits do: `mla_decode_split_kv(..., split_tokens=N)` and a schedule built
with `fixed_split_tokens=N` cut every sequence at multiples of N tokens and merge its pieces in KV
order. The config must not depend on the batch either (mla_config.builtin_config without a batch, not a per-batch
one).

Only Triton APIs present in 3.6 are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from rocbench.formats.fp8 import E4M3_DTYPES
from rocbench.formats.mla_schedule import DEFAULT_KV_GRANULARITY, WORK_INFO_COLS, MlaSchedule, build_mla_schedule
from rocbench.formats.paged_kv import HEAD_DIM, KV_LORA_RANK, QK_ROPE_DIM, PagedKV
from rocbench.kernels import mla_gluon_scope
from rocbench.kernels.mla_attend import NEG_BIG, attend_kv_range
from rocbench.kernels.mla_config import (
    DEFAULT_CONFIG,
    MlaKernelConfig,
    default_config,
    kernel_heads_per_group,
    persistent_num_programs,
)
from rocbench.kernels.pdl import dependent_launch_supported, gdc_launch_dependents, gdc_wait, pdl_launch_option
from rocbench.kernels.target import nvidia_gpu

LOG2E = 1.4426950408889634


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
    acc, m_i, l_i = attend_kv_range(
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
        acc, m_i, l_i = attend_kv_range(
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
# program per row and 16 partials per load (the split shape made those 9-17% slower), or as few as the schedule's
# merges take (reduce_shape's most_partials).
WIDE_REDUCE, NARROW_REDUCE = ReduceShape(cols=128, chunk=32), ReduceShape(cols=KV_LORA_RANK, chunk=16)


def reduce_shape(merged_rows: int, invariant: bool, config: MlaKernelConfig | None = None,
                 most_partials: int = 0) -> ReduceShape:
    """The merge's launch shape for this many output rows to merge, or the one config asks for. A batch-invariant
    run keeps one shape whatever the batch and the config: the shape sets the order of the sums over a chunk's
    partials. most_partials (0: not known): the most partials one merge takes; unless the config names a chunk, the
    chunk shrinks to it (a power of two, at least 2), since a chunk's masked lanes cost their instructions all the
    same (offline sm_90, 512 columns: 552 instructions at 16 partials a load, 224 at 4, which is what a batch-64
    persistent schedule's merges take; H100, 2026-12-06, 48 gated rows against chunk 16, `triton_reduce16`: batch 64
    uniform calls 1.01-1.05x faster, nhead 64 fp8 120.1 -> 114.9 us, batch 128 within 0.7%). A merge that fits one
    chunk either way keeps one chunk, so only the order of a sum over 3 or more partials can change."""
    if invariant:
        return WIDE_REDUCE
    shape = WIDE_REDUCE if merged_rows < 512 else NARROW_REDUCE
    if config is None or not (config.reduce_cols or config.reduce_chunk):
        if most_partials:
            shape = ReduceShape(shape.cols, chunk=min(shape.chunk, max(2, triton.next_power_of_2(most_partials))))
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
    fp8_qk = 0  # q's fp8 parts and how their products add (mla_attend.attend_kv_range)
    if fp8 and config.fp8_qk:
        fp8_qk = 1 if config.fp8_q_one_part else 3 if config.fp8_qk_one_product else 2
    return dict(FP8_QK=fp8_qk, F16_MMA=f16_mma, CVT_ASM=cvt_asm,
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


def partial_cost_granules(rows: int, kv_granularity: int, kv_element_bytes: int) -> float:
    """What one partial costs in granules of KV read: its fp32 [rows, 512] output written and read back by the reduce,
    over a granule's [tokens, 576] KV bytes (64 rows, bf16 KV: 3.6 granules; 16 rows: 0.9)."""
    return 2 * rows * KV_LORA_RANK * 4 / (kv_granularity * HEAD_DIM * kv_element_bytes)


def build_persistent_schedule(seq_lens, qlen: int, nhead: int, num_sms: int,
                              config: MlaKernelConfig, fixed_split_tokens: int | None = None,
                              kv_element_bytes: int = 2) -> MlaSchedule:
    """The schedule mla_decode_persistent expects for `config` (head tile, grid size, minimum
    work per program, granularity a multiple of block_n), on CPU: call .to(device).
    fixed_split_tokens (a multiple of that granularity): batch-invariant splits, see
    rocbench.formats.mla_schedule. kv_element_bytes (the KV cache's) prices a partial for config.whole_units."""
    if config.gluon_ws and qlen > 1:  # the Gluon tile takes the query tokens one by one
        seq_lens, qlen = one_token_lens(seq_lens, qlen), 1
    hpg = kernel_heads_per_group(nhead, qlen, config)
    granularity = max(DEFAULT_KV_GRANULARITY, config.block_n)
    return build_mla_schedule(
        seq_lens, qlen, nhead, hpg, persistent_num_programs(num_sms, config),
        kv_granularity=granularity,
        min_granules_per_program=config.min_granules_per_program,
        fixed_split_tokens=fixed_split_tokens,
        partial_cost=partial_cost_granules(qlen * hpg, granularity, kv_element_bytes) if config.whole_units else None,
        even_pieces=config.even_pieces,
    )


def one_token_lens(seq_lens, qlen: int) -> list[int]:
    """A batch with qlen query tokens per sequence as qlen sequences of one token each: query token j of a sequence
    of L tokens sees its first L - qlen + j + 1 (the causal limits rocbench.suites.mla.reference states). q's and
    out's rows (b * qlen + j) are already in that order; the pages stay the sequence's."""
    return [int(length) - qlen + j + 1 for length in seq_lens for j in range(qlen)]


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
        shape = reduce_shape(groups * kv.batch * qlen * hpg, invariant=split_tokens is not None, config=config,
                             most_partials=num_kv_splits)
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
    config = config or default_config(kv.kv_buffer.dtype, q.shape[1], qlen)
    # the Gluon tile's schedule takes the query tokens one by one (build_persistent_schedule)
    wanted = (1, q.shape[1], kv.batch * qlen) if config.gluon_ws else (qlen, q.shape[1], kv.batch)
    if (schedule.qlen, schedule.nhead, schedule.batch) != wanted:
        raise ValueError(
            f"schedule built for qlen={schedule.qlen} nhead={schedule.nhead} batch={schedule.batch}, "
            f"called with qlen={qlen} nhead={q.shape[1]} batch={kv.batch}"
            + (" (the Gluon tile's: qlen 1 over batch x qlen)" if config.gluon_ws else "")
        )
    if schedule.work_info.device != q.device:
        raise ValueError("move the schedule to q's device first (schedule.to(device))")
    hpg = schedule.heads_per_group
    out = _out_like(q, out)
    workspace = _workspace(workspace, max(1, schedule.num_partials), schedule.rows_per_item, q.device)
    if config.gluon_ws:
        reason = mla_gluon_scope.unsupported_reason(q, kv, qlen, schedule)
        if reason is not None:
            raise ValueError(f"MlaKernelConfig.gluon_ws: the Gluon tile cannot take this call: {reason}")
        from rocbench.kernels import mla_gluon  # imports Triton's Gluon

        mla_gluon.attend(q, kv, schedule, sm_scale, out, workspace, one_chain=config.gluon_one_chain,
                         regs=config.gluon_regs, split_s=config.gluon_split_s, remat_q=config.gluon_remat_q,
                         q_one_part=config.fp8_q_one_part, stages=config.gluon_stages,
                         split_k=config.gluon_split_k, swizzled_parts=config.gluon_swizzled_parts,
                         convert_under_qk=config.gluon_convert_under_qk)
        reduce_schedule_partials(out, workspace, schedule, config)
        return out
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
    reduce_schedule_partials(out, workspace, schedule, config, pdl)
    return out


def reduce_schedule_partials(out: torch.Tensor, workspace: MlaWorkspace, schedule: MlaSchedule,
                             config: MlaKernelConfig | None = None, pdl: bool = False) -> None:
    """Merge the partials a persistent attention kernel wrote for `schedule` into `out` (nothing when the schedule
    split no unit). pdl: launched as a programmatic dependent of that kernel (it must have been launched so)."""
    if schedule.num_reduce == 0:
        return
    shape = reduce_shape(schedule.num_reduce * schedule.rows_per_item,
                         invariant=schedule.fixed_split_tokens is not None, config=config,
                         most_partials=schedule.most_partials)
    _reduce_schedule_kernel[(schedule.num_reduce, schedule.rows_per_item * (KV_LORA_RANK // shape.cols))](
        out, workspace.partial_out, workspace.partial_lse,
        schedule.reduce_indptr, schedule.reduce_final_map, schedule.reduce_partial_map,
        out.stride(0), out.stride(1), QLEN=schedule.qlen, HPG=schedule.heads_per_group, D_LATENT=KV_LORA_RANK,
        COLS=shape.cols, CHUNK=shape.chunk, PDL=pdl, num_warps=4, **pdl_launch_option(pdl),
    )
