import fcntl
import os
import tempfile
from pathlib import Path

import pytest

# Triton kernels run under the interpreter when no GPU is present. The variable is read when a
# kernel module is imported, so it must be set before any test imports rocbench.kernels.
try:
    import torch

    _has_gpu = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _has_gpu = False
if not _has_gpu:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests marked `gpu` use the GPU where there is one, several at a time (xdist workers, other checkouts' runs); those
# marked `gpu_exclusive` as well have it to themselves: they time kernels against a copy bandwidth measured in the same
# run, or check the timers (`rocbench selfcheck`), which other work on the GPU would skew. A shared / exclusive flock
# on one lock file orders them across processes. (An xdist group did not: xdist reads the groups before this conftest's
# collection hook had added them, so GPU tests ran on several workers at once all along.)
GPU_LOCK = Path(tempfile.gettempdir()) / f"rocbench-tests-gpu-{os.getuid()}.lock"  # one per user: a file they can open


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: uses the GPU when one is present (alongside other such tests)")
    config.addinivalue_line("markers", "gpu_exclusive: uses the GPU when one is present, with nothing else on it")


@pytest.fixture(autouse=True)
def _gpu_turn(request):
    exclusive = request.node.get_closest_marker("gpu_exclusive") is not None
    if not _has_gpu or not (exclusive or request.node.get_closest_marker("gpu")):
        yield
        return
    with open(GPU_LOCK, "a") as lock:  # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


# The longest tests start first, so that with several workers (pytest -n) they overlap the rest.
LONG_FIRST = ("test_fault_injection_matrix", "test_killed_run", "test_ci_config_runs", "test_concurrent_runs",
              "test_mla_gates_pass_on_both_paths", "test_two_nodes_tp4", "test_make_keeps_the_users_torch",
              "test_srun_ranks_join", "test_aiter_triton_loaded_from", "test_deterministic_plan_is_batch_invariant")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: not item.name.startswith(LONG_FIRST))
