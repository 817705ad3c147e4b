"""The Gluon MLA tile (rocbench.kernels.mla_gluon, MlaKernelConfig.gluon_ws): where it runs and where the Triton tile
takes its place (everywhere), q's fp8 split (everywhere Triton runs), and the tile itself on a Hopper GPU with Triton
3.6 against the reference, through mla_decode_persistent, where the benchmark's rows do not reach (a sequence's partial
last block read from before its page, pages of 128 tokens, split units merged by the reduce)."""
import dataclasses
import itertools
import textwrap

import pytest
import torch
import triton

from rocbench.formats.paged_kv import build_paged_kv, make_query
from rocbench.kernels import mla_config, mla_decode, mla_gluon_scope
from rocbench.suites.mla.reference import mla_decode_reference
from tests.helpers import needs_interpreter
from tests.test_mla_kernels import SM_SCALE, assert_matches_reference, q_on_the_fp8_grid

BF16 = torch.bfloat16
FP8 = torch.float8_e4m3fn

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NVIDIA = torch.cuda.is_available() and torch.version.hip is None  # ROCm's gfx942 reports capability 9.4 too
GLUON_HERE = NVIDIA and torch.cuda.get_device_capability() == (9, 0) and \
    triton.__version__.startswith(mla_gluon_scope.GLUON_TRITON + ".")
E4M3FN = DEVICE == "cpu" or NVIDIA and torch.cuda.get_device_capability() >= (8, 9)  # Triton's e4m3fn type


def _case(lens, page_size, kv_dtype, nhead, seed, device=DEVICE, qlen=1):
    g = torch.Generator().manual_seed(seed)
    kv = build_paged_kv(lens, page_size, kv_dtype, g, "cpu").to(device)
    return make_query(len(lens) * qlen, nhead, torch.bfloat16, g, device), kv


