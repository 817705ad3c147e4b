"""Triton MLA decode kernels (split-KV and persistent) against the fp32 reference.

On a machine without a GPU these run under TRITON_INTERPRET=1 (set in conftest.py) with fp32 /
fp16 inputs: the interpreter's bf16 tl.dot multiplies the bf16 words as integers, so bf16 runs on the CPU only where
a test takes its dots as exact fp32 products (tests/ptx_emulator.bf16_dots_in_fp32)."""

import dataclasses
import math

import pytest
import torch

from rocbench.kernels.mla_config import (
    MlaKernelConfig,
    builtin_config,
    default_config,
    kernel_heads_per_group,
    tune_candidates,
)
from rocbench.kernels.mla_decode import (
    NARROW_REDUCE,
    WIDE_REDUCE,
    ReduceShape,
    alloc_persistent_workspace,
    alloc_split_kv_workspace,
    mla_decode_persistent,
    mla_decode_split_kv,
    pick_num_kv_splits,
    reduce_shape,
)
from rocbench.formats.paged_kv import build_paged_kv, make_query, make_seq_lens
from rocbench.suites.mla.reference import mla_decode_reference
from rocbench.formats.mla_schedule import build_mla_schedule
from tests.helpers import needs_interpreter
from tests.ptx_emulator import bf16_dots_in_fp32, inline_asm_emulated

FP8_DTYPE = torch.float8_e4m3fn

pytestmark = [needs_interpreter(on_cpu_only=True), pytest.mark.gpu]  # on a GPU these run compiled

SM_SCALE = 1.0 / math.sqrt(192)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Small blocks so that the tiny test sequences span several blocks, splits and work items.
SMALL = MlaKernelConfig(block_n=16)
# Error bounds vs the fp32 reference; out ~ 0.1-0.5 in magnitude. fp32 on a GPU runs tf32 dots.
ATOL = {torch.float32: 2e-3 if DEVICE == "cuda" else 1e-4, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _errors(out, ref):
    diff = (out.float() - ref).abs()
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.flatten(), dim=0)
    return float(diff.max()), float(cos)


def assert_matches_reference(out, ref, q_dtype):
    assert torch.isfinite(out).all(), "unwritten or NaN output"
    max_err, cos = _errors(out, ref)
    assert max_err <= ATOL[q_dtype], f"max abs err {max_err:.3g} > {ATOL[q_dtype]}"
    assert cos >= 0.99995, f"cosine {cos:.6f}"
    return max_err


def _case(seq_lens, page_size, q_dtype, kv_dtype, nhead, qlen, seed):
    g = _gen(seed)
    kv = build_paged_kv(seq_lens, page_size, kv_dtype, g, "cpu").to(DEVICE)
    q = make_query(len(seq_lens) * qlen, nhead, q_dtype, g, DEVICE)
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, qlen)
    return q, kv, ref


def _poisoned_out(q):
    return torch.full((q.shape[0], q.shape[1], 512), float("nan"), dtype=q.dtype, device=q.device)


def _run_both(q, kv, qlen, config, num_kv_splits, num_programs):
    nhead = q.shape[1]
    out_split = mla_decode_split_kv(q, kv, SM_SCALE, qlen, num_kv_splits, out=_poisoned_out(q), config=config)
    hpg = kernel_heads_per_group(nhead, qlen, config)
    sched = build_mla_schedule(kv.seq_lens.tolist(), qlen, nhead, hpg, num_programs, 16).to(DEVICE)
    out_pers = mla_decode_persistent(q, kv, sched, SM_SCALE, qlen, out=_poisoned_out(q), config=config)
    return out_split, out_pers, sched


