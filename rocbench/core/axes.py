"""Parse sweep axes from the command line and expand them into cases."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from rocbench.core.errors import InputError

# Short names users type, mapped onto torch dtype names.
DTYPE_ALIASES = {
    "fp32": "float32", "f32": "float32", "float": "float32",
    "fp16": "float16", "f16": "float16", "half": "float16",
    "bf16": "bfloat16",
    "fp8": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn", "e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2", "e5m2": "float8_e5m2",
}
FP8_ALIASES = ("fp8", "fp8_e4m3", "e4m3")


def split_list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise InputError(f"{what}: empty item in {text!r} (expected a comma-separated list)")
    return items


def parse_dtype(name: str, fp8: torch.dtype | None = None) -> torch.dtype:
    """A torch dtype from its name or a short alias; `fp8` says which e4m3 flavour "fp8" means here."""
    if fp8 is not None and name.strip().lower() in FP8_ALIASES:
        return fp8
    canonical = DTYPE_ALIASES.get(name.strip().lower(), name.strip())
    dtype = getattr(torch, canonical, None)
    if not isinstance(dtype, torch.dtype):
        raise InputError(f"unknown dtype {name!r} (use a torch dtype name such as bfloat16, float8_e4m3fn, int32)")
    return dtype


def parse_dtypes(text: str, allowed: Sequence[torch.dtype] | None = None, what: str = "--dtypes",
                 fp8: torch.dtype | None = None) -> list[torch.dtype]:
    dtypes = [parse_dtype(item, fp8) for item in split_list(text, what)]
    if allowed is not None:
        for dtype in dtypes:
            if dtype not in allowed:
                names = ", ".join(dtype_name(d) for d in allowed)
                raise InputError(f"{what}: {dtype_name(dtype)} is not supported here (choose from {names})")
    return dtypes


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_ints(text: str, what: str, minimum: int | None = None, allowed: Iterable[int] | None = None) -> list[int]:
    values = []
    for item in split_list(text, what):
        try:
            value = int(item)
        except ValueError:
            raise InputError(f"{what}: {item!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise InputError(f"{what}: {value} is below the minimum {minimum}")
        if allowed is not None and value not in set(allowed):
            raise InputError(f"{what}: {value} is not one of {sorted(set(allowed))}")
        values.append(value)
    return values


def parse_choices(text: str, what: str, choices: Sequence[str]) -> list[str]:
    values = [item.lower() for item in split_list(text, what)]
    for value in values:
        if value not in choices:
            raise InputError(f"{what}: unknown value {value!r} (choose from {', '.join(choices)})")
    return values


def parse_shape(text: str, what: str = "--shapes") -> tuple[int, ...]:
    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a shape like 64x16160") from None
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"{what}: {text!r} has a non-positive dimension")
    return dims


def parse_shapes(text: str, what: str = "--shapes") -> list[tuple[int, ...]]:
    return [parse_shape(item, what) for item in split_list(text, what)]


def shape_name(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


@dataclass(frozen=True)
class Case:
    """One point of a sweep: the axis values in a fixed order, hashable and printable.

    `id` names the case (rows, speedup twins, resume, compare); `input_key` seeds its inputs. The key is made only
    of the axes its family declared as picking inputs (Suite.input_axes), under the labels it declared them with,
    so adding an axis, or renaming one while keeping its label, leaves every input bitwise what it was."""

    values: tuple[tuple[str, Any], ...]
    index: int = field(default=0, compare=False)
    input_axes: tuple[str, ...] = field(default=(), compare=False)  # "axis" or "label=axis", in the key's order

    def __getitem__(self, key: str) -> Any:
        for name, value in self.values:
            if name == key:
                return value
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def replaced(self, **changes: Any) -> "Case":
        """The same case with some values changed (e.g. another batch size for a batch-invariance probe)."""
        return Case(tuple((k, changes.get(k, v)) for k, v in self.values), self.index, self.input_axes)

    @property
    def id(self) -> str:
        return ",".join(f"{name}={format_value(value)}" for name, value in self.values)

    @property
    def input_key(self) -> str:
        """The text every input generator of the case seeds from (with the run's seed and the data seed)."""
        if not self.input_axes:
            raise ValueError(f"case {self.id} has no input axes: its family must declare Suite.input_axes")
        labelled = (entry.split("=", 1) if "=" in entry else (entry, entry) for entry in self.input_axes)
        return ",".join(f"{label}={format_value(self[axis])}" for label, axis in labelled)


def format_value(value: Any) -> str:
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if isinstance(value, tuple):
        return shape_name(value)
    return str(value)


def product(axes: dict[str, Sequence[Any]]) -> list[Case]:
    """Cartesian product of axes, in the order given (last axis varies fastest)."""
    names = list(axes)
    cases = []
    for index, combo in enumerate(itertools.product(*(axes[n] for n in names))):
        cases.append(Case(tuple(zip(names, combo)), index))
    return cases


def reindex(cases: Iterable[Case], input_axes: tuple[str, ...] | None = None) -> list[Case]:
    """The cases numbered in order; `input_axes` (when given) is what seeds their inputs (Case.input_key)."""
    return [Case(c.values, i, c.input_axes if input_axes is None else input_axes) for i, c in enumerate(cases)]
