"""What the Triton kernels are compiled for here: the checks that keep NVIDIA-only code (PTX inline asm, Hopper's
grid dependency control) off ROCm and off Triton's CPU interpreter."""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """Triton's CPU interpreter (TRITON_INTERPRET set) runs the kernels: no PTX, no launch attributes."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def nvidia_gpu(device: torch.device) -> bool:
    """Kernels for `device` compile to NVIDIA code: a CUDA device of a CUDA torch (ROCm's torch calls its GPUs
    "cuda" too), not the interpreter."""
    return device.type == "cuda" and torch.version.hip is None and not interpreting()
