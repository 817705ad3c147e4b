"""Which device gets NVIDIA-only kernel code (PTX inline asm, grid dependency control)."""
import torch

from rocbench.kernels import target


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
