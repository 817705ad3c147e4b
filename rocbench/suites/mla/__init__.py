"""MLA decode (DeepSeek absorbed multi-head latent attention): persistent and non-persistent, gated vs fp32."""
from rocbench.core import registry
from rocbench.suites.mla import backends as _backends  # noqa: F401 - registers the backends
from rocbench.suites.mla.suite import MlaSuite

SUITE = registry.register(MlaSuite())
