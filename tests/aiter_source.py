"""Where the AITER source that the contract tests and the stand-in read lies.

ROCBENCH_AITER_SRC names an AITER checkout (an AMD developer points it at their own); by default the
read-only snapshot beside this repository, ../shared/reference/aiter-src, when it is there.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO.parent / "shared" / "reference" / "aiter-src"
STANDIN = REPO / "tests" / "aiter_standin"


def aiter_source_dir() -> Path | None:
    env = os.environ.get("ROCBENCH_AITER_SRC")
    path = Path(env) if env else DEFAULT
    return path if (path / "aiter").is_dir() else None


def missing_reason() -> str:
    env = os.environ.get("ROCBENCH_AITER_SRC")
    where = f"ROCBENCH_AITER_SRC={env}" if env else f"the default {DEFAULT}"
    return f"no AITER source at {where} (set ROCBENCH_AITER_SRC to an AITER checkout)"
