"""Kernel configs that `rocbench <suite> --tune` measured fastest, per device, where the kernels load them.

The store is one JSON file, ROCBENCH_TUNED_CONFIGS or ~/.cache/rocbench/tuned-configs.json:
{device name: {kernel: {key: {"config": {...}, "evidence": {...}}}}}. A kernel asks `lookup` for its
key (e.g. the MLA tile shape) and falls back to its built-in default when nothing was tuned there.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import torch

TUNED_ENV = "ROCBENCH_TUNED_CONFIGS"


def store_path() -> Path:
    env = os.environ.get(TUNED_ENV)
    return Path(env) if env else Path.home() / ".cache" / "rocbench" / "tuned-configs.json"


def device_name(device: torch.device | None) -> str | None:
    if device is None or device.type != "cuda":
        return None  # the interpreter has nothing to tune
    return torch.cuda.get_device_name(device)


_cache: dict = {"mtime": None, "data": {}}


def _load() -> dict:
    path = store_path()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return {}
    if _cache["mtime"] != (path, mtime):
        try:
            _cache["data"] = json.loads(path.read_text())
        except (OSError, ValueError):
            _cache["data"] = {}
        _cache["mtime"] = (path, mtime)
    return _cache["data"]


def lookup(kernel: str, device: torch.device | None, key: str) -> dict | None:
    """The tuned config fields for (this device, kernel, key), or None."""
    name = device_name(device)
    entry = _load().get(name, {}).get(kernel, {}).get(key) if name else None
    return entry["config"] if entry else None


def remember(kernel: str, device: torch.device, key: str, config: dict, evidence: dict) -> Path:
    """Store the winner (merged into the file under a lock, written atomically); returns the file."""
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            data = {}
        data.setdefault(device_name(device) or "cpu", {}).setdefault(kernel, {})[key] = {"config": config,
                                                                                         "evidence": evidence}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return path
