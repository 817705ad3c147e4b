"""Stand-in for the MLA metadata functions of aiter/ops/attention.py (same signatures).

get_mla_metadata_info_v1 returns the six buffer specs in ITS order (work_metadata_ptrs,
work_indptr, work_info_set, ...); get_mla_metadata_v1 takes the buffers in ANOTHER order
(work_metadata_ptrs, work_info_set, work_indptr, ...). The stand-in refuses buffers whose shapes
or dtypes say they came in the wrong order, where AITER would write 32-byte work records into the
small work_indptr buffer.
"""
from __future__ import annotations

import math

import torch

from aiter import _standin
from aiter.ops.enum import MlaVersion

CU_COUNT = {"gfx942": 304, "gfx950": 256}
# work_metadata_ptrs.data_ptr() -> the modes the schedule was built with (mla_decode_fwd checks them)
SCHEDULES: dict[int, dict] = {}


def get_mla_metadata_info_v1(
    batch_size: int,
    max_seqlen_qo: int,
    num_head_qo: int,
    q_dtype: torch.dtype,
    kv_dtype: torch.dtype,
    is_sparse: bool,
    fast_mode: bool = True,
    num_kv_splits: int = 32,
    intra_batch_mode: bool = False,
    max_split_per_batch: int = -1,
):
    assert num_head_qo % 8 == 0
    _standin.dtype_id(q_dtype), _standin.dtype_id(kv_dtype)
    max_splits = CU_COUNT[_standin.arch()]
    tiles = math.ceil(max_seqlen_qo * num_head_qo / 16)
    tile_cnt = batch_size * tiles
    if fast_mode:
        max_work = (batch_size + max_splits - 1) * tiles
        max_split_tiles = min(batch_size + max_splits - 1, (max_splits - 1) * 2) * tiles
    else:
        max_work = max_split_tiles = tile_cnt * max_splits
    if max_split_per_batch > 0:
        max_split_tiles = max(max_split_tiles, tile_cnt + min(max_splits, max_split_per_batch * batch_size))
    if intra_batch_mode:
        max_work = max_split_tiles = tile_cnt * num_kv_splits
    return (
        ((2), torch.uint64),
        ((max_splits + 1), torch.int32),
        ((max_work, 8), torch.int32),
        ((tile_cnt + 1), torch.int32),
        ((tile_cnt, 2), torch.int32),
        (max_split_tiles, torch.int32),
    )


def _check_buffer(name: str, t: torch.Tensor, ndim: int, dtype: torch.dtype, width: int | None = None) -> None:
    ok = t.dim() == ndim and t.dtype == dtype and (width is None or t.shape[-1] == width)
    if not ok:
        want = f"{ndim}-D {dtype}" + (f" [.., {width}]" if width else "")
        raise RuntimeError(f"get_mla_metadata_v1: {name} must be {want}, got {tuple(t.shape)} {t.dtype} "
                           "(buffers out of order? the order is work_metadata_ptrs, work_info_set, work_indptr, "
                           "reduce_indptr, reduce_final_map, reduce_partial_map)")


def get_mla_metadata_v1(
    seqlens_qo_indptr: torch.Tensor,
    seqlens_kv_indptr: torch.Tensor,
    kv_last_page_lens: torch.Tensor,
    num_heads_per_head_k: int,
    num_heads_k: int,
    is_causal: bool,
    work_metadata_ptrs: torch.Tensor,
    work_info_set: torch.Tensor,
    work_indptr: torch.Tensor,
    reduce_indptr: torch.Tensor,
    reduce_final_map: torch.Tensor,
    reduce_partial_map: torch.Tensor,
    page_size: int = 1,
    kv_granularity: int = 16,
    max_seqlen_qo: int = -1,
    uni_seqlen_qo: int = -1,
    fast_mode: bool = True,
    topk: int = -1,
    max_split_per_batch: int = -1,
    intra_batch_mode: bool = False,
    is_cp_round_robin: bool = False,
    mla_version: int = MlaVersion.V32.value,
    dtype_q_nope: torch.dtype | None = None,
    dtype_q_rope: torch.dtype | None = None,
    dtype_kv_nope: torch.dtype | None = None,
    dtype_kv_rope: torch.dtype | None = None,
    dtype_q: torch.dtype | None = None,
    dtype_kv: torch.dtype | None = None,
) -> None:
    _check_buffer("work_metadata_ptrs", work_metadata_ptrs, 1, torch.uint64)
    _check_buffer("work_info_set", work_info_set, 2, torch.int32, 8)
    _check_buffer("work_indptr", work_indptr, 1, torch.int32)
    _check_buffer("reduce_indptr", reduce_indptr, 1, torch.int32)
    _check_buffer("reduce_final_map", reduce_final_map, 2, torch.int32, 2)
    _check_buffer("reduce_partial_map", reduce_partial_map, 1, torch.int32)
    if work_indptr.numel() != CU_COUNT[_standin.arch()] + 1:
        raise RuntimeError(f"get_mla_metadata_v1: work_indptr has {work_indptr.numel()} entries, not #cu_part + 1")
    for dtype in (dtype_q, dtype_kv):
        if dtype is not None:
            _standin.dtype_id(dtype)
    if intra_batch_mode and max_split_per_batch <= 0:
        raise RuntimeError("get_mla_metadata_v1: intra_batch_mode with max_split_per_batch=-1 computes negative "
                           "q offsets (v1_0_device.cuh)")
    q_lens = (seqlens_qo_indptr[1:] - seqlens_qo_indptr[:-1]).tolist()
    if max_seqlen_qo > 0 and max_seqlen_qo != max(q_lens):
        raise RuntimeError(f"get_mla_metadata_v1: max_seqlen_qo={max_seqlen_qo} but the longest q is {max(q_lens)}")
    if uni_seqlen_qo > 0 and set(q_lens) != {uni_seqlen_qo}:
        raise RuntimeError(f"get_mla_metadata_v1: uni_seqlen_qo={uni_seqlen_qo} but q lengths are {sorted(set(q_lens))}")
    work_metadata_ptrs.view(torch.int64).copy_(
        torch.tensor([work_indptr.data_ptr(), work_info_set.data_ptr()], dtype=torch.int64))
    SCHEDULES[work_metadata_ptrs.data_ptr()] = dict(
        fast_mode=fast_mode, intra_batch_mode=intra_batch_mode, max_split_per_batch=max_split_per_batch,
        nhead=num_heads_per_head_k, page_size=page_size, dtype_q=dtype_q, dtype_kv=dtype_kv)
    _standin.record("get_mla_metadata_v1", is_causal=is_causal, page_size=page_size, kv_granularity=kv_granularity,
                    max_seqlen_qo=max_seqlen_qo, uni_seqlen_qo=uni_seqlen_qo, fast_mode=fast_mode,
                    max_split_per_batch=max_split_per_batch, intra_batch_mode=intra_batch_mode)
