"""What every stand-in module shares: the simulated arch, its fp8 dtype, and a log of calls."""
from __future__ import annotations

import os
from pathlib import Path

import torch

# Every stand-in call appends (name, details): tests read it to check the dispatch order.
CALLS: list[tuple[str, dict]] = []


def arch() -> str:
    platform = os.environ.get("ROCBENCH_SIMULATE_PLATFORM", "rocm:gfx950")
    return platform.partition(":")[2] or "gfx950"


def fp8() -> torch.dtype:
    """aiter/utility/dtypes.py: float8_e4m3fnuz on gfx942, float8_e4m3fn on gfx950."""
    return torch.float8_e4m3fnuz if arch() == "gfx942" else torch.float8_e4m3fn


def dtype_id(dtype: torch.dtype) -> str:
    """AITER's dtype enum knows bf16/fp16/fp32, the arch's fp8 and bytes; anything else asserts."""
    known = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", fp8(): "fp8",
             torch.uint8: "byte", torch.int32: "i32"}
    if dtype not in known:
        raise AssertionError(f"Unsupported dtype: {dtype}")
    return known[dtype]


def source_dir() -> Path | None:
    """tests/aiter_source.py, loaded by path: the stand-in also runs where the repository is not importable (a
    simulated user's site-packages in tests/test_setup_env.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_rocbench_aiter_source", Path(__file__).resolve().parents[2] / "aiter_source.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.aiter_source_dir()


def record(name: str, **details) -> None:
    CALLS.append((name, details))