def test_gluon_tile_scope_and_the_triton_tile_everywhere_else():
    """gluon_ws_config's tiles; the knob a --tune candidate of the persistent kernel at one query token; the Triton tile
    next in the fallback chain; the scope's reason on CPU tensors, and mla_decode_persistent refusing them."""
    assert mla_config.gluon_ws_config(BF16, 16, 1).max_tile_rows == 32
    assert not mla_config.gluon_ws_config(BF16, 16, 1).gluon_split_s  # the tokens-on-M tile has no S split
    assert mla_config.gluon_ws_config(BF16, 128, 1).max_tile_rows == 64
    assert mla_config.gluon_ws_config(BF16, 16, 2) is None and mla_config.gluon_ws_config(BF16, 8, 1) is None
    assert mla_config.gluon_tile_name(mla_config.gluon_ws_config(BF16, 16, 1), BF16) == "Gluon tile (232 registers)"
    assert mla_config.gluon_tile_name(mla_config.gluon_ws_config(torch.float8_e4m3fn, 128, 1), FP8) == \
        "Gluon tile (S split, fp8 q in one chain, q descriptors per block, 240 registers)"
    deeper = dataclasses.replace(mla_config.gluon_ws_config(BF16, 16, 1), gluon_stages=3)
    assert mla_config.gluon_tile_name(deeper, BF16) == "Gluon tile (3-stage KV ring, 232 registers)"
    split_k = dataclasses.replace(mla_config.gluon_ws_config(BF16, 32, 1), gluon_split_k=True)
    assert mla_config.gluon_tile_name(split_k, BF16) == "Gluon tile (S^T split by K, 232 registers)"
    for nhead in (16, 32):  # the 16-32 row tile: S^T split by K is a candidate; 64 rows split S by tokens instead
        assert mla_config.tune_candidates(BF16, nhead, 1, 64)["gluon_ws,split_k"] == split_k
    assert "gluon_ws,split_k" not in mla_config.tune_candidates(BF16, 64, 1, 64)
    for nhead in (16, 32):  # fp8 splits it at 16-32 heads in swizzled rows; whole and plain rows are the others
        fp8 = mla_config.gluon_ws_config(torch.float8_e4m3fn, nhead, 1)
        assert fp8.gluon_split_k and fp8.gluon_swizzled_parts
        candidates = mla_config.tune_candidates(torch.float8_e4m3fn, nhead, 1, 64)
        assert candidates["gluon_ws,whole_k"] == dataclasses.replace(fp8, gluon_split_k=False)
        assert candidates["gluon_ws,plain_parts"] == dataclasses.replace(fp8, gluon_swizzled_parts=False)
    assert mla_config.gluon_tile_name(mla_config.gluon_ws_config(torch.float8_e4m3fn, 16, 1), FP8) == \
        "Gluon tile (fp8 q in one chain, S^T split by K, swizzled partial S^T, 232 registers)"
    plain = dataclasses.replace(mla_config.gluon_ws_config(torch.float8_e4m3fn, 16, 1), gluon_swizzled_parts=False)
    assert mla_config.gluon_tile_name(plain, FP8) == "Gluon tile (fp8 q in one chain, S^T split by K, 232 registers)"
    unsplit = dataclasses.replace(plain, gluon_split_k=False, gluon_swizzled_parts=True)
    assert mla_config.gluon_tile_name(unsplit, FP8) == \
        "Gluon tile (fp8 q in one chain, 232 registers)"  # no split, no partials to swizzle
    assert mla_config.tune_candidates(BF16, 32, 1, 64)["gluon_ws,split_k"] == split_k  # unswizzled where not fp8
    assert not {"gluon_ws,swizzled_parts", "gluon_ws,plain_parts"} & set(mla_config.tune_candidates(BF16, 16, 1, 64))
    fp8_128 = mla_config.gluon_ws_config(torch.float8_e4m3fn, 128, 1)  # fp8 64-row tiles: V converted under Q@K^T
    under = mla_config.tune_candidates(torch.float8_e4m3fn, 128, 1, 64)["gluon_ws,convert_under_qk"]
    assert under == dataclasses.replace(fp8_128, gluon_convert_under_qk=True) != fp8_128
    assert mla_config.gluon_tile_name(under, FP8) == \
        "Gluon tile (S split, fp8 q in one chain, q descriptors per block, V converted under Q@K^T, 240 registers)"
    assert "gluon_ws,convert_under_qk" not in mla_config.tune_candidates(BF16, 128, 1, 64)  # bf16 converts nothing
    bf16_under = dataclasses.replace(mla_config.gluon_ws_config(BF16, 128, 1), gluon_convert_under_qk=True)
    assert mla_config.gluon_tile_name(bf16_under, BF16) == "Gluon tile (S split, 232 registers)"  # as attend runs it
    for kv_dtype in (torch.bfloat16, torch.float8_e4m3fn):
        candidates = mla_config.tune_candidates(kv_dtype, 64, 1, 64)
        built_in = candidates["gluon_ws"]
        assert built_in == mla_config.gluon_ws_config(kv_dtype, 64, 1) and built_in.gluon_split_s
        assert built_in.gluon_one_chain == (kv_dtype != torch.bfloat16)  # fp8 only: bf16 q is one part
        other_regs = 232 if kv_dtype != torch.bfloat16 else 240  # fp8 from 32 heads takes 240
        assert candidates[f"gluon_ws,regs{other_regs}"].gluon_regs == other_regs != built_in.gluon_regs
        assert not candidates["gluon_ws,whole_s"].gluon_split_s
        remat = "gluon_ws,hoisted_q" if kv_dtype != torch.bfloat16 else "gluon_ws,remat_q"  # fp8 from 32 heads
        assert candidates[remat].gluon_remat_q != built_in.gluon_remat_q == (kv_dtype != torch.bfloat16)
        assert ("gluon_ws,two_chains" in candidates) == (kv_dtype != torch.bfloat16)
        assert "gluon_ws" not in mla_config.tune_candidates(kv_dtype, 64, 1, 64, persistent=False)
    assert "gluon_ws" not in mla_config.tune_candidates(torch.bfloat16, 16, 2, 64)
    chain = mla_config.smaller_configs(mla_config.gluon_ws_config(BF16, 64, 1))
    assert chain[0].gluon_ws and chain[1] == dataclasses.replace(chain[0], gluon_ws=False)
    assert not any(c.gluon_ws for c in chain[1:])
    q, kv = _case([100], 64, torch.bfloat16, 64, 0, "cpu")
    schedule = mla_decode.build_persistent_schedule([100], 1, 64, 4, mla_config.gluon_ws_config(BF16, 64, 1))
    assert mla_gluon_scope.unsupported_reason(q, kv, 1, schedule) == "NVIDIA GPUs only"
    with pytest.raises(ValueError, match="the Gluon tile cannot take this call: NVIDIA GPUs only"):
        mla_decode.mla_decode_persistent(q, kv, schedule, SM_SCALE, 1, config=mla_config.gluon_ws_config(BF16, 64, 1))


