"""Portable Triton kernels: the NVIDIA-side systems under test (Triton also runs on ROCm)."""
