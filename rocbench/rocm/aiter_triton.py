"""AITER's Triton MLA decode, `decode_attention_fwd` (aiter/ops/triton/attention/mla_decode.py): the kernel behind
SGLang's and vLLM's Triton MLA backends, which a server runs when its AITER switch is off. Taken from the installed
aiter, or, where aiter cannot be imported (any CUDA box), loaded by path from the AITER checkout that
ROCBENCH_AITER_SRC names, as a user would load it from theirs. Never copied into rocbench.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from pathlib import Path

SOURCE_ENV = "ROCBENCH_AITER_SRC"
FILE = Path("aiter/ops/triton/attention/mla_decode.py")
# SGLang's Triton attention backend splits every sequence into this many KV chunks by default
# (server argument --triton-attention-num-kv-splits); the backend here does the same.
SGLANG_NUM_KV_SPLITS = 8


def module():
    """The module holding decode_attention_fwd; ImportError (saying where it looked) when neither place has it. Looked
    up again when ROCBENCH_AITER_SRC changes: a run's availability check and its rank processes, which read the
    variable afresh, must agree."""
    return _module(os.environ.get(SOURCE_ENV))


@functools.cache
def _module(source: str | None):
    try:
        return importlib.import_module("aiter.ops.triton.attention.mla_decode")
    except Exception as err:  # noqa: BLE001 - without ROCm, importing aiter fails in many ways
        installed = f"{type(err).__name__}: {err}".splitlines()[0]
    if not source:
        raise ImportError(f"aiter is not importable ({installed}) and {SOURCE_ENV} names no AITER checkout")
    path = Path(source) / FILE
    if not path.is_file():
        raise ImportError(f"aiter is not importable and {SOURCE_ENV}={source} has no {FILE}")
    spec = importlib.util.spec_from_file_location("rocbench_aiter_triton_mla_decode", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def origin() -> str:
    return str(getattr(module(), "__file__", "aiter"))


def grouped_path(nhead: int, on_rocm: bool) -> bool:
    """Which first stage the kernel takes, by its own rule: the grouped one (several query heads per KV head, one
    tl.dot per head group) except on ROCm with MLA's 576-wide keys, where it falls back to one program per head."""
    return nhead != 1 and not on_rocm
