"""Where the installed AITER is, which version and commit, and where its kernel tables lie.

Only called where AITER imports (ROCm). Nothing here imports AITER at module level.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import subprocess
from pathlib import Path


@functools.cache
def aiter_package_dir() -> Path:
    return Path(importlib.import_module("aiter").__file__).resolve().parent


@functools.cache
def asm_dir() -> Path:
    """AITER's hsa/ folder: importing aiter sets AITER_ASM_DIR (aiter/jit/core.py:473-474); a source
    checkout installed in develop mode keeps it beside the package."""
    aiter_package_dir()  # the import sets the variable
    env = os.environ.get("AITER_ASM_DIR")
    return Path(env) if env else aiter_package_dir().parent / "hsa"


def version() -> str | None:
    for dist in ("amd-aiter", "aiter"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return getattr(importlib.import_module("aiter"), "__version__", None)


def git_commit() -> str | None:
    """The commit of an AITER source checkout (the usual install on ROCm), else None."""
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "--short=10", "HEAD"], cwd=aiter_package_dir(),
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    # only a checkout whose top level holds the package (not a repository that happens to contain it)
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]) != aiter_package_dir().parent:
        return None
    return lines[1]
