"""The MLA decode reference (the correctness gate's truth) against an independent naive loop,
plus the paged-KV input builders."""

import math
import zlib

import pytest
import torch

from rocbench.formats.paged_kv import (
    HEAD_DIM,
    build_paged_kv,
    make_query,
    make_seq_lens,
)
from rocbench.suites.mla.reference import mla_decode_naive, mla_decode_reference

SM_SCALE = 1.0 / math.sqrt(192)
FP8_DTYPE = torch.float8_e4m3fn


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "page_size,qlen,kv_dtype,seq_lens",
    [
        (1, 1, torch.float32, [3, 9]),
        (4, 1, torch.float16, [1, 7, 12]),
        (4, 2, torch.float32, [2, 5, 9]),
        (64, 3, torch.float32, [3, 70]),
        (4, 2, FP8_DTYPE, [6, 11]),
        (1, 4, FP8_DTYPE, [4, 8]),
        (2, 4, torch.float8_e4m3fnuz, [5, 9]),  # gfx942's flavour
    ],
)
def test_reference_matches_naive_loop(page_size, qlen, kv_dtype, seq_lens):
    g = _gen(zlib.crc32(f"{page_size}/{qlen}/{kv_dtype}".encode()) % 1000)
    kv = build_paged_kv(seq_lens, page_size, kv_dtype, g, "cpu")
    q = make_query(len(seq_lens) * qlen, 3, torch.float32, g, "cpu")
    out, lse = mla_decode_reference(q, kv, SM_SCALE, qlen)
    out_naive, lse_naive = mla_decode_naive(q, kv, SM_SCALE, qlen)
    assert out.shape == (len(seq_lens) * qlen, 3, 512) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()  # NaN garbage never read
    torch.testing.assert_close(out, out_naive, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(lse, lse_naive, atol=2e-6, rtol=1e-5)


def test_reference_single_token_returns_its_value():
    # One cached token: softmax weight 1, out = V exactly, lse = the score.
    kv = build_paged_kv([1], 4, torch.float32, _gen(1), "cpu")
    q = make_query(1, 2, torch.float32, _gen(2), "cpu")
    out, lse = mla_decode_reference(q, kv, SM_SCALE, 1)
    token = kv.dequantized_tokens(0)[0]
    torch.testing.assert_close(out[0], token[:512].expand(2, 512))
    torch.testing.assert_close(lse[0], (q[0] @ token) * SM_SCALE)


def test_reference_causal_mask_for_draft_tokens():
    # qlen 2, L 6: row 0 sees tokens 0..4, row 1 sees 0..5. Changing token 5 must move row 1 only.
    kv = build_paged_kv([6], 4, torch.float32, _gen(3), "cpu")
    q = make_query(2, 2, torch.float32, _gen(4), "cpu")
    out, _ = mla_decode_reference(q, kv, SM_SCALE, 2)
    page, slot = int(kv.kv_indices[1]), 1  # token 5 = page 1, slot 1
    kv.kv_buffer[page, slot] += 3.0
    out2, _ = mla_decode_reference(q, kv, SM_SCALE, 2)
    assert torch.equal(out[0], out2[0])
    assert (out[1] - out2[1]).abs().max() > 1e-2


def test_build_paged_kv_layout():
    lens = [1, 5, 8, 9, 33]
    kv = build_paged_kv(lens, 8, torch.float16, _gen(5), "cpu")
    pages = [-(-n // 8) for n in lens]
    assert kv.kv_indptr.tolist() == [0] + torch.cumsum(torch.tensor(pages), 0).tolist()
    assert kv.kv_last_page_lens.tolist() == [n - (p - 1) * 8 for n, p in zip(lens, pages)]
    ids = kv.kv_indices.tolist()
    assert len(set(ids)) == len(ids) == sum(pages)
    assert kv.kv_buffer.shape[0] > sum(pages)  # spare pages exist
    assert ids != sorted(ids)  # a permutation, not the identity order
    for t in (kv.kv_indptr, kv.kv_indices, kv.kv_last_page_lens, kv.seq_lens):
        assert t.dtype == torch.int32
    # Unused slots are poisoned, used ones are finite.
    nan_slots = torch.isnan(kv.kv_buffer).all(-1)
    used = sum(lens)
    assert int((~nan_slots).sum()) == used
    assert kv.nbytes_read() == used * HEAD_DIM * 2


def test_build_paged_kv_fp8_scale_and_nan():
    kv = build_paged_kv([3, 10], 4, FP8_DTYPE, _gen(6), "cpu")
    assert kv.kv_buffer.dtype == FP8_DTYPE and kv.kv_scale.dim() == 0 and kv.kv_scale.dtype == torch.float32
    tokens = torch.cat([kv.dequantized_tokens(b) for b in range(2)])
    assert torch.isfinite(tokens).all()
    # amax maps to the top of the fp8 range, so the dequantized amax is within fp8 rounding of
    # 448 * scale; the value scale is ~0.5 so amax is a few units.
    assert abs(float(tokens.abs().max()) - 448 * float(kv.kv_scale)) <= 448 * float(kv.kv_scale) * 0.07
    assert torch.isnan(kv.kv_buffer.float()).any()
    assert kv.nbytes_read() == 13 * HEAD_DIM


@pytest.mark.parametrize("dist", ["uniform", "skewed", "random"])
@pytest.mark.parametrize("batch", [1, 16, 64])
def test_make_seq_lens(dist, batch):
    lens = make_seq_lens(batch, 1000, dist, _gen(7))
    assert len(lens) == batch and min(lens) >= 1
    if dist == "uniform":
        assert lens == [1000] * batch
    elif dist == "skewed":
        assert abs(sum(lens) - batch * 1000) <= batch
        if batch > 1:
            n_long = sum(1 for n in lens if n > 1000)
            assert 1 <= n_long <= max(1, batch // 8) and max(lens) >= 4 * min(lens)
    else:
        assert all(500 <= n <= 1000 for n in lens)


def test_make_seq_lens_rejects_unknown():
    with pytest.raises(ValueError):
        make_seq_lens(4, 100, "zipf", _gen(0))


def test_reference_rejects_short_sequence_for_qlen():
    kv = build_paged_kv([1, 5], 4, torch.float32, _gen(8), "cpu")
    q = make_query(4, 2, torch.float32, _gen(9), "cpu")
    with pytest.raises(ValueError):
        mla_decode_reference(q, kv, SM_SCALE, 2)
