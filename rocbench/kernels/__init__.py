"""Portable Triton kernels: the NVIDIA-side systems under test (Triton also runs on ROCm)."""
from rocbench.kernels.target import interpreting

if interpreting():  # on the CPU: the interpreter patching triton.language once per kernel run, no overflow checks
    from rocbench.core.interpreter import import_what_the_interpreter_imports_late
    from rocbench.kernels.interpreted import interpret_as_compiled, skip_nested_language_patches

    import_what_the_interpreter_imports_late()
    skip_nested_language_patches()
    interpret_as_compiled()