@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float8_e4m3fn])
def test_triton_takes_the_gluon_tile_built_in_on_hopper_from_its_kv_size(kv_dtype, monkeypatch):
    """`triton`'s built-in config (suites.mla.backends.platform_builtin): the Gluon tile on sm_90 with Triton 3.6 for
    the persistent kernel from GLUON_MIN_KV_TOKENS of KV (batch x qlen x ctx; MTP at 64-head tiles); the Triton tile's
    winners below that, for split-KV, MTP at 16-32 heads, 64-token pages' multiples missing, fp16 q, other GPUs and
    other Tritons. `--tune` then tries the Triton tile as `triton_tile`."""
    from rocbench.core.platform import PlatformInfo
    from rocbench.suites.mla.backends import platform_builtin

    monkeypatch.setattr(triton, "__version__", mla_gluon_scope.GLUON_TRITON + ".0")
    hopper = PlatformInfo("cuda", 1, ["H100"], 132, None, arch="sm_90")
    least = mla_config.gluon_min_kv_tokens(kv_dtype, 128)
    big = least // 1024
    case = {"q_dtype": torch.bfloat16, "kv_dtype": kv_dtype, "nhead": 128, "qlen": 1, "persist": True, "batch": big,
            "ctx": 1024, "page_size": 64}
    gluon, triton_tile = mla_config.gluon_ws_config(kv_dtype, 128, 1), mla_config.builtin_config(kv_dtype, 128, 1, big)
    assert platform_builtin(case, hopper) == gluon and gluon.gluon_ws and not triton_tile.gluon_ws
    assert platform_builtin({**case, "batch": big // 4, "ctx": 4096}, hopper) == gluon  # the KV, not the batch
    # MTP: the KV per query token (batch x qlen x ctx), at 64-head tiles only
    mtp = {**case, "qlen": 2, "batch": big // 2}
    assert platform_builtin(mtp, hopper) == mla_config.gluon_ws_config(kv_dtype, 128, 2)
    for change in ({"batch": big - 1}, {"ctx": 1000}, {"persist": False}, {"qlen": 2, "batch": big // 2 - 1},
                   {"qlen": 2, "nhead": 32}, {"page_size": 32}, {"q_dtype": torch.float16}):
        other = {**case, **change}
        assert platform_builtin(other, hopper) == mla_config.builtin_config(
            kv_dtype, other["nhead"], other["qlen"], other["batch"], persistent=other["persist"]), change
    for platform in (PlatformInfo("cuda", 1, ["B200"], 148, None, arch="sm_100"),
                     PlatformInfo("rocm", 1, ["MI300X"], 304, None, arch="gfx942"),
                     PlatformInfo("cpu", 0, [], None, None)):
        assert platform_builtin(case, platform) == triton_tile, platform.arch
    candidates = mla_config.tune_candidates(kv_dtype, 128, 1, big, builtin=gluon)
    assert candidates["builtin"] == gluon and candidates["triton_tile"] == triton_tile and "gluon_ws" not in candidates
    assert candidates["quota_cuts"] == dataclasses.replace(gluon, whole_units=False)  # the schedule's knobs
    assert candidates["no_even_pieces"] == dataclasses.replace(gluon, even_pieces=False)
    assert not any(config.gluon_ws for name, config in candidates.items()
                   if name not in ("builtin", "quota_cuts", "no_even_pieces") and not name.startswith("gluon_ws,"))
    monkeypatch.setattr(triton, "__version__", "3.9.0")
    assert platform_builtin(case, hopper) == triton_tile


def test_fp8_takes_the_gluon_tile_from_less_kv_the_more_heads():
    """GLUON_MIN_KV_TOKENS by head count: fp8 from 64K tokens at 16 heads, 32K at 32-64, 16K from 128; bf16 16K."""
    fp8 = torch.float8_e4m3fn
    least = [mla_config.gluon_min_kv_tokens(fp8, nhead) // 1024 for nhead in (16, 32, 64, 128, 256)]
    assert least == [64, 32, 32, 16, 16]
    assert {mla_config.gluon_min_kv_tokens(BF16, nhead) for nhead in (16, 32, 64, 128)} == {16 * 1024}
    assert mla_config.gluon_builtin(fp8, 64, 1, 32 * 1024, persistent=True) == mla_config.gluon_ws_config(fp8, 64, 1)
    assert mla_config.gluon_builtin(fp8, 16, 1, 32 * 1024, persistent=True) is None


def test_mtp_takes_the_gluon_tile_token_by_token_at_64_head_tiles(monkeypatch):
    """MTP (more than one query token) through the Gluon tile: only with 64-head tiles (at 16-32 heads the Triton
    tile holds all query rows and reads the KV once); its schedule takes the query tokens one by one
    (mla_decode.one_token_lens: token j of L sees L - qlen + j + 1, the reference's causal limits, checked here on the
    reference itself over the sequences' own pages); the scope refuses a schedule of the qlen form."""
    assert mla_config.gluon_ws_config(BF16, 16, 2) is None and mla_config.gluon_ws_config(BF16, 32, 2) is None
    config = mla_config.gluon_ws_config(BF16, 128, 2)
    assert config.gluon_ws and mla_config.kernel_heads_per_group(128, 2, config) == 64
    assert mla_config.gluon_builtin(torch.bfloat16, 128, 2, 10**7, persistent=True) == config  # built in (timed)
    assert mla_config.gluon_builtin(torch.bfloat16, 32, 2, 10**7, persistent=True) is None
    assert mla_decode.one_token_lens([5, 9], 3) == [3, 4, 5, 7, 8, 9]
    lens, qlen = [100, 7, 64], 2
    q, kv = _case(lens, 16, torch.float32, 64, 4, "cpu", qlen=qlen)
    q = q.float()
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, qlen)
    pages = [kv.kv_indices[kv.kv_indptr[b]:kv.kv_indptr[b + 1]].tolist() for b in range(len(lens))]
    one_by_one = mla_decode.one_token_lens(lens, qlen)
    as_sequences = build_paged_kv(one_by_one, 16, torch.float32, torch.Generator().manual_seed(0), "cpu")
    flat = [page for b in range(len(lens)) for _ in range(qlen) for page in pages[b]]
    as_sequences = dataclasses.replace(  # each query token's own sequence over the pages of its sequence
        as_sequences, kv_buffer=kv.kv_buffer, kv_indices=torch.tensor(flat, dtype=torch.int32),
        kv_indptr=torch.tensor([0] + list(itertools.accumulate(len(pages[b]) for b in range(len(lens))
                                                                for _ in range(qlen))), dtype=torch.int32))
    one, _ = mla_decode_reference(q, as_sequences, SM_SCALE, 1)
    torch.testing.assert_close(one, ref, rtol=1e-5, atol=1e-6)  # fp32, the same sums in another order
    schedule = mla_decode.build_persistent_schedule(lens, qlen, 64, 4, config)
    assert (schedule.qlen, schedule.batch, schedule.heads_per_group) == (1, len(lens) * qlen, 64)
    triton_tile = mla_decode.build_persistent_schedule(lens, qlen, 64, 4, dataclasses.replace(config, gluon_ws=False))
    assert (triton_tile.qlen, triton_tile.batch, triton_tile.heads_per_group) == (qlen, len(lens), 32)
    monkeypatch.setattr(triton, "__version__", mla_gluon_scope.GLUON_TRITON + ".0")
    assert mla_gluon_scope.case_reason("cuda", "sm_90", torch.bfloat16, torch.bfloat16, 2, 64, 64) is None
    assert "one query token" in mla_gluon_scope.case_reason("cuda", "sm_90", torch.bfloat16, torch.bfloat16, 2, 32, 64)
    with pytest.raises(ValueError, match="the Gluon tile's: qlen 1 over batch x qlen"):
        mla_decode.mla_decode_persistent(q, kv, triton_tile, SM_SCALE, qlen, config=config)


@needs_interpreter()
def test_gluon_ws_where_it_cannot_run_is_the_triton_tile_and_says_so():
    """The `triton` backend with gluon_ws on a platform outside the Gluon tile's scope (here: CPU tensors) runs the
    Triton tile, matches the reference, and its path says which tile ran and why."""
    import types

    from rocbench.core.platform import PlatformInfo
    from rocbench.formats.paged_kv import KV_LORA_RANK
    from rocbench.suites.mla.backends import TritonMla

    q, kv = _case([70, 33], 64, torch.float16, 16, 1, "cpu")
    q = q.to(torch.float16)
    io = types.SimpleNamespace(q=q, kv=kv, out=torch.empty(2, 16, KV_LORA_RANK, dtype=q.dtype))
    case = {"q_dtype": q.dtype, "kv_dtype": kv.kv_buffer.dtype, "nhead": 16, "qlen": 1, "persist": True, "batch": 2}
    ctx = types.SimpleNamespace(device=torch.device("cpu"), platform=PlatformInfo("cpu", 0, [], sm_count=4,
                                                                                     l2_bytes=None))
    prepared = TritonMla.prepare_with(case, io, ctx, dataclasses.replace(mla_config.gluon_ws_config(BF16, 16, 1),
                                                                         block_n=16), "test")
    assert "Triton tile (not the Gluon tile: NVIDIA GPUs only)" in prepared.description
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 1)
    assert_matches_reference(prepared.run(), ref, torch.float16)


# The Gluon tile's configs to compile for sm_90, in three tests that xdist can spread over its workers (about 30 s
# each on one core): the built-in ones, then each knob once against its default (`--tune` candidates, the A/B
# plugin's variants)
# (KV dtype's name in torch, nhead, qlen, MlaKernelConfig fields over gluon_ws_config's)
_PLAIN = dict(gluon_one_chain=False, gluon_split_s=False, gluon_regs=240)
_SM90_CONFIGS = {
    "builtin": [("bfloat16", 128, 1, {}), ("float8_e4m3fn", 16, 1, {}), ("bfloat16", 64, 2, {}),
                ("float8_e4m3fn", 64, 1, {}), ("bfloat16", 32, 1, {}), ("float8_e4m3fn", 32, 1, {})],
    "knobs_64_rows": [("float8_e4m3fn", 64, 1, _PLAIN), ("bfloat16", 128, 1, _PLAIN),
                      ("float8_e4m3fn", 64, 1, dict(gluon_remat_q=False)),
                      ("float8_e4m3fn", 64, 1, dict(fp8_qk=True, fp8_q_one_part=True)),
                      ("float8_e4m3fn", 64, 1, dict(fp8_qk=True, fp8_q_one_part=True, gluon_stages=3)),
                      ("float8_e4m3fn", 128, 1, dict(gluon_convert_under_qk=True))],
    "knobs_32_rows": [("float8_e4m3fn", 32, 1, dict(gluon_split_k=False)),
                      ("bfloat16", 32, 1, dict(gluon_split_k=True)),
                      ("float8_e4m3fn", 32, 1, dict(gluon_swizzled_parts=False))],
}


@pytest.mark.parametrize("configs", sorted(_SM90_CONFIGS))
def test_gluon_tile_compiles_for_sm90_offline(configs):
    """The Gluon tile through mla_decode_persistent, compiled for sm_90 by this Triton (tests/compile_only.py, nothing
    run; the scope check, which wants a Hopper, stubbed): bf16 with 64-row tiles, fp8 and bf16 with the tokens on M, q's
    split, MTP (two query tokens) at 64 heads, the built-in knobs (fp8's one chain, S split at 64 rows) and the tile
    without them (S whole in each consumer, fp8's two chains, 240 registers), q's descriptors per block, and q in one
    fp8 part (triton_fp8q), and each later knob once against its default (S^T whole, plain partials, V converted under
    Q@K^T, 3 stages). Catches a change this Triton cannot compile; the GPU runs used Triton 3.6, which the scope
    requires. Every config launches the tile once, and fp8's q split before it."""
    pytest.importorskip("rocbench.kernels.mla_gluon", reason="this Triton has no Gluon")
    from tests.compile_only import run_offline

    script = textwrap.dedent("""
        import dataclasses, os, tempfile
        cache = tempfile.TemporaryDirectory()  # compiled now: Triton's cache keys miss what a builtin alias names
        os.environ["TRITON_CACHE_DIR"] = cache.name
        from unittest import mock
        import torch
        from rocbench.kernels import mla_config, mla_decode, mla_gluon_scope
        from tests.compile_only import _mla_case, compile_only
        configs = CONFIGS
        with compile_only("sm90") as driver, mock.patch.object(mla_gluon_scope, "unsupported_reason",
                                                               lambda *args: None):
            for kv_name, nhead, qlen, more in configs:
                kv_dtype = getattr(torch, kv_name)
                driver.launched.clear()
                case, io, ctx = _mla_case("sm90", kv_dtype, nhead, qlen, 2, True)
                config = dataclasses.replace(mla_config.gluon_ws_config(kv_dtype, nhead, qlen), **more)
                lens = [int(x) for x in io.kv.seq_lens]
                schedule = mla_decode.build_persistent_schedule(lens, qlen, nhead, 132, config,
                                                                kv_element_bytes=io.kv.kv_buffer.element_size())
                mla_decode.mla_decode_persistent(io.q, io.kv, schedule, 0.1, qlen, io.out, config=config)
                print(kv_name, *driver.launched)
    """).replace("CONFIGS", repr(_SM90_CONFIGS[configs]))
    lines = [line.split() for line in run_offline(script).splitlines()]
    assert [kv for kv, *_ in lines] == [kv for kv, *_ in _SM90_CONFIGS[configs]], lines
    for kv, *launched in lines:
        assert launched.count("_kernel") == 1, (kv, launched)
        assert launched.count("_split_q_kernel") == (kv != "bfloat16"), (kv, launched)


@needs_interpreter(on_cpu_only=True)
@pytest.mark.skipif(not E4M3FN, reason="Triton's e4m3fn type needs NVIDIA sm_89+ (ROCm has e4m3fnuz)")
@pytest.mark.gpu
@pytest.mark.parametrize("one_scale", [False, True])
def test_q_split_into_two_fp8_parts_keeps_bf16_precision(one_scale):
    """hi * hi_scale + lo * lo_scale gives q back to about bf16's precision (one part alone: 2^-4 of a row's largest);
    one_scale (MlaKernelConfig.gluon_one_chain): lo at hi's scale, as close."""
    mla_gluon = pytest.importorskip("rocbench.kernels.mla_gluon", reason="this Triton has no Gluon")
    rows = 75  # programs of SPLIT_ROWS rows and a partial last one
    q = make_query(5, 16, torch.bfloat16, torch.Generator().manual_seed(3), DEVICE).view(80, 576)[:rows].contiguous()
    # row 0: 448 (hi_scale 1) and e4m3's rounding ties, normal and subnormal (2^-9 apart below 2^-6), both signs
    ties = torch.tensor([17.0, 19.0, 9.0, 11.0, 1.0625, 1.1875, 3 * 2.0**-10, 5 * 2.0**-10, 448.0, 0.0])
    q[0] = torch.cat([ties, -ties] * 29)[:576].to(q.dtype)
    hi, lo = (torch.empty(rows, 576, dtype=torch.float8_e4m3fn, device=DEVICE) for _ in range(2))
    hi_scale, lo_scale = (torch.empty(rows, device=DEVICE) for _ in range(2))
    mla_gluon.split_q(q, hi, lo, hi_scale, lo_scale, one_scale=one_scale)
    assert torch.equal(lo_scale, hi_scale) == one_scale
    rebuilt = hi.float() * hi_scale[:, None] + lo.float() * lo_scale[:, None]
    row_max = q.float().abs().amax(1)
    assert ((rebuilt - q.float()).abs().amax(1) <= row_max * 2.0**-7).all()
    assert ((hi.float() * hi_scale[:, None] - q.float()).abs().amax(1) > row_max * 2.0**-7).any()  # lo matters
    if DEVICE == "cpu":  # the interpreter divides exactly: hi and lo are torch's round-to-nearest-even casts
        assert torch.equal(hi.float(), (q.float() / hi_scale[:, None]).to(torch.float8_e4m3fn).float())
        residual = (q.float() - hi.float() * hi_scale[:, None]) / lo_scale[:, None]
        assert torch.equal(lo.float(), residual.to(torch.float8_e4m3fn).float())
    # q in one part (MlaKernelConfig.fp8_q_one_part, no low part): the same hi, and its scale as lo_scale
    one_hi, one_scale_hi, one_scale_lo = torch.empty_like(hi), torch.empty_like(hi_scale), torch.empty_like(lo_scale)
    mla_gluon.split_q(q, one_hi, None, one_scale_hi, one_scale_lo, one_scale=True)
    assert torch.equal(one_hi.float(), hi.float()) and torch.equal(one_scale_hi, hi_scale)
    assert torch.equal(one_scale_lo, hi_scale)


def _gluon_out(q, kv, lens, programs, config, qlen=1):
    """The persistent decode through the Gluon tile over `programs` programs, into an output that starts as NaN (a
    row it never writes fails the check); the scope must take the call, not fall back."""
    schedule = mla_decode.build_persistent_schedule(lens, qlen, q.shape[1], programs, config,
                                                    kv_element_bytes=kv.kv_buffer.element_size()).to(DEVICE)
    assert mla_gluon_scope.unsupported_reason(q, kv, qlen, schedule) is None
    out = torch.full((*q.shape[:2], 512), float("nan"), dtype=q.dtype, device=DEVICE)
    return mla_decode.mla_decode_persistent(q, kv, schedule, SM_SCALE, qlen, out, config=config)


@pytest.mark.skipif(not GLUON_HERE, reason="a Hopper (sm_90) kernel in Triton 3.6's Gluon")
@pytest.mark.gpu
@pytest.mark.timeout(120, method="thread")  # a kernel waiting on an mbarrier forever: fail the worker, not the run
@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float8_e4m3fn])
@pytest.mark.parametrize("page_size,nhead,programs,qlen", [(64, 64, 132, 1), (128, 128, 132, 1), (64, 128, 7, 1),
                                                            (64, 16, 132, 1), (128, 32, 7, 1), (64, 64, 132, 2),
                                                            (128, 128, 7, 3)])
def test_gluon_ws_matches_reference(kv_dtype, page_size, nhead, programs, qlen):
    """MTP (qlen 2, 3): the query tokens one by one over their sequence's pages, each to its causal limit."""
    lens = [175, 2793, 64, 700, qlen]  # partial last blocks, a whole one, as few tokens as query tokens
    q, kv = _case(lens, page_size, kv_dtype, nhead, page_size + nhead + programs + qlen, qlen=qlen)
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, qlen)
    config = mla_config.gluon_ws_config(kv_dtype, nhead, qlen)  # the built-in knobs
    assert_matches_reference(_gluon_out(q, kv, lens, programs, config, qlen), ref, torch.bfloat16)


