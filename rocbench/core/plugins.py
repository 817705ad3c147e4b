"""Backends from outside rocbench: a file or module named with --plugin (YAML `plugins:`), or an installed package
that declares a `rocbench.backends` entry point. A plugin registers its backends exactly as the built-ins do,
`@registry.get("mla").backends.register` (rocbench.plugin has the names a plugin needs), and its backends then go
through every gate, both times and the batch probes. Every process that runs ranks loads the same plugins.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from rocbench.core.errors import InputError

ENTRY_POINTS = "rocbench.backends"
_loaded: dict[str, str] = {}  # plugin spec -> the module name it was loaded as


def load(spec: str) -> None:
    """Import one plugin: a .py file (by path) or a module name. A failure is one line naming the plugin."""
    if spec in _loaded:
        return
    by_path = spec.endswith(".py") or "/" in spec
    path = Path(spec).expanduser().resolve()
    if by_path and not path.is_file():
        raise InputError(f"--plugin {spec}: no such file")
    name = f"rocbench_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}" if by_path else spec
    try:
        if by_path:
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # before it runs: dataclasses and pickling look modules up by name
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except Exception as err:  # noqa: BLE001 - whatever a plugin raises on import is the user's to see, in one line
        sys.modules.pop(name, None)
        text = str(err).strip().splitlines()
        raise InputError(f"--plugin {spec}: cannot load it: {type(err).__name__}: {text[-1] if text else ''}") from None
    _loaded[spec] = name


def load_all(specs: list[str] | None) -> None:
    """The installed packages' entry points, then the plugins named on the command line or in YAML."""
    try:
        points = list(importlib.metadata.entry_points(group=ENTRY_POINTS))
    except Exception:  # noqa: BLE001 - broken metadata only means no installed plugins
        points = []
    for point in points:
        load(point.value)
    for spec in specs or []:
        load(spec)
