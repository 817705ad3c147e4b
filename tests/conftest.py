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

# The longest tests start first, so that with several workers (pytest -n) they overlap the rest.
LONG_FIRST = ("test_fault_injection_matrix", "test_killed_run", "test_ci_config_runs", "test_concurrent_runs")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: not item.name.startswith(LONG_FIRST))
