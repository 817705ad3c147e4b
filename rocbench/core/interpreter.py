"""Can Triton's CPU interpreter (TRITON_INTERPRET=1) run kernels here?

Triton 3.6's interpreter turns a loop bound loaded from memory into a Python int with int() on a
one-element array, which NumPy >= 2.4 refuses. Every kernel with a data-dependent loop then fails, so
the CPU path must say so up front instead of turning every row into a fault.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import triton.language as tl


def _probe_kernel(bound_ptr, out_ptr):  # a loop whose bound comes from memory, as in every suite kernel
    total = 0
    for _ in range(0, tl.load(bound_ptr), 1):
        total += 1
    tl.store(out_ptr, total)


@functools.cache
def import_what_the_interpreter_imports_late() -> None:
    """Triton's interpreter (3.6-3.9) imports Gluon at its first kernel run in a process (jit.mangle_type, for Gluon's
    tensor descriptors) while it has triton.language patched: Gluon's builtins are made from tl's, so they wrap the
    interpreter's stand-ins for good, and every later Gluon compile in that process fails ("Did you forget to add
    @triton.gluon.jit ?": a GPU test worker that had probed the interpreter, then compiled the Gluon MLA tile). The
    same call outside a kernel run imports it first. Idempotent; nothing where Triton lacks it."""
    import torch
    import triton

    mangle_type = getattr(triton.runtime.jit, "mangle_type", None)
    if mangle_type is not None:
        mangle_type(torch.empty(1))


@functools.cache
def interpreter_problem() -> str | None:
    """None if the interpreter runs the probe correctly here, else one line saying why not.

    Call only with TRITON_INTERPRET=1 set: triton.jit reads it when it wraps the function.
    """
    import numpy
    import torch
    import triton

    import_what_the_interpreter_imports_late()
    bound = torch.tensor([3], dtype=torch.int32)
    out = torch.zeros(1, dtype=torch.int32)
    try:
        triton.jit(_probe_kernel)[(1,)](bound, out)
    except Exception as err:  # noqa: BLE001 - any failure means the interpreter is unusable here
        cause = err.__cause__ or err
        return (f"the Triton {triton.__version__} interpreter fails with NumPy {numpy.__version__} "
                f"({type(cause).__name__}: {cause}); Triton 3.9 runs it")
    if out.item() != 3:
        return f"the Triton {triton.__version__} interpreter ran a 3-step loop {out.item()} times"
    return None


@functools.cache
def interpreter_problem_in_child() -> str | None:
    """interpreter_problem() as a CPU-only child process sees it (for callers that must not set TRITON_INTERPRET)."""
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    probe = "from rocbench.core.interpreter import interpreter_problem as p; print(p() or '')"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    if proc.returncode != 0:
        return f"the interpreter probe itself failed: {proc.stderr.strip()[-300:]}"
    return proc.stdout.strip() or None
