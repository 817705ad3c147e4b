"""Triton's CPU interpreter, made to patch triton.language once per kernel run (tests, tiny CPU runs).

The interpreter (Triton 3.6-3.9) re-patches the language modules at every call of a @triton.jit helper inside a
kernel, walking them with inspect.getmembers: about a third of the CPU time of the MoE kernel tests (cProfile). Inside
a kernel run whose own patch covered the same modules, that re-patch changes nothing (each builtin is wrapped
already), so it is skipped there: tests/test_moe_kernel.py's scale-words and stacked tests 22.0 -> 16.0 s on 2 cores.
A helper that sees a module the kernel did not (triton.language.core by that name: tl.sum, tl.zeros) is patched as
before at its first call in the run; the interpreter never restores that patch within the run, so later calls skip it.

The interpreter also checks every int32 add, sub and mul for overflow (its options' sanitize_overflow, on by default
there), which a compiled kernel does only in debug builds: each becomes an int64 operation, two compares and an
assert, 35% of the CPU time of the MoE scale-words test (cProfile). `interpret_as_compiled` turns it off, as the GPUs
run the kernels; the tests' shapes are far from int32's range anyway (tests/test_interpreted.py checks the switch).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect

import triton.language as tl


@functools.cache
def skip_nested_language_patches() -> bool:
    """Install the once-per-kernel-run patching (idempotent). Returns whether the interpreter had the functions this
    relies on; where it does not, nothing changes."""
    try:
        from triton.runtime import interpreter as ti
    except ImportError:
        return False
    if not all(hasattr(ti, name) for name in ("_patch_lang", "_LangPatchScope", "GridExecutor")):
        return False
    patch_lang, run_grid = ti._patch_lang, ti.GridExecutor.__call__
    running: list[set[int] | None] = []  # per kernel run (innermost last): the modules its own patch covered

    def language_modules(fn) -> set[int]:
        return {id(value) for value in fn.__globals__.values()
                if inspect.ismodule(value) and (value is tl or value is tl.core)}

    def patch_once(fn):
        modules = language_modules(fn)
        if running and running[-1] is not None and modules <= running[-1]:
            return ti._LangPatchScope()  # restores nothing: nothing changed
        scope = patch_lang(fn)
        if running:  # the kernel run's own patch, or a helper's of a module it had not (which stays patched)
            running[-1] = modules | (running[-1] or set())
        return scope

    def run_grid_patching_once(self, *args, **kwargs):
        running.append(None)
        try:
            return run_grid(self, *args, **kwargs)
        finally:
            running.pop()

    ti._patch_lang = patch_once
    ti.GridExecutor.__call__ = run_grid_patching_once
    return True


@functools.cache
def interpret_as_compiled() -> bool:
    """The interpreter without its int32 overflow checks, as compiled kernels run outside debug builds (idempotent).
    Returns whether this Triton had the options to change."""
    try:
        from triton.runtime import interpreter as ti
    except ImportError:
        return False
    builder = getattr(ti, "interpreter_builder", None)
    options = getattr(builder, "options", None)
    if not dataclasses.is_dataclass(options) or not hasattr(options, "sanitize_overflow"):
        return False
    builder.options = dataclasses.replace(options, sanitize_overflow=False)
    return True
