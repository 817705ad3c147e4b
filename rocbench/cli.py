"""The rocbench command line: one command per suite, plus `env`."""
from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from rocbench.core.errors import InputError

try:  # newer Typer vendors Click; older releases depend on it
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click.exceptions import UsageError
from rocbench.suites import SUITES, suite_module

app = typer.Typer(
    name="rocbench",
    help="Correctness-gated kernel benchmarks: is the fast path right for my shapes, and how much faster is it?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _name in SUITES:
    _module = suite_module(_name)
    if hasattr(_module, "register"):
        _module.register(app)


@app.command("env", help="Platform, devices, versions, and which backends are available here (and why not the others).")
def env() -> int:
    from rocbench.core.platform import detect

    info = detect()
    console = Console()
    console.print(f"platform: [bold]{info.kind}[/bold]  devices: {info.device_count}  host: {info.host}")
    for i, name in enumerate(info.device_names):
        console.print(f"  gpu {i}: {name}")
    if info.sm_count:
        console.print(f"  SMs: {info.sm_count}  L2: {(info.l2_bytes or 0) >> 20} MiB")
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()))
    table = Table(title="backends")
    for column in ("suite", "backend", "available", "why not / what it is"):
        table.add_column(column)
    for name in SUITES:
        module = suite_module(name)
        suite = getattr(module, "SUITE", None)
        if suite is None:
            continue
        world = 2 if name == "allgather" else 1
        for backend in suite.backends:
            reason = backend.unavailable_reason(info, world)
            table.add_row(name, backend.name, "no" if reason else "yes", reason or backend.description,
                          style="dim" if reason else None)
    console.print(table)
    return 0


def main() -> None:
    """Entry point: user errors are one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except InputError as err:
        print(f"rocbench: error: {err}", file=sys.stderr)
        sys.exit(2)
    except UsageError as err:
        print(f"rocbench: error: {err.format_message()}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