@pytest.mark.skipif(not GLUON_HERE, reason="a Hopper (sm_90) kernel in Triton 3.6's Gluon")
@pytest.mark.gpu
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float8_e4m3fn])
@pytest.mark.parametrize("knobs", [{"gluon_one_chain": False, "gluon_split_s": False}, {"gluon_one_chain": False},
                                   {"gluon_split_s": False}, {"gluon_regs": 240}, {"gluon_regs": 232},
                                   {"gluon_remat_q": True}, {"gluon_remat_q": False}])
@pytest.mark.parametrize("nhead,programs", [(64, 132), (128, 7), (32, 132)])
def test_gluon_ws_knobs_match_reference(kv_dtype, knobs, nhead, programs):
    """The Gluon tile's knobs away from gluon_ws_config's choice (mla_config: gluon_one_chain, gluon_regs,
    gluon_split_s; gluon_remat_q both ways, its choice differing by KV dtype) against the reference: blocks of one
    item, of many, partial ones, split units (the 16-32 row tile takes one chain and the registers only)."""
    lens = [175, 2793, 64, 700, 1]
    q, kv = _case(lens, 64, kv_dtype, nhead, nhead + programs + len(knobs))
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 1)
    config = dataclasses.replace(mla_config.gluon_ws_config(kv_dtype, nhead, 1), **knobs)
    assert_matches_reference(_gluon_out(q, kv, lens, programs, config), ref, torch.bfloat16)


