"""fp32 reference for absorbed MLA decode over a paged latent KV cache (the correctness truth).

Semantics: q [B * qlen, H, 576]; for sequence b of context length L, query row j (0-based) of
its qlen rows attends to the first L - qlen + j + 1 cached tokens (qlen 1: all L; qlen > 1:
causal among the draft tokens). Scores = q . k over all 576 channels * sm_scale; softmax over
the sequence; out = P @ V with V = the first 512 channels of each cached token. LSE is the
natural-log log-sum-exp of the scaled scores.
"""

from __future__ import annotations

import math

import torch

from rocbench.formats.paged_kv import HEAD_DIM, KV_LORA_RANK, PagedKV


def _check_shapes(q: torch.Tensor, kv: PagedKV, qlen: int) -> None:
    if q.dim() != 3 or q.shape[-1] != HEAD_DIM:
        raise ValueError(f"q must be [tokens, nhead, {HEAD_DIM}], got {tuple(q.shape)}")
    if q.shape[0] != kv.batch * qlen:
        raise ValueError(f"q has {q.shape[0]} rows, expected batch {kv.batch} * qlen {qlen}")


def causal_limits(seq_len: int, qlen: int) -> list[int]:
    """Number of visible cached tokens for each of a sequence's qlen query rows."""
    if seq_len < qlen:
        raise ValueError(f"sequence of {seq_len} tokens cannot hold {qlen} query tokens")
    return [seq_len - qlen + j + 1 for j in range(qlen)]


def mla_decode_reference(q: torch.Tensor, kv: PagedKV, sm_scale: float, qlen: int = 1):
    """Vectorized per sequence, fp32 throughout. Returns (out [T, H, 512], lse [T, H]), fp32."""
    _check_shapes(q, kv, qlen)
    tokens, nhead, _ = q.shape
    out = torch.empty(tokens, nhead, KV_LORA_RANK, dtype=torch.float32, device=q.device)
    lse = torch.empty(tokens, nhead, dtype=torch.float32, device=q.device)
    seq_lens = kv.seq_lens.tolist()
    for b, seq_len in enumerate(seq_lens):
        kv_tokens = kv.dequantized_tokens(b)  # [L, 576]
        rows = slice(b * qlen, (b + 1) * qlen)
        qb = q[rows].float()  # [qlen, H, 576]
        scores = torch.einsum("jhd,nd->jhn", qb, kv_tokens) * sm_scale
        limits = torch.tensor(causal_limits(seq_len, qlen), device=q.device)
        visible = torch.arange(seq_len, device=q.device)[None, :] < limits[:, None]  # [qlen, L]
        scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
        lse_b = torch.logsumexp(scores, dim=-1)  # [qlen, H]
        probs = torch.exp(scores - lse_b[..., None])
        out[rows] = torch.einsum("jhn,nd->jhd", probs, kv_tokens[:, :KV_LORA_RANK])
        lse[rows] = lse_b
    return out, lse


def mla_decode_naive(q: torch.Tensor, kv: PagedKV, sm_scale: float, qlen: int = 1):
    """Independent check of the reference: one (query row, head) at a time, walking the page
    table token by token in float64. Tiny shapes only. Returns (out, lse) in fp32."""
    _check_shapes(q, kv, qlen)
    tokens, nhead, _ = q.shape
    buffer = kv.kv_buffer.cpu().double()
    scale = 1.0 if kv.kv_scale is None else float(kv.kv_scale)
    indptr = kv.kv_indptr.tolist()
    indices = kv.kv_indices.tolist()
    page_size = kv.page_size
    qd = q.cpu().double()
    out = torch.zeros(tokens, nhead, KV_LORA_RANK, dtype=torch.float64)
    lse = torch.zeros(tokens, nhead, dtype=torch.float64)
    for b, seq_len in enumerate(kv.seq_lens.tolist()):
        for j, limit in enumerate(causal_limits(seq_len, qlen)):
            t = b * qlen + j
            # token n lives in slot n % page_size of the (n // page_size)-th page of sequence b
            cached = [buffer[indices[indptr[b] + n // page_size], n % page_size] * scale for n in range(limit)]
            for h in range(nhead):
                scores = [float(torch.dot(qd[t, h], k)) * sm_scale for k in cached]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                acc = torch.zeros(KV_LORA_RANK, dtype=torch.float64)
                for w, k in zip(weights, cached):
                    acc += w * k[:KV_LORA_RANK]
                out[t, h] = acc / total
                lse[t, h] = top + math.log(total)
    return out.float().to(q.device), lse.float().to(q.device)