CASES = [
    # seq_lens, page, q dtype, kv dtype, nhead, qlen, splits, programs, config
    ([7, 40, 33], 1, torch.float32, torch.float32, 4, 1, 3, 5, SMALL),
    ([50, 17], 16, torch.float16, torch.float16, 8, 1, 4, 3, SMALL),
    ([9, 48, 20], 16, torch.float32, torch.float32, 4, 2, 2, 4, SMALL),
    ([2, 35], 1, torch.float16, torch.float16, 4, 2, 5, 7, SMALL),
    ([6, 6, 6, 90, 6, 6], 16, torch.float16, torch.float16, 4, 1, 2, 6, SMALL),  # skewed
    ([40, 23], 16, torch.float16, FP8_DTYPE, 4, 1, 3, 4, SMALL),
    ([31, 12], 1, torch.float32, FP8_DTYPE, 4, 2, 2, 3, SMALL),
    # gfx942's fp8 flavour (the kernels run it on ROCm; NVIDIA's Triton has no fnuz, so CPU interpreter only)
    pytest.param([29, 18], 16, torch.float16, torch.float8_e4m3fnuz, 4, 1, 2, 3, SMALL,
                 marks=pytest.mark.skipif(DEVICE == "cuda", reason="float8_e4m3fnuz exists on ROCm only")),
    ([64, 3], 64, torch.float16, torch.float16, 4, 1, 1, 2, SMALL),  # one split: direct output path
    # The other code paths of the kernels: transposed MMAs, register prefetch, several head groups.
    ([37, 70], 16, torch.float16, FP8_DTYPE, 8, 2, 3, 4, MlaKernelConfig(block_n=16, prefetch=True, num_stages=1)),
    ([45, 16], 4, torch.float32, torch.float32, 8, 1, 2, 8, MlaKernelConfig(block_n=16, max_tile_rows=2)),
    ([45, 30], 16, torch.float16, FP8_DTYPE, 8, 1, 2, 6,
     MlaKernelConfig(block_n=16, reload_v=True, max_tile_rows=4, min_granules_per_program=2)),
    # q split into two fp8 parts for fp8 Q@K^T MMAs. (Triton 3.9's interpreter rounds fp32 -> fp8 up to 50%
    # off; the low part absorbs most of that, so this checks the scales and masks, and the GPU tier the accuracy.)
    ([40, 23], 16, torch.float16, FP8_DTYPE, 8, 2, 3, 4, MlaKernelConfig(block_n=16, fp8_qk=True)),
    # the reduce's shape from the config: loads of 2 partials (the last one part-masked), 8 programs per row;
    # then one load larger than the partials, one program per row
    ([70, 41], 16, torch.float16, torch.float16, 4, 1, 5, 9, MlaKernelConfig(block_n=16, reduce_cols=64, reduce_chunk=2)),
    ([90], 16, torch.float32, torch.float32, 4, 2, 6, 7, MlaKernelConfig(block_n=16, reduce_cols=512, reduce_chunk=64)),
    # bf16 q, fp8 KV, MMAs in fp16 (q rescaled per row); no bf16 dot, so the interpreter runs it right
    ([40, 23], 16, torch.bfloat16, FP8_DTYPE, 8, 2, 3, 4, MlaKernelConfig(block_n=16, f16_mma=True)),
    ([37, 70], 16, torch.bfloat16, FP8_DTYPE, 8, 1, 3, 4, MlaKernelConfig(block_n=16, f16_mma=True, fp8_qk=True)),
    # the KV block's tokens as the MMAs' M side: S^T = K Q^T, O^T = V^T P^T (fp8 V in four channel chunks)
    ([7, 40, 33], 1, torch.float32, torch.float32, 4, 1, 3, 5, MlaKernelConfig(block_n=16, tokens_as_m=True)),
    ([9, 48, 20], 16, torch.float16, torch.float16, 8, 2, 2, 4, MlaKernelConfig(block_n=16, tokens_as_m=True)),
    ([40, 23], 16, torch.float16, FP8_DTYPE, 4, 1, 3, 4, MlaKernelConfig(block_n=16, tokens_as_m=True)),
    ([37, 70], 16, torch.float16, FP8_DTYPE, 8, 2, 3, 4, MlaKernelConfig(block_n=16, tokens_as_m=True, fp8_qk=True)),
    ([45, 30], 16, torch.bfloat16, FP8_DTYPE, 8, 1, 2, 6,
     MlaKernelConfig(block_n=16, tokens_as_m=True, fp8_qk=True, f16_mma=True, max_tile_rows=4)),
]


@pytest.mark.parametrize("seq_lens,page,q_dtype,kv_dtype,nhead,qlen,splits,programs,config", CASES)
def test_kernels_match_reference(seq_lens, page, q_dtype, kv_dtype, nhead, qlen, splits, programs, config):
    q, kv, ref = _case(seq_lens, page, q_dtype, kv_dtype, nhead, qlen, seed=len(seq_lens) * 100 + page)
    out_split, out_pers, sched = _run_both(q, kv, qlen, config, splits, programs)
    assert out_split.dtype == q_dtype and out_split.shape == ref.shape
    assert_matches_reference(out_split, ref, q_dtype)
    assert_matches_reference(out_pers, ref, q_dtype)
    if len(seq_lens) > 1 and max(seq_lens) > 16:
        assert sched.num_partials > 0  # the reduce path ran


