"""All-gather across tensor-parallel ranks: AITER custom vs RCCL (ROCm), symmetric-memory vs NCCL (CUDA), gloo (CPU)."""
from rocbench.core import registry
from rocbench.suites.allgather import backends as _backends  # noqa: F401 - registers the backends
from rocbench.suites.allgather.suite import AllGatherSuite

SUITE = registry.register(AllGatherSuite())
