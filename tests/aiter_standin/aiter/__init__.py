"""A CPU stand-in for AITER, in tests only.

It mirrors the signatures of the AITER functions rocbench calls (tests/test_aiter_contract.py checks
them against AITER's source), enforces AITER's preconditions (metadata buffer order, the arch's fp8
dtype, float4_e2m1fn_x2 + is_shuffled weights, world sizes, 16-byte rows, the asm kernel tables)
and computes results from the inputs it is given, so rocbench's aiter backends run end to end on a
CPU through the real harness. The platform it pretends to be comes from ROCBENCH_SIMULATE_PLATFORM
(rocm:gfx942 or rocm:gfx950); the kernel tables come from the AITER source (tests/aiter_source.py).
"""
import os

from aiter import _standin

__version__ = "0.0+standin"

# AITER's package re-exports its ops at the top level (aiter/__init__.py: from .ops.attention import * ...).
from aiter.ops.attention import *  # noqa: E402,F401,F403
from aiter.ops.enum import *  # noqa: E402,F401,F403

# A real AITER sets this when it is imported (aiter/jit/core.py); rocbench reads the tables there.
if _standin.source_dir() is not None:
    os.environ["AITER_ASM_DIR"] = str(_standin.source_dir() / "hsa")