@pytest.mark.skipif(DEVICE == "cuda", reason="the GPU runs bf16 and the PTX itself (test_gpu_bf16_and_cuda_graph)")
@pytest.mark.parametrize("kv_dtype,config", [
    (torch.bfloat16, SMALL), (torch.bfloat16, MlaKernelConfig(block_n=16, tokens_as_m=True)),
    (FP8_DTYPE, MlaKernelConfig(block_n=16, f16_mma=True, convert_where_loaded=True)),
    (FP8_DTYPE, MlaKernelConfig(block_n=16, tokens_as_m=True, fp8_qk=True, f16_mma=True, convert_where_loaded=True))])
def test_bf16_and_the_ptx_conversion_in_the_interpreter(kv_dtype, config, monkeypatch):
    """bf16 queries (the product's dtype) on the CPU, the interpreter's bf16 dots taken as exact fp32 products (its
    own multiply the bf16 words as integers); with fp8 KV the NVIDIA conversion where loaded (convert_where_loaded),
    its PTX run by tests/ptx_emulator.py: both kernels match the reference, and the conversion gives the cast's
    bits."""
    q, kv, ref = _case([40, 23], 16, torch.bfloat16, kv_dtype, 8, 2, seed=18)
    with bf16_dots_in_fp32():
        outs = [_run_both(q, kv, 2, dataclasses.replace(config, convert_where_loaded=False), 3, 4)[:2]]
        if config.convert_where_loaded:
            monkeypatch.setattr("rocbench.kernels.mla_decode.nvidia_gpu", lambda device: True)
            with inline_asm_emulated():
                outs.append(_run_both(q, kv, 2, config, 3, 4)[:2])
    for out in outs[0]:
        assert_matches_reference(out, ref, torch.bfloat16)
    for plain, converted in zip(outs[0], outs[-1]):
        assert torch.equal(plain.view(torch.int16), converted.view(torch.int16))


def q_on_the_fp8_grid(tokens, nhead, dtype, g):
    """q whose rows are e4m3 values times 2^-8, each row's largest 448 x 2^-8: its fp8 scale is exactly 2^-8, so the
    cast to fp8 is exact whatever the rounding."""
    e = (torch.randn(tokens, nhead, 576, generator=g) * 100).clamp(-440, 440).to(FP8_DTYPE).float()
    e[..., 7] = 448.0
    return (e * 2.0 ** -8).to(dtype).to(DEVICE)


@pytest.mark.parametrize("config", [MlaKernelConfig(block_n=16, fp8_qk=True, fp8_q_one_part=True),
                                    MlaKernelConfig(block_n=16, tokens_as_m=True, fp8_qk=True, fp8_q_one_part=True)])
def test_q_in_one_fp8_part(config):
    """MlaKernelConfig.fp8_q_one_part (the triton_fp8q backend): q cast to fp8 once, one fp8 MMA for Q@K^T. On q already
    on the fp8 grid both forms are exact: this checks the one part's scales and masks. On random q it keeps the cast's
    error, which the two-part form takes back. Emulated exactly on the CPU (bf16 q, per-row e4m3 with correct rounding,
    the fp32 reference): cosine 0.9997, within the fp8-query tolerance; Triton's interpreter rounds to fp8 worse than a
    GPU, so the CPU checks the ordering and the GPU the tolerance."""
    g = _gen(11)
    kv = build_paged_kv([40, 23], 16, FP8_DTYPE, g, "cpu").to(DEVICE)
    exact = q_on_the_fp8_grid(2 * 2, 8, torch.float16, g)
    ref, _ = mla_decode_reference(exact, kv, SM_SCALE, 2)
    for out in _run_both(exact, kv, 2, config, 3, 4)[:2]:
        assert_matches_reference(out, ref, torch.float16)
    q = make_query(2 * 2, 8, torch.float16, g, DEVICE)
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 2)
    one = _run_both(q, kv, 2, config, 3, 4)[:2]
    two = _run_both(q, kv, 2, dataclasses.replace(config, fp8_q_one_part=False), 3, 4)[:2]
    for out_one, out_two in zip(one, two):
        assert _errors(out_one, ref)[0] > 4 * _errors(out_two, ref)[0]
        if DEVICE == "cuda":
            from rocbench.suites.mla.backends import FP8_QUERY_TOLERANCE as TOL

            assert ((out_one.float() - ref).abs() <= TOL.atol + TOL.rtol * ref.abs()).all()
            assert _errors(out_one, ref)[1] >= TOL.min_cosine


