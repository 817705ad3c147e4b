"""Configs tuned on an H100/H200 that another GPU cannot hold: the fallback to smaller ones (rocbench.kernels.fit),
and an offline compile of the MLA and MoE kernels for an MI300X (gfx942: 64 KiB of LDS per workgroup) through
Triton's HIP backend, which showed every bf16 MLA config failing there before the fallback existed."""

import dataclasses
import textwrap
import types

import pytest
import torch

from rocbench.core.axes import Case
from rocbench.core.platform import PlatformInfo, device_arch
from rocbench.kernels import fit
from rocbench.kernels.mla_config import MlaKernelConfig, smaller_configs
from rocbench.kernels.mla_decode import build_persistent_schedule
from rocbench.suites.mla.backends import TritonMla
from tests.compile_only import run_offline


class OutOfResources(Exception):
    """Triton's, as the fit sees it: required, limit, name."""

    def __init__(self, required, limit, name="shared memory"):
        super().__init__(f"out of resource: {name}")
        self.required, self.limit, self.name = required, limit, name


@pytest.fixture
def compiled_gpu(monkeypatch):
    """The fit as on a GPU (not the interpreter), with Triton's OutOfResources stood in for, and calls recorded."""
    import triton.runtime.errors

    monkeypatch.setattr(fit, "interpreting", lambda: False)
    monkeypatch.setattr(triton.runtime.errors, "OutOfResources", OutOfResources)
    monkeypatch.setattr(fit, "_fitted", {})
    calls = []

    def prepare_needing(limit_block_n):
        def prepare(config, note):
            def run():
                calls.append(config)
                if config.block_n > limit_block_n:
                    raise OutOfResources(config.block_n * 1152, 65536)
            return type("Prepared", (), {"run": staticmethod(run), "config": config, "note": note})
        return prepare
    return calls, prepare_needing


def test_first_fitting_takes_the_first_config_the_gpu_holds_and_says_why(compiled_gpu):
    calls, prepare_needing = compiled_gpu
    chain = smaller_configs(MlaKernelConfig(block_n=64))
    got = fit.first_fitting("case", chain, prepare_needing(32))
    assert got.config.block_n == 32 and [c.block_n for c in calls] == [64, 32]
    assert got.note == "block_n 64 -> 32 to fit this GPU (shared memory: the config needs 72 KiB, the GPU has 64 KiB)"
    # the answer is kept: the same case prepared again calls nothing
    again = fit.first_fitting("case", chain, prepare_needing(32))
    assert again.config.block_n == 32 and again.note == got.note and len(calls) == 2


def test_first_fitting_keeps_a_config_that_fits_unchanged(compiled_gpu):
    calls, prepare_needing = compiled_gpu
    got = fit.first_fitting("fits", smaller_configs(MlaKernelConfig(block_n=64)), prepare_needing(64))
    assert got.config.block_n == 64 and got.note == "" and len(calls) == 1


def test_first_fitting_raises_the_first_error_when_nothing_fits(compiled_gpu):
    _, prepare_needing = compiled_gpu
    with pytest.raises(OutOfResources) as err:
        fit.first_fitting("never", smaller_configs(MlaKernelConfig(block_n=64)), prepare_needing(8))
    assert err.value.required == 64 * 1152


def test_first_fitting_under_the_interpreter_calls_nothing(monkeypatch):
    monkeypatch.setattr(fit, "interpreting", lambda: True)

    def prepare(config, note):
        return type("Prepared", (), {"run": staticmethod(lambda: pytest.fail("called")), "config": config})
    assert fit.first_fitting("x", [MlaKernelConfig(block_n=64), MlaKernelConfig(block_n=32)], prepare).config.block_n == 64


def test_smaller_configs_halve_the_block_then_drop_a_stage_and_leave_the_schedule_alone():
    config = MlaKernelConfig(block_n=64, num_stages=2, max_tile_rows=64)
    chain = smaller_configs(config)
    assert [(c.block_n, c.num_stages) for c in chain] == [(64, 2), (32, 2), (16, 2), (16, 1)]
    assert all(dataclasses.replace(c, block_n=64, num_stages=2) == config for c in chain)
    schedules = [build_persistent_schedule([4096, 100, 777], 1, 128, 132, c) for c in chain]
    assert all(torch.equal(s.work_info, schedules[0].work_info) for s in schedules)
    assert smaller_configs(MlaKernelConfig(prefetch=True, num_stages=1, block_n=16)) == \
        [MlaKernelConfig(prefetch=True, num_stages=1, block_n=16)]