@pytest.mark.skipif(not GLUON_HERE, reason="a Hopper (sm_90) kernel in Triton 3.6's Gluon")
@pytest.mark.gpu
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("kv_dtype,nhead,programs,more", [
    (kv_dtype, nhead, programs, {}) for kv_dtype in (torch.bfloat16, torch.float8_e4m3fn)
    for nhead, programs in ((16, 132), (32, 7))] + [(torch.float8_e4m3fn, 16, 7, {"fp8_qk": True,
                                                                                  "fp8_q_one_part": True}),
                                                     (torch.float8_e4m3fn, 16, 7, {"gluon_split_k": False})])
def test_gluon_ws_with_s_split_by_k_matches_reference(kv_dtype, nhead, programs, more):
    """MlaKernelConfig.gluon_split_k: the 16-32 row consumers' partial products added through shared memory, over
    blocks of one item and many, partial blocks and split units (7 programs: many items each, the slots' parity
    carried across items), and with q in one fp8 part (no low part: one chain per consumer's boxes; q on the fp8
    grid, so that the cast is exact and the reference's tolerance holds); and fp8 with S^T whole in each consumer, the
    other choice where fp8's own config splits it."""
    lens = [175, 2793, 64, 700, 1]
    q, kv = _case(lens, 64, kv_dtype, nhead, 3 * nhead + programs)
    if more.get("fp8_q_one_part"):
        q = q_on_the_fp8_grid(len(lens), nhead, torch.bfloat16, torch.Generator().manual_seed(programs))
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 1)
    config = dataclasses.replace(mla_config.gluon_ws_config(kv_dtype, nhead, 1), **{"gluon_split_k": True, **more})
    assert_matches_reference(_gluon_out(q, kv, lens, programs, config), ref, torch.bfloat16)


