"""Portable Triton kernels: the NVIDIA-side systems under test (Triton also runs on ROCm)."""
from rocbench.kernels.target import interpreting

if interpreting():  # on the CPU: the interpreter made to patch triton.language once per kernel run
    from rocbench.kernels.interpreted import skip_nested_language_patches

    skip_nested_language_patches()