@pytest.mark.parametrize("tokens_as_m", [False, True])
def test_two_fp8_parts_in_one_product(tokens_as_m):
    """MlaKernelConfig.fp8_qk_one_product: the low part's Q@K^T accumulated onto the high part's product, rescaled by
    hi_scale / lo_scale per row, is the two-product sum to fp32 rounding, so it matches the reference as closely (the
    row form and the tokens on M; the tile code both kernels share, run here by the split-KV one)."""
    g = _gen(12)
    kv = build_paged_kv([40, 23], 16, FP8_DTYPE, g, "cpu").to(DEVICE)
    q = make_query(2 * 2, 8, torch.float16, g, DEVICE)
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 2)
    two = MlaKernelConfig(block_n=16, fp8_qk=True, tokens_as_m=tokens_as_m)
    out_one, out_two = (mla_decode_split_kv(q, kv, SM_SCALE, 2, 3, out=_poisoned_out(q), config=config)
                        for config in (dataclasses.replace(two, fp8_qk_one_product=True), two))
    assert_matches_reference(out_one, ref, torch.float16)
    assert (out_one.float() - out_two.float()).abs().max() <= 2 ** -10 * ref.abs().max()  # fp16 rounding apart


def test_f16_mma_rescales_rows_beyond_fp16_range():
    """fp16 MMAs for bf16 q: a row far past fp16's 65504 and an all-zero row still match the reference
    (each row is divided by its own power of two; without that the first overflows to inf)."""
    q, kv, _ = _case([40, 23], 16, torch.bfloat16, FP8_DTYPE, 8, 1, seed=5)
    q[0] *= 4e5
    q[1, 3] = 0
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 1)
    for out in _run_both(q, kv, 1, MlaKernelConfig(block_n=16, f16_mma=True), 3, 4)[:2]:
        assert_matches_reference(out, ref, torch.bfloat16)


# the --tune candidate of that name (tune_candidates)
TOKENS_AS_M = MlaKernelConfig(tokens_as_m=True, fp8_qk=True, f16_mma=True, num_stages=1, num_warps=4, programs_per_sm=2)


def test_tokens_as_m_is_a_tune_candidate_at_16_and_32_rows_only():
    name = "tokens_as_m,fp8qk,stages1,2/sm"
    assert tune_candidates(FP8_DTYPE, 16, 1, 64)[name] == TOKENS_AS_M
    assert name in tune_candidates(FP8_DTYPE, 32, 1, 64) and name in tune_candidates(FP8_DTYPE, 16, 2, 64)
    assert name not in tune_candidates(FP8_DTYPE, 64, 1, 64)  # the built-in 64-row tile
    assert name not in tune_candidates(torch.bfloat16, 16, 1, 64)
    fp8_16 = tune_candidates(FP8_DTYPE, 16, 1, 64)
    assert fp8_16["tokens_as_m,fp8qk,cvt,stages1,2/sm"] == dataclasses.replace(TOKENS_AS_M, convert_where_loaded=True)
    assert fp8_16["cvt"] == dataclasses.replace(fp8_16["builtin"], convert_where_loaded=True)
    assert "cvt" not in tune_candidates(FP8_DTYPE, 64, 1, 64) and "cvt" not in tune_candidates(torch.bfloat16, 16, 1, 64)
    bf16_32 = tune_candidates(torch.bfloat16, 32, 1, 64)["tokens_as_m,2/sm"]  # bf16's, with its own knobs
    assert bf16_32.tokens_as_m and not bf16_32.fp8_qk and bf16_32.num_stages == 2
    assert "tokens_as_m,2/sm" not in tune_candidates(torch.bfloat16, 64, 1, 64)


def test_gate_catches_perturbations():
    """The tolerance is tight enough to fail real bugs: the kernel's error is far below both an
    injected output perturbation and a one-page indexing bug, and both fail the gate."""
    q, kv, ref = _case([40, 33], 16, torch.float16, torch.float16, 4, 1, seed=11)
    out = mla_decode_persistent(
        q, kv, build_mla_schedule([40, 33], 1, 4, 4, 3, 16).to(DEVICE), SM_SCALE, 1, config=SMALL
    )
    err = assert_matches_reference(out, ref, torch.float16)

    bumped = out.clone()
    bumped[1, 2, 100] += 10 * ATOL[torch.float16]
    with pytest.raises(AssertionError):
        assert_matches_reference(bumped, ref, torch.float16)

    # Indexing bug: sequence 0's first page replaced by sequence 1's first page. (Swapping two
    # pages of one sequence would not do: attention is invariant to the order of its keys.)
    bad_kv = kv.to(DEVICE)
    bad_kv.kv_indices = kv.kv_indices.clone()
    bad_kv.kv_indices[0] = kv.kv_indices[int(kv.kv_indptr[1])]
    bad = mla_decode_split_kv(q, bad_kv, SM_SCALE, 1, 2, config=SMALL)
    bad_err, _ = _errors(bad, ref)
    assert bad_err > 10 * max(err, 1e-4)
    with pytest.raises(AssertionError):
        assert_matches_reference(bad, ref, torch.float16)


