"""Which device gets NVIDIA-only kernel code (PTX inline asm, grid dependency control), and that code compiled for
sm_90 offline."""
import textwrap

import pytest
import torch

from rocbench.kernels import target
from tests.compile_only import run_offline


def test_only_a_cuda_torch_outside_the_interpreter_is_an_nvidia_target(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.version, "hip", None)
    assert target.nvidia_gpu(cuda) and not target.nvidia_gpu(torch.device("cpu"))
    monkeypatch.setattr(torch.version, "hip", "6.4.0")  # ROCm's torch names its GPUs "cuda" too
    assert not target.nvidia_gpu(cuda)
    monkeypatch.setattr(torch.version, "hip", None)
    for value, interpreted in (("1", True), ("0", False), ("", False)):
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert target.interpreting() == interpreted and target.nvidia_gpu(cuda) != interpreted


def test_dependent_launch_only_on_nvidia_sm90_and_never_in_the_interpreter(monkeypatch):
    from rocbench.kernels import pdl

    cuda = torch.device("cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(pdl, "HAS_GDC", True)
    for major, supported in ((8, False), (9, True), (10, True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, major=major: (major, 0))
        assert pdl.dependent_launch_supported(cuda) == supported
    assert not pdl.dependent_launch_supported(torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not pdl.dependent_launch_supported(cuda)
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(torch.version, "hip", "6.4.0")
    assert not pdl.dependent_launch_supported(cuda)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(pdl, "HAS_GDC", False)  # a Triton without griddepcontrol
    assert not pdl.dependent_launch_supported(cuda)
    assert pdl.pdl_launch_option(True) == {"launch_pdl": True} and pdl.pdl_launch_option(False) == {}


def _has_cuda_backend() -> bool:
    from triton.backends import backends

    return "nvidia" in backends


@pytest.mark.skipif(not _has_cuda_backend(), reason="this Triton has no NVIDIA backend to compile for sm_90 with")
def test_moe_ptx_paths_compile_for_sm90_offline():
    """The MoE kernels' NVIDIA-only paths, which no CPU test runs, compiled for sm_90 by this Triton's ptxas through
    the product's call (tests/compile_only.py, nothing run): the exact PTX decode with the cache prefetch, dependent
    launches and split pairs; then the fp16 GEMM1 with its x kernel, stacked over 8 warps, and GEMM2's one-multiply
    upper-byte decode; then the backend's default, weights in fragment order with the register prefetch, also with y
    in bf16 (narrow_y)."""
    script = textwrap.dedent("""
        import dataclasses
        from rocbench.kernels.moe_plan import heuristic_plan
        from tests.compile_only import MOE_SHAPES, compile_only, moe_call, nvidia_paths
        shape = MOE_SHAPES["gpt-oss-120b TP8 pad"]
        experts, topk, hidden, inter = shape[:4]
        plan = heuristic_plan(16, topk, experts, inter, hidden, 132, True)
        with nvidia_paths(), compile_only("sm90") as driver:
            moe_call("sm90", shape, 16, plan)
            moe_call("sm90", shape, 16, dataclasses.replace(plan, f16_gemm1=True, upper_bytes=True,
                                                            stacked_gate_up=True, warps1=8),
                     scale_max=127, w13_live_scales=(110, 127))
            retiled = heuristic_plan(16, topk, experts, inter, hidden, 132, True, retiled=True)
            assert retiled.fragments and retiled.prefetch  # the backend's default on NVIDIA
            moe_call("sm90", shape, 16, retiled, scale_max=127)
            # and with GEMM2's y in bf16 (narrow_y: without a GEMM2 split)
            moe_call("sm90", shape, 16, dataclasses.replace(retiled, narrow_y=True, split2=1), scale_max=127)
            print(" ".join(driver.launched))
    """)
    launched = run_offline(script).split()
    assert launched.count("_moe_gemm1_kernel") == 4 and "_x_to_f16_kernel" in launched, launched
