"""Kernel families. Each entry names the module holding its Suite class and its CLI command.

Adding a family means adding a package here and one line below; the harness stays untouched.
"""
from __future__ import annotations

import importlib

from rocbench.core.suite import Suite

# name -> module that defines `SUITE` (a Suite instance) and `register(app)` (its Typer command)
SUITES = {
    "allgather": "rocbench.suites.allgather",
    "mla": "rocbench.suites.mla",
    "moe": "rocbench.suites.moe",
}


def suite_module(name: str):
    return importlib.import_module(SUITES[name])


def load_suite(name: str) -> Suite:
    return suite_module(name).SUITE


def available_suites() -> list[str]:
    """Suites whose module is wired up (has a SUITE)."""
    return [name for name in SUITES if hasattr(suite_module(name), "SUITE")]
