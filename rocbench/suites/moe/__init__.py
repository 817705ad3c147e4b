"""MXFP4 MoE, a16w4: INTERLEAVE vs SEPARATED weight layouts, gated against an fp32 reference."""
from rocbench.core import registry
from rocbench.suites.moe import backends as _backends  # noqa: F401 - registers the backends
from rocbench.suites.moe.suite import MoeSuite

SUITE = registry.register(MoeSuite())
