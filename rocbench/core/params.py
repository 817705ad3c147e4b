"""Options declared once, as data: each Param makes its command-line option, its YAML key, its
validation message and (for an axis) its CSV column.

A command-line value and a YAML value go through the same parser, so both reject the same bad value
with the same message (YAML only adds where: file, line, key). Parsers take (text, flag) and raise
InputError naming the flag.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from rocbench.core.axes import (format_value, parse_choices, parse_dtypes, parse_ints, parse_shapes, split_list)
from rocbench.core.errors import InputError

Parser = Callable[[str, str], Any]  # (text, flag) -> value

TEXT, FLAG, TRISTATE = "text", "flag", "tristate"


@dataclass(frozen=True)
class Param:
    """One option. `axis`: its parsed value is a list the sweep runs over (one value per case)."""

    name: str
    help: str
    parse: Parser | None = None  # None for flags
    default: Any = None  # text (parsed like a user's) for TEXT; bool for FLAG; None: not given
    kind: str = TEXT
    axis: bool = False
    column: str | None = None  # CSV column; axes default to their name
    fmt: Callable[[Any], Any] = format_value  # value -> CSV cell
    in_yaml: bool = True  # sweep-level options (out, junit, ...) belong to `rocbench sweep` itself
    hidden: bool = False
    metavar: str | None = None
    # The default on a machine without a GPU, where Triton kernels run under the CPU interpreter: for a dtype
    # the interpreter computes wrong there (bf16 dot products), one it computes right.
    cpu_default: str | None = None
    multiple: bool = False  # the option may be given several times (its values join one list)
    cli_flag: str | None = None  # the command-line flag, where it is not --<name> (e.g. --plugin for plugins)

    def __post_init__(self):
        if self.axis and self.column is None:
            object.__setattr__(self, "column", self.name)

    @property
    def flag(self) -> str:
        return self.cli_flag or "--" + self.name.replace("_", "-")

    def value(self, raw: Any) -> Any:
        """The parsed value of a command-line input (None: the default)."""
        if self.kind != TEXT:
            return self.default if raw is None else bool(raw)
        if isinstance(raw, (list, tuple)):  # a repeated option
            raw = ",".join(raw) if raw else None
        text = self.default_here() if raw is None else raw
        return None if text is None else self.parse(str(text), self.flag)

    def text_of(self, value: Any) -> Any:
        """The value as the command line writes it: value(text_of(v)) == v (a run's stored options)."""
        if self.kind != TEXT or value is None:
            return value
        if isinstance(value, list):
            return ",".join(format_value(item) for item in value)
        return format_value(value)

    def given(self, raw: Any) -> bool:
        """Whether the command line named this option (Typer hands a flag its default when it is not named)."""
        return raw is not None and raw != [] and (self.kind != FLAG or raw != self.default)

    def default_here(self) -> Any:
        """The default on this machine (cpu_default where there is no GPU)."""
        if self.cpu_default is not None:
            from rocbench.core.platform import detect

            if detect().kind == "cpu":
                return self.cpu_default
        return self.default

    def from_yaml(self, raw: Any) -> Any:
        """A YAML value, checked for its shape, then through the same parser as the command line."""
        if raw is None:
            return self.value(None)
        if self.kind != TEXT:
            if not isinstance(raw, bool):
                raise InputError(f"{self.flag}: expected true or false, got {raw!r}")
            return raw
        if isinstance(raw, list):
            if not self.axis and not self.multiple:
                raise InputError(f"{self.flag}: takes one value, not a list (use `each:` to run once per value)")
            raw = ",".join(str(v) for v in raw)
        elif isinstance(raw, (dict, bool)):
            raise InputError(f"{self.flag}: expected {'a list or ' if self.axis else ''}a value, got {raw!r}")
        return self.parse(str(raw), self.flag)


def flag(name: str, help: str, default: bool = False, **kw) -> Param:
    return Param(name, help, default=default, kind=FLAG, **kw)


def tristate(name: str, help: str, **kw) -> Param:
    return Param(name, help, default=None, kind=TRISTATE, **kw)


# ---- parsers ------------------------------------------------------------------------------------

def ints(minimum: int | None = None, allowed: Iterable[int] | None = None) -> Parser:
    allowed = tuple(allowed) if allowed is not None else None
    return lambda text, what: parse_ints(text, what, minimum=minimum, allowed=allowed)


def _scalar(kind: type, noun: str, minimum: float | None) -> Parser:
    def parse(text: str, what: str):
        try:
            value = kind(text.strip())
        except ValueError:
            raise InputError(f"{what}: {text!r} is not {noun}") from None
        if minimum is not None and value < minimum:
            raise InputError(f"{what}: {value:g} is below the minimum {minimum:g}")
        return value
    return parse


def integer(minimum: int | None = None) -> Parser:
    return _scalar(int, "an integer", minimum)


def number(minimum: float | None = None) -> Parser:
    return _scalar(float, "a number", minimum)


def choices(options: Sequence[str]) -> Parser:
    return lambda text, what: parse_choices(text, what, options)


def one_of(options: Sequence[str]) -> Parser:
    def parse(text: str, what: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise InputError(f"{what}: unknown value {value!r} (choose from {', '.join(options)})")
        return value
    return parse


def dtypes(allowed: Sequence[torch.dtype], fp8: Callable[[], torch.dtype] | None = None) -> Parser:
    """A dtype list; `fp8()` says which e4m3 flavour the alias "fp8" means on this platform."""
    return lambda text, what: parse_dtypes(text, allowed, what, fp8=fp8() if fp8 else None)


def shapes() -> Parser:
    return lambda text, what: parse_shapes(text, what)


def names() -> Parser:
    return lambda text, what: [item.lower() for item in split_list(text, what)]


def items() -> Parser:
    """A comma list kept as written (file paths keep their case)."""
    return lambda text, what: split_list(text, what)


def text() -> Parser:
    return lambda value, what: value


def path() -> Parser:
    return lambda value, what: Path(value)


# ---- a command's parameters -----------------------------------------------------------------------

@dataclass
class ParamSet:
    """A command's parameters in order: parsing from the command line or a YAML mapping."""

    params: list[Param] = field(default_factory=list)

    def __post_init__(self):
        seen = set()
        for p in self.params:
            if p.name in seen:
                raise ValueError(f"parameter {p.name} is declared twice")
            seen.add(p.name)

    def __getitem__(self, name: str) -> Param:
        return self.by_name()[name]

    def __contains__(self, name: str) -> bool:
        return name in self.by_name()

    def by_name(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def parse_cli(self, raw: dict) -> dict:
        return {p.name: p.value(raw.get(p.name)) for p in self.params}

    def yaml_keys(self) -> list[str]:
        return [p.name for p in self.params if p.in_yaml and not p.hidden]
