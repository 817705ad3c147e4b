"""Suite commands: each suite declares its own options once; the CLI and YAML sweeps both use them.

A SuiteCommand turns option values (from the command line or a config file) into validated suite
parameters and run options, then runs the sweep. The options every suite shares are declared here,
once, and appended to each suite's own.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from rocbench.core.axes import split_list
from rocbench.core.harness import RunOptions

Option = tuple[Any, Any]  # (Annotated type with a typer.Option, default)

COMMON_OPTIONS: dict[str, Option] = {
    "backends": (Annotated[Optional[str], typer.Option("--backends", help="Comma list of backends to run (default: every backend available on this platform; the baseline always runs first).")], None),
    "correctness_only": (Annotated[bool, typer.Option("--correctness-only", help="Gate every backend, time nothing; exit 0 only if every case passed.")], False),
    "cuda_graph": (Annotated[bool, typer.Option("--cuda-graph/--no-cuda-graph", help="Also capture each backend in a CUDA graph (inputs at non-zero offsets) and check every replay with fresh data.")], False),
    "iters": (Annotated[int, typer.Option("--iters", min=1, help="Timed samples per case (each sample replays a graph of many calls).")], 30),
    "warmup": (Annotated[int, typer.Option("--warmup", min=0, help="Untimed graph replays before the samples.")], 5),
    "out": (Annotated[Path, typer.Option("--out", help="Directory that receives <suite>-<timestamp>/ with results.csv, meta.json and plots.")], Path("results")),
    "seed": (Annotated[int, typer.Option("--seed", help="Seed of every generated input.")], 0),
    "timeout": (Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds one (case, backend) may take before it is recorded as a timeout.")], 300.0),
    "resume": (Annotated[Optional[Path], typer.Option("--resume", help="Finish an interrupted run in this directory: only the missing (case, backend) rows run.")], None),
    "junit": (Annotated[Optional[Path], typer.Option("--junit", help="Also write a JUnit XML file: one test case per row, failures carry the gate's detail.")], None),
    "json": (Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout (the table goes to stderr).")], False),
    "dry_run": (Annotated[bool, typer.Option("--dry-run", help="Validate the options and print how many cases would run; run nothing.")], False),
    "inject": (Annotated[Optional[str], typer.Option("--inject", hidden=True, help="Test only: mutate backend outputs (needs ROCBENCH_ALLOW_INJECT=1).")], None),
}
RUN_OPTION_NAMES = ("correctness_only", "cuda_graph", "iters", "warmup", "seed", "timeout", "inject")


@dataclass
class SuiteCommand:
    suite: str
    help: str
    options: dict[str, Option]  # the suite's own options, name -> (annotated type, default)
    build_params: Callable[..., dict]  # (**suite option values, backends=list|None) -> validated params
    before_run: Optional[Callable[[dict], Optional[int]]] = None  # may answer instead of running (e.g. --explain)
    all_options: dict[str, Option] = field(init=False)

    def __post_init__(self) -> None:
        self.all_options = {**self.options, **COMMON_OPTIONS}

    def defaults(self) -> dict:
        return {name: default for name, (_, default) in self.all_options.items()}

    def option_flag(self, name: str) -> str:
        """The command-line spelling of an option (`--ctx-dist` for ctx_dist)."""
        return "--" + name.replace("_", "-")

    def params(self, values: dict) -> dict:
        suite_values = {k: values[k] for k in self.options}
        return self.build_params(**suite_values, backends=backend_list(values["backends"]))

    def execute(self, values: dict) -> int:
        """Run with option values (defaults filled in). InputError propagates: the caller reports it."""
        from rocbench.core.sweep import run_suite
        from rocbench.suites import load_suite

        values = {**self.defaults(), **values}
        if self.before_run is not None:
            answer = self.before_run(values)
            if answer is not None:
                return answer
        params = self.params(values)
        opts = RunOptions(**{name: values[name] for name in RUN_OPTION_NAMES if name != "timeout"},
                          timeout_s=values["timeout"])
        return run_suite(load_suite(self.suite), params, opts, values["out"], resume=values["resume"],
                         junit=values["junit"], as_json=values["json"], dry_run=values["dry_run"])

    def register(self, app: typer.Typer) -> None:
        """Add `rocbench <suite>` with the suite's options and the common ones."""

        def command(**values) -> int:
            return self.execute(values)

        parameters = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                      for name, (annotation, default) in self.all_options.items()]
        command.__signature__ = inspect.Signature(parameters, return_annotation=int)
        command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": int}
        command.__name__ = self.suite
        app.command(self.suite, help=self.help)(command)


def backend_list(text: str | None) -> list[str] | None:
    return [name.lower() for name in split_list(text, "--backends")] if text else None
