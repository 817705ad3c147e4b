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
