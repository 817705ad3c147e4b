"""Stand-in for aiter/mla.py's mla_decode_fwd (same signature), computed in fp32 on the CPU.

It checks what the asm kernels need (dtypes, the arch's fp8 and its scales, the page layout, a
schedule from get_mla_metadata_v1 whose buffers are the ones passed here) and refuses a call that
AITER's kernel table cannot serve, with AITER's message.
"""
from __future__ import annotations

import torch

from aiter import _standin
from aiter.ops.attention import SCHEDULES
from rocbench.rocm.mla_coverage import MlaRequest, coverage

PERSISTENT_MAX_BATCH = 32  # aiter/mla.py: gfx950 bf16 16-head q-length-1 persistent calls above this go split-KV


def _schedule(work_meta_data, work_indptr, work_info_set, reduce_partial_map, nhead, q_dtype, intra_batch_mode):
    schedule = SCHEDULES.get(work_meta_data.data_ptr())
    if schedule is None:
        raise RuntimeError("mla_decode_fwd: work_meta_data was not filled by get_mla_metadata_v1")
    ptrs = work_meta_data.view(torch.int64).tolist()
    if ptrs != [work_indptr.data_ptr(), work_info_set.data_ptr()] or reduce_partial_map is None:
        raise RuntimeError("mla_decode_fwd: work_indptr / work_info_set are not the buffers the schedule points at")
    if schedule["nhead"] != nhead or schedule["intra_batch_mode"] != intra_batch_mode:
        raise RuntimeError(f"mla_decode_fwd: schedule built for nhead={schedule['nhead']} "
                           f"intra_batch_mode={schedule['intra_batch_mode']}, called with {nhead} / {intra_batch_mode}")
    if schedule["dtype_q"] is not None and schedule["dtype_q"] != q_dtype:
        raise RuntimeError(f"mla_decode_fwd: schedule built for q {schedule['dtype_q']}, q is {q_dtype}")


def _attend(q, keys, sm_scale, v_dim, causal):
    """q [rows, H, D] fp32 over keys [L, D] fp32; row j of the rows sees L - rows + j + 1 keys."""
    rows, length = q.shape[0], keys.shape[0]
    scores = torch.einsum("rhd,ld->rhl", q, keys) * sm_scale
    if causal:
        limit = torch.arange(rows) + length - rows + 1
        scores = scores.masked_fill(torch.arange(length)[None, None, :] >= limit[:, None, None], float("-inf"))
    return torch.einsum("rhl,lv->rhv", torch.softmax(scores, dim=-1), keys[:, :v_dim])


def mla_decode_fwd(
    q,
    kv_buffer,
    o,
    qo_indptr,
    kv_indptr,
    kv_indices,
    kv_last_page_lens,
    max_seqlen_q,
    page_size=1,
    nhead_kv=1,
    sm_scale=None,
    logit_cap=0.0,
    num_kv_splits=None,
    num_kv_splits_indptr=None,
    work_meta_data=None,
    work_indptr=None,
    work_info_set=None,
    reduce_indptr=None,
    reduce_final_map=None,
    reduce_partial_map=None,
    q_scale=None,
    kv_scale=None,
    intra_batch_mode=False,
    return_logits=False,
    return_lse=False,
    g_kv_indptr=None,
    cp_world_size=1,
    cp_rank=0,
    causal=True,
):
    q_type, kv_type = _standin.dtype_id(q.dtype), _standin.dtype_id(kv_buffer.dtype)
    if q_type not in ("bf16", "fp8") or kv_type not in ("bf16", "fp8", "byte"):
        raise RuntimeError(f"mla_decode_stage1_asm_fwd: unsupport Q/KV dtype: {q.dtype} / {kv_buffer.dtype}")
    if not q.is_contiguous() or nhead_kv != 1:
        raise RuntimeError("mla_decode_stage1_asm_fwd: only contiguous Q and num_kv_heads == 1")
    if kv_buffer.dim() != 4 or kv_buffer.shape[1] != page_size or kv_buffer.shape[3] != q.shape[2]:
        raise RuntimeError(f"mla_decode_fwd: kv_buffer {tuple(kv_buffer.shape)} is not [pages, {page_size}, 1, "
                           f"{q.shape[2]}]")
    if q_type == "fp8" and (q_scale is None or kv_scale is None):
        raise RuntimeError("mla_decode_stage1_asm_fwd: fp8 Q requires q_scale and kv_scale")
    batch, nhead = qo_indptr.numel() - 1, q.shape[1]
    persistent = work_meta_data is not None
    if persistent:
        _schedule(work_meta_data, work_indptr, work_info_set, reduce_partial_map, nhead, q.dtype, intra_batch_mode)
        if (num_kv_splits is None and _standin.arch() == "gfx950" and (q_type, kv_type) == ("bf16", "bf16")
                and nhead == 16 and max_seqlen_q == 1 and batch >= PERSISTENT_MAX_BATCH):
            persistent = False
    found = coverage(MlaRequest(_standin.arch(), q_type, kv_type, nhead, max_seqlen_q, persistent),
                     _standin.source_dir() / "hsa")
    if not found.supported:
        raise RuntimeError(f"get_heuristic_kernel_mla: cannot get heuristic kernel! {found.reason}")
    _standin.record("mla_decode_fwd", persistent=persistent, kernel=found.kernel, q_dtype=q.dtype)

    sm_scale = sm_scale if sm_scale is not None else q.shape[2] ** -0.5
    qf = q.float() * (q_scale.float() if q_scale is not None else 1.0)
    kv = kv_buffer.float().reshape(-1, page_size, q.shape[2])
    kv = kv * (kv_scale.float() if kv_scale is not None else 1.0)
    for b in range(batch):
        pages = kv_indices[int(kv_indptr[b]):int(kv_indptr[b + 1])].long()
        length = (pages.numel() - 1) * page_size + int(kv_last_page_lens[b])
        keys = kv[pages].reshape(-1, q.shape[2])[:length]
        rows = slice(int(qo_indptr[b]), int(qo_indptr[b + 1]))
        o[rows] = _attend(qf[rows], keys, sm_scale, o.shape[2], causal).to(o.dtype)
    return o, None
