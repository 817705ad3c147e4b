"""The rocbench command line: one command per registered suite (its options generated from the suite's
parameter declarations), plus env, sweep, report, compare and selfcheck."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from rocbench.core.options import DEFAULTS
from rocbench.core.errors import InputError
from rocbench.formats.fp8 import fp8_for_arch

try:  # newer Typer vendors Click; older releases depend on it
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click.exceptions import UsageError
from rocbench.core import registry
from rocbench.core.cli.command import one_line_errors, param_set, register_command

app = typer.Typer(
    name="rocbench",
    help="Correctness-gated kernel benchmarks: is the fast path right for my shapes, and how much faster is it?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_commands: set[str] = set()


def add_suite_commands() -> None:
    """`rocbench <suite>` for every family: the built-in ones, ROCBENCH_SUITES modules and entry points."""
    registry.discover("rocbench.suites")
    for name in registry.names():
        if name not in _commands:
            register_command(app, registry.get(name))
            _commands.add(name)


add_suite_commands()


def default_world_size(suite) -> int:
    """The ranks a run with default options would use (what `env` checks availability for)."""
    try:
        defaults = param_set(suite).parse_cli({})
        return suite.world_size(suite.finish({p.name: defaults[p.name] for p in suite.params}))
    except InputError:
        return 1


@app.command("env", help="Platform, devices, versions, which torch/Triton/AITER run and from where, and which backends "
                          "are available here (and why not the others).")
@one_line_errors
def env(origins: Annotated[bool, typer.Option("--origins", help="Only which Python, torch, Triton and AITER run and "
                                                                "where each comes from.")] = False,
        plugin: Annotated[Optional[list[str]], typer.Option("--plugin", help="Also load backends from this file or "
                                                            "module (repeatable), to see whether they run here.")] = None,
        ) -> int:
    from rocbench.core import plugins
    from rocbench.core.platform import detect, software_origins

    plugins.load_all(plugin)

    console = Console()
    for name, where in software_origins():
        console.print(f"{name}: {where}", soft_wrap=True, highlight=False)
    if origins:
        return 0
    info = detect()
    console.print(f"platform: [bold]{info.label}[/bold]  devices: {info.device_count}  host: {info.host}")
    for i, name in enumerate(info.device_names):
        console.print(f"  gpu {i}: {name}")
    if info.sm_count:
        console.print(f"  SMs: {info.sm_count}  L2: {(info.l2_bytes or 0) >> 20} MiB")
    console.print(f"fp8 (e4m3) here: {str(fp8_for_arch(info.arch)).removeprefix('torch.')}")
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()))
    if info.kind == "rocm":
        console.print(aiter_summary())
    table = Table(title="backends")
    for column in ("suite", "backend", "available", "why not / what it is", "from"):
        table.add_column(column, overflow="fold")
    paths = []
    for name in registry.names():
        suite = registry.get(name)
        world = default_world_size(suite)
        for backend in suite.backends:
            reason = backend.unavailable_reason(info, world)
            origin = suite.backends.origins.get(backend.name, "")
            table.add_row(name, backend.name, "no" if reason else "yes", reason or backend.description,
                          "rocbench" if "/rocbench/suites/" in origin else origin, style="dim" if reason else None)
            if reason is None:
                paths.append((name, backend, backend.paths_here(info)))
    console.print(table)
    for name, backend, rows in paths:
        if rows:
            sub = Table(title=f"{name} / {backend.name}: paths on {info.label}")
            for column in rows[0]:
                sub.add_column(column, overflow="fold")
            for row in rows:
                sub.add_row(*[str(v) for v in row.values()])
            console.print(sub)
    return 0


def aiter_summary() -> str:
    from rocbench.rocm import aiter_install

    try:
        return (f"AITER: version {aiter_install.version() or 'unknown'}, commit {aiter_install.git_commit() or 'unknown'}, "
                f"kernel tables in {aiter_install.asm_dir()}")
    except Exception as err:  # noqa: BLE001 - AITER fails to import in many ways
        return f"AITER: not importable ({type(err).__name__}: {err})"


@app.command("sweep", help="Run a YAML config: any mix of suites and axes, into one sweep directory, then write its report.")
@one_line_errors
def sweep(
    config: Annotated[Path, typer.Argument(help="YAML file (see configs/).")],
    out: Annotated[Path, typer.Option("--out", help="Directory that receives sweep-<name>-<timestamp>/.")] = Path("results"),
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Also write JUnit XML: one test case per row of every run.")] = None,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the whole file and print what would run; run nothing.")] = False,
    write_report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.md with plots at the end.")] = True,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Finish the interrupted sweep in this directory: "
                                                   "finished runs are kept, a partial run resumed, the rest run.")] = None,
) -> int:
    from rocbench.core.cli.config import run_config

    return run_config(config, out, junit, json_summary, dry_run, write_report, resume)


@app.command("report", help="Write a markdown report (report.md plus PNGs) for a run or sweep directory.")
@one_line_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A results/<suite>-<time> or results/sweep-<name>-<time> directory.")]) -> int:
    from rocbench.core.reporting.report import write_report

    path = write_report(run_dir)
    print(f"report: {path}")
    return 0


@app.command("compare", help="Compare two runs or sweeps row by row; exit 1 on a regression beyond noise and threshold, "
                              "or a gate that went from pass to fail; exit 4 when rows of the base are missing in the new.")
@one_line_errors
def compare(
    base: Annotated[Path, typer.Argument(help="Baseline run or sweep directory.")],
    new: Annotated[Path, typer.Argument(help="New run or sweep directory.")],
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, help="Relative slowdown that counts (0.05 = 5%), on top of being beyond noise.")] = 0.05,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Also write the comparison as markdown to this file.")] = None,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")] = False,
) -> int:
    import json

    from rocbench.core.reporting import compare as cmp
    from rocbench.core.harness.sweep import check_writable

    if markdown is not None:
        check_writable(markdown, "--markdown")
    result = cmp.compare(base, new, threshold)
    text = cmp.to_markdown(result, base, new, threshold)
    if markdown is not None:
        markdown.write_text(text)
    code = result.exit_code
    if json_summary:
        print(json.dumps({"exit_code": int(code), "outcome": code.meaning, "matched": len(result.table),
                          "regressions": cmp.regression_records(result),
                          "gate_flips": result.gate_flips[cmp.KEY + ["status_new", "detail_new"]].to_dict("records"),
                          "missing_in_new": result.only_base.to_dict("records"),
                          "only_in_new": result.only_new.to_dict("records")}, default=str))
    else:
        print(text)
    return int(code)


@app.command("selfcheck", help="GPU: prove the two times against kernels of known duration (spin kernels) and "
                                "show them on known work (copies, bf16 GEMMs); exit 1 if a time misses its criterion.")
@one_line_errors
def selfcheck(
    out: Annotated[Path, typer.Option("--out", help="Directory for selfcheck-<timestamp>/ (meta.json, CSVs).")] = Path("results"),
    max_noise: Annotated[float, typer.Option("--max-noise", min=0.0, help="Percent noise of the median that ends sampling.")] = DEFAULTS.max_noise_pct,
    max_time: Annotated[float, typer.Option("--max-time", min=0.01, help="Seconds of sampling per time.")] = DEFAULTS.max_time_s,
) -> int:
    import pandas as pd
    import torch
    from tabulate import tabulate

    from rocbench.core.results import new_run_dir, write_meta
    from rocbench.core.harness.selfcheck import run_selfcheck

    from rocbench.core.platform import detect

    if not detect().has_gpu:
        raise InputError("selfcheck needs a GPU; this machine has none")
    result = run_selfcheck(torch.device("cuda", 0), detect().cache_bytes or 0, max_noise, max_time)
    run_dir = new_run_dir(out, "selfcheck")
    write_meta(run_dir, result)
    spin, work = pd.DataFrame(result["spin"]), pd.DataFrame(result["known_work"])
    spin.to_csv(run_dir / "spin.csv", index=False)
    work.to_csv(run_dir / "known_work.csv", index=False)
    print(f"device: {result['device']}; copy bandwidth (eager SM copy, read+write): {result['copy_bw_GBps']:.0f} GB/s")
    print(f"criterion: kernel_us {result['criterion']['kernel_us']}; graph_us {result['criterion']['graph_us']}")
    print(tabulate(spin, headers="keys", floatfmt=".3f", showindex=False))
    print(tabulate(work, headers="keys", floatfmt=".2f", showindex=False))
    print("\n".join(result["explanation"]))
    print(f"{'PASS' if result['passed'] else 'FAIL'}; results: {run_dir}")
    return 0 if result["passed"] else 1


def main() -> None:
    """Entry point: user errors are one line on stderr and exit code 2 (the commands print them)."""
    try:
        code = app(standalone_mode=False)
    except typer.Exit as done:
        code = done.exit_code
    except UsageError as err:  # Typer's own parsing (an unknown option, a missing value)
        print(f"rocbench: error: {err.format_message()}", file=sys.stderr)
        code = 2
    except typer.Abort:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