@pytest.mark.parametrize("kind, arch, kv_dtype, unsupported", [
    ("cuda", "sm_80", torch.float8_e4m3fn, True),
    ("cuda", "sm_80", torch.bfloat16, False),
    ("cuda", "sm_89", torch.float8_e4m3fn, False),
    ("cuda", "sm_90", torch.float8_e4m3fn, False),
    ("rocm", "gfx942", torch.float8_e4m3fnuz, False),
])
def test_fp8_kv_is_unsupported_below_sm89(kind, arch, kv_dtype, unsupported):
    case = Case((("kv_dtype", kv_dtype),))
    reason = TritonMla().unsupported_reason(case, PlatformInfo(kind, 1, ["gpu"], sm_count=132, l2_bytes=None, arch=arch))
    assert (reason is not None) == unsupported
    if unsupported:
        assert "sm_89" in reason and arch in reason



@pytest.mark.parametrize("gcn_arch_name, rocm, arch", [
    ("NVIDIA H100 80GB HBM3", False, "sm_90"),  # CUDA torch 2.11 fills gcnArchName with the device's name
    ("", False, "sm_90"),
    ("gfx942:sramecc+:xnack-", True, "gfx942"),
])
def test_device_arch_is_the_gfx_target_on_rocm_and_the_sm_on_cuda(gcn_arch_name, rocm, arch):
    props = types.SimpleNamespace(gcnArchName=gcn_arch_name, major=9, minor=0)
    assert device_arch(props, rocm) == arch

def _has_hip_backend() -> bool:
    from triton.backends import backends

    return "amd" in backends


@pytest.mark.skipif(not _has_hip_backend(), reason="this Triton has no HIP backend to compile for gfx942 with")
def test_mla_moe_and_spin_kernels_compile_and_fit_on_mi300x_offline():
    """Through the product's own calls, compiled for gfx942 by Triton's HIP backend, nothing run (tests/compile_only.py;
    `python -m tests.compile_only gfx942` does every config). Before the fallback, bf16 nhead 16 needed 72 KiB."""
    script = textwrap.dedent("""
        import torch
        from rocbench.kernels.moe_plan import heuristic_plan
        from tests.compile_only import MOE_SHAPES, TARGETS, compile_only, mla_prepare, moe_call
        with compile_only("gfx942") as driver:
            print(mla_prepare("gfx942", torch.bfloat16, 16, 1, 64, True).description)
            print(mla_prepare("gfx942", torch.float8_e4m3fnuz, 64, 1, 1, False).description)
            shape = MOE_SHAPES["deepseek-r1 TP8"]
            experts, topk, hidden, inter = shape[:4]
            moe_call("gfx942", shape, 1, heuristic_plan(1, topk, experts, inter, hidden, TARGETS["gfx942"].sms))
            from rocbench.core.harness import spin  # selfcheck's known-duration kernel: its AMD clock path
            spin.launch(torch.zeros(1, dtype=torch.int64), 0, 1000, hip=True)
            print("launched", " ".join(driver.launched))
    """)
    lines = run_offline(script).splitlines()
    assert lines[0].startswith("persistent") and "block_n 64 -> 32 to fit this GPU" in lines[0], lines[0]
    assert lines[1].startswith("split-kv") and "to fit this GPU" in lines[1], lines[1]
    launched = lines[2].split()[1:]
    assert {"_persistent_kernel", "_split_kv_kernel", "_moe_gemm1_kernel", "_moe_gemm2_kernel", "rocbench_spin"} <= \
        set(launched), launched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU whose limits Triton checks")
def test_gpu_a_config_too_large_for_this_gpu_falls_back_and_still_matches():
    """On a real GPU: a config asking for more shared memory than any has (256-token blocks of the 64-row tile, 3
    stages) takes the first smaller one that fits; the path says so, and the result still matches the reference."""

    from rocbench.formats.paged_kv import KV_LORA_RANK, build_paged_kv, make_query
    from rocbench.suites.mla.reference import mla_decode_reference
    from rocbench.suites.mla.suite import SM_SCALE

    g = torch.Generator().manual_seed(3)
    kv = build_paged_kv([700, 300], 64, torch.bfloat16, g, "cpu").to("cuda")
    q = make_query(2, 64, torch.bfloat16, g, "cpu").to("cuda")
    io = types.SimpleNamespace(q=q, kv=kv, out=torch.empty(2, 64, KV_LORA_RANK, dtype=q.dtype, device="cuda"))
    case = {"q_dtype": torch.bfloat16, "kv_dtype": torch.bfloat16, "nhead": 64, "qlen": 1, "persist": True, "batch": 2}
    ctx = types.SimpleNamespace(device=torch.device("cuda"), platform=PlatformInfo(
        "cuda", 1, ["gpu"], sm_count=torch.cuda.get_device_properties(0).multi_processor_count, l2_bytes=None))
    config = MlaKernelConfig(max_tile_rows=64, block_n=256, num_stages=3)
    prepared = TritonMla.prepare_fitted(case, io, ctx, config, "test config")
    assert "to fit this GPU (shared memory: the config needs" in prepared.description, prepared.description
    out = prepared.run()
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 1)
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.flatten(), dim=0)
    assert torch.isfinite(out).all() and cos >= 0.9999