@pytest.mark.skipif(not GLUON_HERE, reason="a Hopper (sm_90) kernel in Triton 3.6's Gluon")
@pytest.mark.gpu
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("kv_dtype,nhead,programs", [(torch.float8_e4m3fn, 16, 132), (torch.float8_e4m3fn, 32, 7),
                                                     (torch.bfloat16, 32, 132)])
def test_swizzled_partial_scores_keep_the_bits(kv_dtype, nhead, programs):
    """MlaKernelConfig.gluon_swizzled_parts moves where the split's partial S^T lies in shared memory, not what is
    added: the output is the unswizzled split's, bit for bit (which test_gluon_ws_with_s_split_by_k_matches_reference
    holds to the reference)."""
    lens = [175, 2793, 64, 700, 1]
    q, kv = _case(lens, 64, kv_dtype, nhead, 5 * nhead + programs)
    split = dataclasses.replace(mla_config.gluon_ws_config(kv_dtype, nhead, 1), gluon_split_k=True,
                                gluon_swizzled_parts=False)
    swizzled = dataclasses.replace(split, gluon_swizzled_parts=True)
    assert torch.equal(_gluon_out(q, kv, lens, programs, split), _gluon_out(q, kv, lens, programs, swizzled))


@pytest.mark.skipif(not GLUON_HERE, reason="a Hopper (sm_90) kernel in Triton 3.6's Gluon")
@pytest.mark.gpu
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("nhead,programs,more", [(64, 132, {}), (128, 7, {}), (128, 132, {"gluon_one_chain": False}),
                                                 (64, 7, {"fp8_qk": True, "fp8_q_one_part": True})])
