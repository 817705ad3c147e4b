"""The built-in kernel families. Importing this package imports each subpackage, which registers its
suite (rocbench.core.registry); a new family is a new subpackage here, or any package named in
ROCBENCH_SUITES."""
from __future__ import annotations

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
