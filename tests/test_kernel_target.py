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
