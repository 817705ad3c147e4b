"""Programmatic dependent launch (Hopper's griddepcontrol) for the Triton kernels: a kernel launched as a dependent
of the one before it on the stream starts while that one finishes (once all its programs have called
gdc_launch_dependents or exited), runs what does not read the earlier kernel's output, and calls gdc_wait before
it does. CUDA on sm_90+ only, never the interpreter; older Tritons lack it, and then it is never asked for."""

from __future__ import annotations

import torch
import triton

from rocbench.kernels.target import nvidia_gpu

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    HAS_GDC = True
except ImportError:
    HAS_GDC = False

    @triton.jit
    def gdc_wait():
        pass

    @triton.jit
    def gdc_launch_dependents():
        pass


def dependent_launch_supported(device: torch.device) -> bool:
    """Whether kernels on `device` may be launched as programmatic dependents."""
    return HAS_GDC and nvidia_gpu(device) and torch.cuda.get_device_capability(device)[0] >= 9


def pdl_launch_option(pdl: bool) -> dict:
    """The launch option for a dependent kernel (only passed where it exists: CUDA's Triton backend)."""
    return {"launch_pdl": True} if pdl else {}


__all__ = ["HAS_GDC", "dependent_launch_supported", "gdc_launch_dependents", "gdc_wait", "pdl_launch_option"]
