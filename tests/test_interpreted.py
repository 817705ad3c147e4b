"""rocbench.kernels.interpreted: on the CPU, Triton's interpreter patches triton.language once per kernel run."""
import os

import pytest
import torch
import triton
import triton.language as tl

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the CPU interpreter only")


@triton.jit
def _twice(x):
    return x * 2


@triton.jit
def _one_more_twice(X, OUT, N: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(OUT + offs, _twice(tl.load(X + offs) + 1))


def test_installed_with_the_kernels_and_a_kernel_with_helpers_runs_and_restores_the_language():
    from triton.runtime import interpreter

    import rocbench.kernels  # noqa: F401 - installs it under the interpreter
    from rocbench.kernels.interpreted import skip_nested_language_patches

    assert skip_nested_language_patches()  # this Triton has what it relies on: else the suite's time grows by a third
    assert interpreter._patch_lang.__name__ == "patch_once"
    x = torch.arange(8, dtype=torch.float32)
    out = torch.empty_like(x)
    for _ in range(2):  # the second run patches afresh
        _one_more_twice[(2,)](x, out, N=8)
        assert torch.equal(out, (x + 1) * 2)
        assert tl.core.is_builtin(tl.load)  # the run's patch restored


def test_the_interpreter_runs_without_the_int32_overflow_checks_compiled_kernels_leave_out():
    from triton.runtime import interpreter

    import rocbench.kernels  # noqa: F401 - turns them off under the interpreter
    from rocbench.kernels.interpreted import interpret_as_compiled

    assert interpreter.interpreter_builder.options.sanitize_overflow is False  # by the import alone
    assert interpret_as_compiled()  # this Triton has the option: else the kernel tests take a third longer
    x = torch.arange(8, dtype=torch.float32)
    out = torch.empty_like(x)
    _one_more_twice[(1,)](x, out, N=8)  # kernels still run, with their integer offsets unchecked
    assert torch.equal(out, (x + 1) * 2)
