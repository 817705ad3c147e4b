"""Which AITER kernel or precision a case reaches, decided from AITER's tables and rules (no AITER import)."""
import pytest
import torch

from rocbench.rocm.mla_coverage import MlaRequest, coverage, kernel_key
from rocbench.rocm.moe_paths import activation_path
from tests.aiter_source import aiter_source_dir, missing_reason

SOURCE = aiter_source_dir()
needs_tables = pytest.mark.skipif(SOURCE is None, reason=missing_reason())


def kernel(arch, q, kv, nhead, persistent, qlen=1):
    return coverage(MlaRequest(arch, q, kv, nhead, qlen, persistent), SOURCE / "hsa")


# Facts read off hsa/<arch>/mla/mla_asm.csv at AITER e4048607a5 (q length 1 unless stated).
@needs_tables
@pytest.mark.parametrize("arch, q, kv, nhead, persistent, expected", [
    # gfx942 has no non-persistent bf16 kernel for 64 heads at q length 1 (only qSeqLen 0 rows)
    ("gfx942", "bf16", "bf16", 64, False, None),
    ("gfx950", "bf16", "bf16", 64, False, "mla_a16w16_qh64_qseqlen1_gqaratio64_v3"),
    # a persistent 64-head bf16 call on gfx942 is folded onto the 16-head kernel (q length padded to 4)
    ("gfx942", "bf16", "bf16", 64, True, "mla_a16w16_qh16_m16x4_n16x1_coex0_mask1_ps"),
    ("gfx950", "bf16", "bf16", 64, True, "mla_a16w16_qh64_qseqlen1_gqaratio64_v3_ps"),
    # a bf16 query over an fp8 cache exists only as the folded 16-head persistent kernel
    ("gfx942", "bf16", "fp8", 64, False, None),
    ("gfx950", "bf16", "fp8", 128, True, "mla_a16w8_qh16_m16x4_n16x1_coex0_mask1_ps"),
    # SGLang's fp8 path: q in the cache's fp8
    ("gfx942", "fp8", "fp8", 64, True, "mla_a8w8_qh64_qseqlen1_gqaratio64_v3_ps"),
    ("gfx950", "fp8", "fp8", 64, True, "mla_a8w8_qh16_qseqlen4_gqaratio16_v3_ps"),
    ("gfx942", "fp8", "fp8", 128, True, "mla_a8w8_qh128_m32x4_n16x2_msk0_ps"),
    ("gfx942", "fp8", "fp8", 32, False, None),
    ("gfx942", "bf16", "bf16", 128, False, "mla_dec_stage1_bf16_a16w16_subQ128_mqa128"),
    ("gfx942", "bf16", "bf16", 16, False, "mla_dec_stage1_bf16_a16w16_subQ16_mqa16"),
])
def test_mla_kernel_from_the_table(arch, q, kv, nhead, persistent, expected):
    found = kernel(arch, q, kv, nhead, persistent)
    if expected is None:
        assert not found.supported and "mla_asm.csv" in found.reason, found
    else:
        assert found.supported and expected in found.kernel, found


def test_calls_aiter_refuses_before_the_table():
    key, _, why = kernel_key(MlaRequest("gfx950", "fp8", "fp8", 64, 1, False))
    assert key is None and "only supports persistent mode" in why
    key, _, why = kernel_key(MlaRequest("gfx942", "bf16", "bf16", 40, 1, True))
    assert key is None and "not supported" in why
    key, fold, _ = kernel_key(MlaRequest("gfx942", "bf16", "bf16", 128, 2, True))
    assert fold == 8 and key.gqa == 16 and key.qseqlen == 4


@needs_tables
def test_a_missing_table_is_a_reason(tmp_path):
    found = coverage(MlaRequest("gfx942", "bf16", "bf16", 16, 1, False), tmp_path)
    assert not found.supported and "no MLA kernel table" in found.reason


@pytest.mark.parametrize("arch, layout, activation, tokens, expected", [
    ("gfx950", "separated", "silu", 1, "fp4"),  # SEPARATED + SiLU quantizes activations to fp4
    ("gfx950", "separated", "swiglu", 255, "bf16"),
    ("gfx950", "separated", "swiglu", 256, "fp4"),
    ("gfx950", "interleave", "silu", 255, "bf16"),
    ("gfx950", "interleave", "swiglu", 256, "fp8"),  # INTERLEAVE at >= 256 tokens on gfx950 uses fp8
    ("gfx942", "interleave", "swiglu", 4096, "bf16"),
])
def test_moe_activation_precision(arch, layout, activation, tokens, expected):
    assert activation_path(arch, layout, activation, tokens).activations == expected


def test_fp8_per_arch_and_its_poison():
    from rocbench.formats.fp8 import fp8_for_arch, nan_byte
    from rocbench.formats.paged_kv import build_paged_kv
    from rocbench.rocm.mla_policy import aiter_mla_policy

    assert fp8_for_arch("gfx942") == torch.float8_e4m3fnuz and fp8_for_arch("gfx950") == torch.float8_e4m3fn
    kv = build_paged_kv([5, 3], 4, torch.float8_e4m3fnuz, torch.Generator().manual_seed(0), "cpu")
    used = kv.kv_buffer[kv.kv_indices.long()].float()
    assert kv.kv_buffer.dtype == torch.float8_e4m3fnuz and kv.kv_buffer.float().nan_to_num().abs().max() <= 240
    assert torch.isnan(kv.kv_buffer.float()).any() and nan_byte(torch.float8_e4m3fnuz) == 0x80
    assert torch.isfinite(used.reshape(-1, 576)[:5]).all()
    # the policy's fp8 test knows both flavours: gfx942's fnuz cache runs the persistent 16-head kernel
    assert aiter_mla_policy(16, torch.float8_e4m3fnuz, True).persistent


def test_fp8_means_the_platforms_flavour(monkeypatch):
    from rocbench.core import platform

    monkeypatch.setenv(platform.SIMULATE_ENV, "rocm:gfx942")
    platform.detect.cache_clear()
    try:
        from rocbench.core.cli.command import suite_params
        from rocbench.suites.mla import SUITE

        params = suite_params(SUITE, {"kv_dtype": "bf16,fp8"})
        assert params["kv_dtype"] == [torch.bfloat16, torch.float8_e4m3fnuz]
    finally:
        platform.detect.cache_clear()