def test_v_converted_under_qk_keeps_the_bits(nhead, programs, more):
    """MlaKernelConfig.gluon_convert_under_qk moves fp8 V's conversion to fp16 between the 64-row consumers' Q@K^T MMAs
    and their wait, with q's parts in one chain, in two (between the parts) and in one part: the same operations in
    another order, so the tile's output bit for bit (a stage released before its MMAs' wait would let the producer
    overwrite K under them)."""
    lens = [175, 2793, 64, 700, 1]
    q, kv = _case(lens, 64, torch.float8_e4m3fn, nhead, 7 * nhead + programs)
    if more.get("fp8_q_one_part"):
        q = q_on_the_fp8_grid(len(lens), nhead, torch.bfloat16, torch.Generator().manual_seed(programs))
    config = dataclasses.replace(mla_config.gluon_ws_config(torch.float8_e4m3fn, nhead, 1), **more)
    under = dataclasses.replace(config, gluon_convert_under_qk=True)
    assert torch.equal(_gluon_out(q, kv, lens, programs, config), _gluon_out(q, kv, lens, programs, under))


@pytest.mark.skipif(not GLUON_HERE, reason="a Hopper (sm_90) kernel in Triton 3.6's Gluon")
@pytest.mark.gpu
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("nhead,programs", [(16, 132), (32, 7), (64, 132), (128, 7)])
def test_gluon_ws_with_q_in_one_fp8_part_is_within_the_fp8_query_tolerance(nhead, programs):
    """triton_fp8q's numerics through the Gluon tile (MlaKernelConfig.fp8_q_one_part: no low part). On q already on
    the fp8 grid the cast is exact, so the output matches the reference as bf16 does: this checks the one part's scale
    and masks. On random q: within the fp8-query tolerance that backend is judged at, and less exact than q's two
    parts (else the low part was still used; H100: 1.6x their error at nhead 128 x 7 programs, 2x or more elsewhere)."""
    from rocbench.core.harness import gate
    from rocbench.suites.mla.backends import FP8_QUERY_TOLERANCE

    lens = [175, 2793, 64, 700, 1]
    q, kv = _case(lens, 64, torch.float8_e4m3fn, nhead, nhead + programs)
    config = mla_config.gluon_ws_config(torch.float8_e4m3fn, nhead, 1)
    one_part = dataclasses.replace(config, fp8_qk=True, fp8_q_one_part=True)
    exact = q_on_the_fp8_grid(len(lens), nhead, torch.bfloat16, torch.Generator().manual_seed(programs))
    ref, _ = mla_decode_reference(exact, kv, SM_SCALE, 1)
    assert_matches_reference(_gluon_out(exact, kv, lens, programs, one_part), ref, torch.bfloat16)
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 1)
    errors = {}
    for name, form in (("one part", one_part), ("two parts", dataclasses.replace(config, fp8_qk=True))):
        # as the harness judges triton_fp8q's rows
        verdict = gate.tolerance(_gluon_out(q, kv, lens, programs, form), ref, FP8_QUERY_TOLERANCE)
        assert verdict.passed, verdict.detail
        errors[name] = verdict.max_abs_err
    assert errors["one part"] > 1.25 * errors["two parts"], errors