def test_runs_are_bitwise_deterministic():
    q, kv, _ = _case([70, 20, 45], 16, torch.float16, torch.float16, 4, 1, seed=12)
    sched = build_mla_schedule([70, 20, 45], 1, 4, 4, 5, 16).to(DEVICE)
    a = mla_decode_persistent(q, kv, sched, SM_SCALE, 1, config=SMALL)
    b = mla_decode_persistent(q, kv, sched, SM_SCALE, 1, config=SMALL)
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))
    c = mla_decode_split_kv(q, kv, SM_SCALE, 1, 3, config=SMALL)
    d = mla_decode_split_kv(q, kv, SM_SCALE, 1, 3, config=SMALL)
    assert torch.equal(c.view(torch.int16), d.view(torch.int16))


def test_preallocated_workspace_and_checks():
    q, kv, ref = _case([33, 18], 16, torch.float32, torch.float32, 4, 1, seed=13)
    ws = alloc_split_kv_workspace(q, 3, 1, config=SMALL)
    out = mla_decode_split_kv(q, kv, SM_SCALE, 1, 3, workspace=ws, config=SMALL)
    assert_matches_reference(out, ref, torch.float32)
    with pytest.raises(ValueError):  # too few slots for 4 splits
        mla_decode_split_kv(q, kv, SM_SCALE, 1, 4, workspace=ws, config=SMALL)
    sched = build_mla_schedule([33, 18], 1, 4, 4, 4, 16).to(DEVICE)
    out = mla_decode_persistent(q, kv, sched, SM_SCALE, 1, workspace=alloc_persistent_workspace(sched, DEVICE), config=SMALL)
    assert_matches_reference(out, ref, torch.float32)
    with pytest.raises(ValueError):  # schedule built for another qlen
        mla_decode_persistent(q, kv, build_mla_schedule([33, 18], 2, 4, 4, 4, 16), SM_SCALE, 1, config=SMALL)


def test_pick_num_kv_splits():
    assert pick_num_kv_splits(64, 1, 4096, 132) == 5  # ~2 programs per SM
    assert pick_num_kv_splits(1, 1, 4096, 132) == 64  # capped by 64 tokens per split
    assert pick_num_kv_splits(1, 1, 2048, 132) == 32
    assert pick_num_kv_splits(512, 1, 4096, 132) == 1
    assert pick_num_kv_splits(1, 1, 60, 132) == 1
    assert 1 <= pick_num_kv_splits(1, 1, 10**6, 132) <= 64


def test_default_config_by_tile_size():
    assert default_config(torch.bfloat16, 16, 1).programs_per_sm == 2
    assert kernel_heads_per_group(128, 1, default_config(torch.bfloat16, 128, 1)) == 64
    assert kernel_heads_per_group(32, 1, default_config(torch.bfloat16, 32, 1)) == 32
    small, mid = default_config(FP8_DTYPE, 16, 1), default_config(FP8_DTYPE, 32, 1)
    assert small.reload_v and small.programs_per_sm == 2 and small.block_n == 32  # 16 rows
    # 32 rows: the block's tokens on the MMAs' M side, converted where loaded in the persistent kernel only; MTP too
    assert mid.tokens_as_m and mid.fp8_qk and mid.convert_where_loaded and mid.programs_per_sm == 2
    assert default_config(FP8_DTYPE, 16, 2) == mid and not default_config(FP8_DTYPE, 32, 1, batch=4).tokens_as_m
    # the split-KV kernel lost with 32-token blocks and with the tokens on M (skewed batches): it keeps 64-token blocks
    # (16 rows: 4 warps, 32 rows: 3 stages)
    split_small, split_mid = (default_config(FP8_DTYPE, h, 1, persistent=False) for h in (16, 32))
    assert split_small.block_n == split_mid.block_n == 64 and split_small.programs_per_sm == 2 and split_mid.num_stages == 3
    assert not split_mid.tokens_as_m
    assert default_config(FP8_DTYPE, 64, 1, persistent=False) == default_config(FP8_DTYPE, 64, 1)
    assert small.f16_mma and mid.f16_mma  # fp8 KV: the converted MMAs in fp16
    wide = default_config(FP8_DTYPE, 64, 1)  # 64-row tiles: Q@K^T as fp8 MMAs
    assert wide.fp8_qk and wide.f16_mma and kernel_heads_per_group(64, 1, wide) == 64
    assert not default_config(torch.bfloat16, 64, 1).fp8_qk
    # fp8 16-row tiles at small batches: the prefetch config; batch-invariant callers ask without a batch
    assert default_config(FP8_DTYPE, 16, 1, batch=1).prefetch and default_config(FP8_DTYPE, 16, 1, batch=8).prefetch
    assert default_config(FP8_DTYPE, 16, 1, batch=16) == small == builtin_config(FP8_DTYPE, 16, 1)
    bf16_32 = {batch: default_config(torch.bfloat16, 32, 1, batch=batch) for batch in (2, 8, None)}
    assert bf16_32[2].num_warps == 8 and bf16_32[8].programs_per_sm == bf16_32[None].programs_per_sm == 2
    assert default_config(FP8_DTYPE, 64, 1, batch=16) == wide and default_config(torch.bfloat16, 16, 1, batch=1).programs_per_sm == 2


