import os

# Triton kernels run under the interpreter when no GPU is present. The variable is read when a
# kernel module is imported, so it must be set before any test imports rocbench.kernels.
try:
    import torch

    _has_gpu = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _has_gpu = False
if not _has_gpu:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests marked `gpu` use the GPU where there is one: they share one xdist worker (`--dist loadgroup` in the
# Makefile), so no two of them run kernels, or time them, on it at once.
def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: uses the GPU when one is present (all such tests share one xdist worker)")


# The longest tests start first, so that with several workers (pytest -n) they overlap the rest.
LONG_FIRST = ("test_fault_injection_matrix", "test_killed_run", "test_ci_config_runs", "test_concurrent_runs")


def pytest_collection_modifyitems(items):
    import pytest

    if _has_gpu:
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(pytest.mark.xdist_group("gpu"))
    items.sort(key=lambda item: not item.name.startswith(LONG_FIRST))