@pytest.mark.skipif(not GLUON_HERE, reason="a Hopper (sm_90) kernel in Triton 3.6's Gluon")
@pytest.mark.gpu
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("nhead,programs,knob", [
    # a KV ring one stage deeper (mla_gluon.default_stages), where q in one fp8 part leaves room for it
    (64, 132, {"gluon_stages": 3}), (128, 7, {"gluon_stages": 3}), (16, 132, {"gluon_stages": 4})],
    ids=lambda value: ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None)
def test_gluon_ws_knobs_that_keep_the_bits(nhead, programs, knob):
    """MlaKernelConfig.gluon_stages changes when the work happens, not what is multiplied: the blocks meet the same
    consumers in the same order, so the output is the tile's without the knob (q in one fp8 part), bit for bit."""
    lens = [175, 2793, 64, 700, 1]
    q, kv = _case(lens, 64, torch.float8_e4m3fn, nhead, nhead + programs + 1)
    # S^T whole in each consumer: at 16 heads the split's partial S^T takes the fourth stage's room (H100: 243 KB)
    config = dataclasses.replace(mla_config.gluon_ws_config(torch.float8_e4m3fn, nhead, 1), fp8_qk=True,
                                 fp8_q_one_part=True, gluon_split_k=False)
    without = _gluon_out(q, kv, lens, programs, config)
    assert torch.equal(without, _gluon_out(q, kv, lens, programs, dataclasses.replace(config, **knob)))