def test_reduce_shape_from_the_config_but_never_for_invariant_runs():
    config = MlaKernelConfig(reduce_cols=64, reduce_chunk=64)
    assert reduce_shape(16, False, config) == ReduceShape(cols=64, chunk=64)
    assert reduce_shape(16, True, config) == reduce_shape(16, True) == WIDE_REDUCE  # triton_det's sum order
    assert reduce_shape(4096, False, MlaKernelConfig(reduce_chunk=64)) == ReduceShape(cols=NARROW_REDUCE.cols, chunk=64)
    # the built-in chunk shrinks to the most partials a merge takes (a power of two, at least 2), never past the
    # shape's; a config's chunk and an invariant run's stay as they are
    assert reduce_shape(4096, False, most_partials=4) == ReduceShape(cols=NARROW_REDUCE.cols, chunk=4)
    assert [reduce_shape(4096, False, most_partials=n).chunk for n in (1, 2, 3, 5, 16, 17, 64)] == [2, 2, 4, 8, 16,
                                                                                                   16, 16]
    assert reduce_shape(16, False, most_partials=3) == ReduceShape(cols=WIDE_REDUCE.cols, chunk=4)
    assert reduce_shape(16, False, config, most_partials=3) == ReduceShape(cols=64, chunk=64)
    assert reduce_shape(16, True, most_partials=2) == WIDE_REDUCE
    for bad in (MlaKernelConfig(reduce_cols=96), MlaKernelConfig(reduce_chunk=48), MlaKernelConfig(reduce_cols=1024)):
        with pytest.raises(ValueError, match="powers of two"):
            reduce_shape(16, False, bad)
    # up to 64 rows to merge the 64 x 64 shape is built in; --tune can still ask for reduce_shape's choice
    assert (builtin_config(torch.bfloat16, 16, 1, 4).reduce_chunk == builtin_config(FP8_DTYPE, 64, 1, 1).reduce_chunk
            == 64)
    assert not builtin_config(torch.bfloat16, 64, 1, 4).reduce_chunk and not builtin_config(FP8_DTYPE, 16, 1).reduce_chunk
    assert "reduce_by_rows" in tune_candidates(torch.bfloat16, 16, 1, 1)
    assert not {"reduce64x128", "reduce_by_rows"} & set(tune_candidates(torch.bfloat16, 16, 1, 64))


