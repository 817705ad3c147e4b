"""Launch configs that another GPU cannot hold. The built-in configs were tuned on H100/H200 SMs (228 KiB of shared
memory); an MI300X workgroup has 64 KiB of LDS and an L40S block 99 KiB, so some of those configs do not fit there
(offline compiles for gfx942 and sm_89: `tests/compile_only.py`). A kernel family lists, per config, smaller ones to
fall back on; the first that this GPU can hold is used, and the result row's path says what changed and why.

A config is tried by preparing the call and calling it once: the call compiles the kernels, and Triton raises
OutOfResources before it launches a kernel that needs more shared memory (or threads) than the GPU has. The answer is
kept per key (device and whatever the compiled kernels depend on), so later preparations call nothing extra.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from rocbench.kernels.target import interpreting

# key -> (index of the first config that fitted, the note that says why it is not the first)
_fitted: dict[Hashable, tuple[int, str]] = {}


def changes(old: Any, new: Any) -> str:
    """'block_n 64 -> 32, num_stages 2 -> 1': the fields of two dataclass configs that differ."""
    return ", ".join(f"{field.name} {getattr(old, field.name)} -> {getattr(new, field.name)}"
                     for field in dataclasses.fields(old) if getattr(old, field.name) != getattr(new, field.name))


def _kib(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} bytes"


def shrink_note(wanted: Any, used: Any, err: Exception) -> str:
    need, limit, what = getattr(err, "required", "?"), getattr(err, "limit", "?"), getattr(err, "name", "resources")
    if what == "shared memory":
        need, limit = _kib(need), _kib(limit)
    return f"{changes(wanted, used)} to fit this GPU ({what}: the config needs {need}, the GPU has {limit})"


def first_fitting(key: Hashable, configs: Sequence[Any], prepare: Callable[[Any, str], Any]) -> Any:
    """prepare(config, note) for the first of `configs` this GPU can hold; note is "" for the first, else what
    changed and why. Each is checked by calling the prepared call (`.run()`) once. Under Triton's interpreter nothing
    is limited: the first, uncalled. Raises the first config's OutOfResources when none fits."""
    if interpreting():
        return prepare(configs[0], "")
    if key in _fitted:
        index, note = _fitted[key]
        return prepare(configs[index], note)
    from triton.runtime.errors import OutOfResources

    first_error: OutOfResources | None = None
    for index, config in enumerate(configs):
        note = shrink_note(configs[0], config, first_error) if first_error else ""
        prepared = prepare(config, note)
        try:
            prepared.run()
        except OutOfResources as err:
            first_error = first_error or err
            continue
        _fitted[key] = (index, note)
        return prepared
    assert first_error is not None
    raise first_error
