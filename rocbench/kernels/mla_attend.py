"""Device code of one MLA decode tile: a tile's query rows (qlen x heads) attend to a range of one sequence's paged
latent KV with an online softmax in the exp2 domain. The row form puts the query rows on the MMAs' M side; with
tokens_as_m the KV block's tokens take it (_attend_tokens_as_m). The kernels in rocbench.kernels.mla_decode call
attend_kv_range and store or merge what it returns."""

from __future__ import annotations

import triton
import triton.language as tl

NEG_BIG = tl.constexpr(-1.0e30)  # finite "minus infinity" for running maxima: keeps exp2(m_old - m_new) NaN-free


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
def _scores(q_nope, q_pe, k_nope, k_pe, acc=None):
    s = tl.dot(q_nope, tl.trans(k_nope), acc)  # [M, N] (+ acc)
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
    (qk_scale folded in). FP8_QK 2 and 3: q = hi + lo, two fp8 parts with per-row scales [M]; FP8_QK 1: q = hi alone
    (one fp8 part, as AITER's fp8 path casts q; lo_* unused); F16_MMA: q in fp16 with a per-row scale [M] (lo_*
    unused); else q as loaded and the scalar qk_scale. Rows past the tile's queries are
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
    if FP8_QK >= 2:
        q_nope, q_pe, hi_scale, lo_nope, lo_pe, lo_scale = _split_q_fp8(q_nope, q_pe, KV_DTYPE, FP8_MAX)
        scale = hi_scale * qk_scale
        lo_scale = lo_scale * qk_scale
    elif FP8_QK:
        q_nope, q_pe, hi_scale = _fp8_rows(q_nope.to(tl.float32), q_pe.to(tl.float32), KV_DTYPE, FP8_MAX)
        scale = hi_scale * qk_scale
        lo_nope, lo_pe, lo_scale = q_nope, q_pe, scale
    elif F16_MMA:
        q_nope, q_pe, q_scale = _f16_rows(q_nope, q_pe)
        scale = q_scale * qk_scale
        lo_nope, lo_pe, lo_scale = q_nope, q_pe, scale
    else:
        scale = qk_scale
        lo_nope, lo_pe, lo_scale = q_nope, q_pe, scale
    return q_nope, q_pe, scale, lo_nope, lo_pe, lo_scale, limit, m_i, l_i


@triton.jit
def _scores_t(k_nope, k_pe, qt_nope, qt_pe, acc=None):
    s = tl.dot(k_nope, qt_nope, acc)  # [N, M] (+ acc)
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
    """attend_kv_range with the KV block's tokens as the MMAs' M side: S^T = K Q^T [BLOCK_N, BLOCK_M], and
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
        hi_over_lo = scale / lo_scale  # (FP8_QK 3)
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
        if FP8_QK == 3:  # the low part's product accumulated onto the high part's, rescaled: one product live
            s_hi = _scores_t(k_nope, k_pe, qt_nope, qt_pe) * hi_over_lo
            s_t = _scores_t(k_nope, k_pe, lot_nope, lot_pe, s_hi) * lo_scale
        elif FP8_QK == 2:
            s_t = _scores_t(k_nope, k_pe, qt_nope, qt_pe) * scale + _scores_t(k_nope, k_pe, lot_nope, lot_pe) * lo_scale
        elif FP8_QK:
            s_t = _scores_t(k_nope, k_pe, qt_nope, qt_pe) * scale
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
def attend_kv_range(
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
      scale), so that Q@K^T runs as fp8 MMAs on the KV tile as loaded; only V is converted. FP8_QK 2
      adds the two parts' products, FP8_QK 3 accumulates the low part's onto the high part's, rescaled by
      hi_scale / lo_scale per row, so that one fp32 product is live (the same sum to fp32 rounding). FP8_QK 1
      keeps q's high part only: one fp8 MMA, AITER's numerics (q cast to fp8), not bf16's. (fp8
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
            hi_over_lo = hi_scale / lo_scale
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
            if FP8_QK == 3:  # the low part's product accumulated onto the high part's, rescaled: one product live
                s = _scores(lo_nope, lo_pe, k_nope, k_pe, _scores(q_nope, q_pe, k_nope, k_pe) * hi_over_lo)
                s = s * lo_scale
            elif FP8_QK == 2:
                s = _scores(q_nope, q_pe, k_nope, k_pe) * hi_scale + _scores(lo_nope, lo_pe, k_nope, k_pe) * lo_scale
            elif FP8_QK:
                s = _scores(q_nope, q_pe, k_nope, k_pe) * hi_scale
            else:
                s = _scores(q_nope, q_pe, k_nope, k_pe) * qk_scale
            acc, m_i, l_i = _softmax_step_rows(acc, m_i, l_i, s, v, visible)
        acc = acc * v_scale
    return acc, m_i, l_i