def test_tiny_batch_configs():
    """Batch 1-4 with one query row per head: 16-row tiles at 32-64 heads (bf16; fp8 at 32 heads and batch 1),
    the 32-row fp8 config instead of fp8_qk's 64-row tile at 64 heads (and at 128 in the persistent kernel),
    the dependent reduce at 16 heads, batch 1, one program per SM in the persistent kernel at 32 heads, bf16, batch 1."""
    def rows(kv_dtype, nhead, batch, qlen=1):
        return kernel_heads_per_group(nhead, qlen, builtin_config(kv_dtype, nhead, qlen, batch)) * qlen
    assert [rows(torch.bfloat16, h, 1) for h in (16, 32, 64, 128)] == [16, 16, 16, 64]
    assert [rows(torch.bfloat16, h, 4) for h in (32, 64)] == [16, 16] and rows(torch.bfloat16, 64, 8) == 64
    assert [rows(FP8_DTYPE, h, 1) for h in (32, 64, 128)] == [16, 32, 32] and rows(FP8_DTYPE, 32, 4) == 32
    assert not builtin_config(FP8_DTYPE, 64, 1, 4).fp8_qk and builtin_config(FP8_DTYPE, 64, 1, 8).fp8_qk
    # at 128 heads only the persistent kernel gained from 32 rows; split-KV lost with them
    assert builtin_config(FP8_DTYPE, 128, 1, 1, persistent=False).fp8_qk
    assert builtin_config(FP8_DTYPE, 32, 1, 1).f16_mma and not builtin_config(torch.bfloat16, 32, 1, 1).f16_mma
    assert builtin_config(torch.bfloat16, 16, 1, 1).dependent_reduce and builtin_config(FP8_DTYPE, 16, 1, 1).dependent_reduce
    assert not any(builtin_config(kv, 16, 1, b).dependent_reduce for kv in (torch.bfloat16, FP8_DTYPE) for b in (2, None))
    assert rows(torch.bfloat16, 16, 1, qlen=2) == 32 and not builtin_config(torch.bfloat16, 16, 2, 1).dependent_reduce
    assert builtin_config(torch.bfloat16, 64, 1) == builtin_config(torch.bfloat16, 64, 1, 16)  # triton_det: batch-free
    # one program per SM: the persistent kernel at batch 1, bf16, 32 heads only (H200 -14%; elsewhere a candidate)
    per_sm = {(h, b, p): builtin_config(torch.bfloat16, h, 1, b, persistent=p).programs_per_sm
              for h in (16, 32, 64) for b in (1, 2) for p in (True, False)}
    assert [key for key, n in per_sm.items() if n == 1] == [(32, 1, True)]
    assert builtin_config(torch.bfloat16, 32, 1, 1) == dataclasses.replace(builtin_config(torch.bfloat16, 32, 1, 2),
                                                                           programs_per_sm=1)
    assert tune_candidates(torch.bfloat16, 32, 1, 1)["rows16,2/sm"].programs_per_sm == 2  # the config it replaced
    assert tune_candidates(torch.bfloat16, 64, 1, 1)["1/sm"].programs_per_sm == 1
    assert "1/sm" not in tune_candidates(torch.bfloat16, 64, 1, 1, persistent=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 and CUDA graphs need a GPU")
@pytest.mark.parametrize("kv_dtype,nhead,change", [
    (torch.bfloat16, 16, {}), (FP8_DTYPE, 16, {}), (torch.bfloat16, 64, {}), (FP8_DTYPE, 64, {}),
    # the reduce as a programmatic dependent (Hopper), inside a CUDA graph too
    (torch.bfloat16, 16, dict(dependent_reduce=True)), (FP8_DTYPE, 64, dict(dependent_reduce=True)),
    # the block's tokens as the MMAs' M side, at the size that takes Hopper's wgmma (64-token blocks, 4 warps)
    (FP8_DTYPE, 16, dataclasses.asdict(TOKENS_AS_M)), (FP8_DTYPE, 32, dataclasses.asdict(TOKENS_AS_M)),
    (torch.bfloat16, 16, dict(tokens_as_m=True, num_warps=4, block_n=64, reload_v=False))])
def test_gpu_bf16_and_cuda_graph(kv_dtype, nhead, change):
    """The default configs compiled (and variants): at nhead 64 the 64-row tile, with fp8 KV its fp8 Q@K^T MMAs."""
    lens = make_seq_lens(8, 700, "skewed", _gen(14))
    q, kv, ref = _case(lens, 64, torch.bfloat16, kv_dtype, nhead, 1, seed=15)
    config = dataclasses.replace(default_config(kv_dtype, nhead, 1), **change)
    hpg = kernel_heads_per_group(nhead, 1, config)
    sched = build_mla_schedule(lens, 1, nhead, hpg, torch.cuda.get_device_properties(0).multi_processor_count).to("cuda")
    ws_p = alloc_persistent_workspace(sched, "cuda")
    ws_s = alloc_split_kv_workspace(q, 4, 1, config=config)
    out_p = torch.empty(q.shape[0], nhead, 512, dtype=q.dtype, device="cuda")
    out_s = torch.empty_like(out_p)
    def run():
        return (mla_decode_persistent(q, kv, sched, SM_SCALE, 1, out=out_p, workspace=ws_p, config=config),
                mla_decode_split_kv(q, kv, SM_SCALE, 1, 4, out=out_s, workspace=ws_s, config=config))

    run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    out_p.fill_(float("nan"))
    out_s.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert_matches_reference(out_p, ref, torch.bfloat16)
    assert_matches_reference(out_s, ref, torch.bfloat16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the PTX conversion runs on NVIDIA GPUs only")
@pytest.mark.parametrize("nhead,config,same_bits", [(16, TOKENS_AS_M, True), (32, TOKENS_AS_M, True),
                                                    (32, default_config(FP8_DTYPE, 32, 1), True),
                                                    (16, default_config(FP8_DTYPE, 16, 1), False)])
def test_gpu_convert_where_loaded_is_exact(nhead, config, same_bits):
    """fp8 -> fp16 by the impure PTX conversion (convert_where_loaded) is exact, as the cast is: both match the
    reference, and with the tokens on M (wgmma; the same MMAs either way) both kernels give the same bits. The row
    form's 16-row tile reaches mma.sync through shared memory and ldmatrix instead of byte permutes, another
    instruction sequence: on the H200 (2026-12-05) its bits differed, both within the tolerance."""
    lens = make_seq_lens(6, 900, "skewed", _gen(16))
    q, kv, ref = _case(lens, 64, torch.bfloat16, FP8_DTYPE, nhead, 1, seed=17)
    hpg = kernel_heads_per_group(nhead, 1, config)
    sched = build_mla_schedule(lens, 1, nhead, hpg, torch.cuda.get_device_properties(0).multi_processor_count).to("cuda")
    outs = []
    for cvt in (False, True):
        c = dataclasses.replace(config, convert_where_loaded=cvt)
        outs.append((mla_decode_persistent(q, kv, sched, SM_SCALE, 1, config=c),
                     mla_decode_split_kv(q, kv, SM_SCALE, 1, 4, config=c)))
    for plain, converted in zip(*outs):
        assert_matches_reference(plain, ref, torch.bfloat16)
        assert_matches_reference(converted, ref, torch.bfloat16)
        assert torch.equal(plain.view(torch.int16), converted.view(torch.int16)) or not same_bits


def test_even_pieces_schedule_matches_the_reference():
    """An even-pieces deal (mla_schedule._even_pieces): 2 sequences of 8 granules on 5 programs, where the quota deal
    gives one program the end of one and the start of the other; in halves each program holds one piece (its
    partial), and the output matches the reference. The config's knob reaches the schedule: at 32-head tiles, batch
    64 x 4096 on 132 programs, 128 halves instead of the quota deal's 192 items."""
    from rocbench.kernels.mla_config import gluon_ws_config
    from rocbench.kernels.mla_decode import build_persistent_schedule

    lens = [512, 512]
    q, kv, ref = _case(lens, 16, torch.float16, torch.float16, 4, 1, seed=11)
    hpg = kernel_heads_per_group(4, 1, SMALL)
    quota, even = (build_mla_schedule(lens, 1, 4, hpg, 5, 64, partial_cost=2.0, even_pieces=e) for e in (False, True))
    assert (len(quota.work_info), len(even.work_info), even.num_partials) == (6, 4, 4)
    out = mla_decode_persistent(q, kv, even.to(DEVICE), SM_SCALE, 1, out=_poisoned_out(q), config=SMALL)
    assert_matches_reference(out, ref, torch.float16)
    gluon = gluon_ws_config(torch.bfloat16, 32, 1)
    items = {e: len(build_persistent_schedule([4096] * 64, 1, 32, 132, dataclasses.replace(gluon, even_pieces=e))
                    .work_info) for e in (False, True)}
    assert items == {False: 192, True: 128}


def test_build_persistent_schedule_follows_config():
    from rocbench.kernels.mla_decode import build_persistent_schedule

    cfg = MlaKernelConfig(block_n=32, programs_per_sm=2, min_granules_per_program=2, max_tile_rows=16)
    s = build_persistent_schedule([300, 70], 1, 32, 5, cfg)
    assert (s.num_programs, s.heads_per_group, s.kv_granularity) == (10, 16, 64)
    assert s.num_active_programs == 6  # 2 groups x min(5, 7 granules // 2)


def test_whole_units_write_the_output_directly_and_match_the_reference():
    """config.whole_units: 4 sequences of 2 granules on 5 programs, where the quota deal cuts the last one in two;
    dealt whole, nothing is split, so no partial and no reduce runs, and the output matches the reference."""
    from rocbench.kernels.mla_decode import build_persistent_schedule

    q, kv, ref = _case([128] * 4, 16, torch.float16, torch.float16, 4, 1, seed=7)
    cut, whole = (build_persistent_schedule([128] * 4, 1, 4, 5, dataclasses.replace(SMALL, whole_units=w))
                  for w in (False, True))
    assert cut.num_reduce == 1 and (whole.num_partials, whole.num_reduce) == (0, 0)
    out = mla_decode_persistent(q, kv, whole.to(DEVICE), SM_SCALE, 1, out=_poisoned_out(q),
                                config=dataclasses.replace(SMALL, whole_units=True))
    assert_matches_reference(out, ref, torch.float16)
