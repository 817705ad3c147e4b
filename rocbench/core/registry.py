"""Suites register themselves here; the harness finds them by name, never by importing them.

A suite package calls `register(SUITE)` when it is imported. The command line imports the built-in
families (rocbench.suites) and any module named in ROCBENCH_SUITES (comma list) or in the
`rocbench.suites` entry-point group, so a new family is one package and nothing else. A rank process or
a report that meets a suite by name imports the module that registered it (recorded with the suite).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys

from rocbench.core.errors import InputError

SUITES_ENV = "ROCBENCH_SUITES"
ENTRY_POINTS = "rocbench.suites"

_suites: dict[str, object] = {}
_modules: dict[str, str] = {}  # suite name -> the module whose import registers it


def register(suite, module: str | None = None):
    """Make `suite` known by its name. `module` is what another process imports to see it registered
    (default: the module calling register, e.g. the family's package)."""
    _suites[suite.name] = suite
    _modules[suite.name] = module or sys._getframe(1).f_globals["__name__"]
    return suite


def discover(builtin: str | None = None) -> None:
    """Import the built-in families package, ROCBENCH_SUITES modules and entry points (each registers)."""
    modules = [builtin] if builtin else []
    modules += [m.strip() for m in os.environ.get(SUITES_ENV, "").split(",") if m.strip()]
    try:
        modules += [ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)]
    except Exception:  # noqa: BLE001 - broken metadata only means no third-party suites
        pass
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise InputError(f"cannot import suite module {module!r}: {err}") from None


def names() -> list[str]:
    return list(_suites)


def module_of(name: str) -> str:
    return _modules[name]


def get(name: str, module: str | None = None):
    """The suite called `name`, importing `module` first when this process has not seen it yet."""
    if name not in _suites and module:
        importlib.import_module(module)
    if name not in _suites:
        raise InputError(f"unknown suite {name!r} (known: {', '.join(_suites) or 'none'})")
    return _suites[name]
