"""A suite's command: its own parameters plus the ones every suite shares, parsed the same way from the
command line and from YAML, then run.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

from rocbench.core import plugins
from rocbench.core.cli import options
from rocbench.core.errors import InputError
from rocbench.core.exitcodes import Outcome
from rocbench.core.options import DEFAULTS, RunOptions, default_text
from rocbench.core.results import read_meta
from rocbench.core.params import Param, ParamSet, choices, flag, integer, items, names, number, path, text

COMMON = (
    Param("plugins", "Load backends from this Python file or module (repeatable, or a comma list): they register "
                     "with the decorator the built-ins use and run through the same gates.", items(), metavar="FILE",
          multiple=True, cli_flag="--plugin"),
    Param("backends", "Comma list of backends to run (default: every backend available on this platform except "
                      "the batch-invariant variants such as triton_det and on-request ones such as moe's triton_layout, which "
                      "run when named; the baseline always runs first).", names(), metavar="LIST"),
    flag("correctness_only", "Gate every backend, time nothing; exit 0 only if every case passed."),
    flag("cuda_graph", "Also capture each backend in a CUDA graph (inputs at non-zero offsets) and check every "
                       "replay with fresh data."),
    flag("skip_batch_probes", "Do not run the batch-invariance probes (batch_invariant says skipped): for runs "
                               "that test something else, e.g. the fault matrix on CI."),
    flag("require_batch_invariant", "Fail a row whose backend is not batch-invariant (its probe request's output "
                                     "changes with the rest of the batch); without it that is reported, not failed."),
    flag("tune", "Also gate and time every kernel config a backend offers for each case; the fastest is stored "
                 "for this device (ROCBENCH_TUNED_CONFIGS, default ~/.cache/rocbench) and the kernels load it."),
    Param("iters", "A fixed number of samples per time instead of the noise rule (a graph-time sample replays "
                   "many back-to-back calls; a kernel-time sample is one profiled call).", integer(1)),
    Param("max_noise", "Sample each time until the relative noise of its median (half its 95% confidence "
                       "interval) is below this many percent...", number(0.0), default_text(DEFAULTS.max_noise_pct),
          metavar="PCT"),
    Param("max_time", "...or until this many seconds of sampling per time per case and backend.", number(0.01),
          default_text(DEFAULTS.max_time_s), metavar="S"),
    Param("times", "Which times to take: kernel (profiler records, launch gaps excluded) and/or graph (CUDA "
                   "graph of back-to-back calls).", choices(("kernel", "graph")), default_text(DEFAULTS.times),
          metavar="LIST"),
    flag("save_samples", "Also write every timing sample, in the order taken, to samples.csv beside results.csv "
                         "(one line per sample: case, backend, time, index, us; a dropped sample's us empty): a "
                         "row's distribution and drift, which its median and p10/p90 summarize."),
    Param("warmup", "Untimed graph replays before the samples, and more where those take under 30 ms (0: none).",
          integer(0), default_text(DEFAULTS.warmup)),
    Param("seed", "Seed of every generated input.", integer(), default_text(DEFAULTS.seed)),
    Param("timeout", "Seconds one (case, backend) may take before it is recorded as a timeout.", number(1.0),
          default_text(DEFAULTS.timeout_s)),
    Param("out", "Directory that receives <suite>-<timestamp>/ with results.csv, meta.json and plots.", path(),
          "results", in_yaml=False),
    Param("resume", "Finish an interrupted run in this directory: only the missing (case, backend) rows run.",
          path(), in_yaml=False),
    Param("junit", "Also write a JUnit XML file: one test case per row, failures carry the gate's detail.", path(),
          in_yaml=False),
    flag("json", "Print a machine-readable JSON summary on stdout (the table goes to stderr).", in_yaml=False),
    flag("dry_run", "Validate the options, print how many cases would run, about how long they take and the "
                    "largest case's memory; run nothing.", in_yaml=False),
    Param("columns", "The terminal table's columns (CSV column names, or speedup) instead of the compact default: "
                     "the axes that vary, backend, status, both times, the headline rate and the speedup that "
                     "applies.", names(), metavar="LIST", in_yaml=False),
    flag("wide", "Show every column the terminal table can have (the CSV has all of them).", in_yaml=False),
    Param("inject", "Test only: mutate backend outputs (needs ROCBENCH_ALLOW_INJECT=1).", text(), hidden=True),
)
# RunOptions fields whose option keeps the name users type (the field's name says its unit); every other field is
# its option's name, except what a run measures rather than is told
OPTION_OF_FIELD = {"max_noise_pct": "max_noise", "max_time_s": "max_time", "timeout_s": "timeout"}
MEASURED_FIELDS = ("roofline",)


def param_set(suite) -> ParamSet:
    return ParamSet([*suite.params, *COMMON])


def suite_params(suite, raw: dict) -> dict:
    """A suite's parameters from command-line texts (defaults for the rest), checked and completed."""
    values = param_set(suite).parse_cli(raw)
    params = suite.finish({p.name: values[p.name] for p in suite.params})
    params["backends"] = values["backends"]
    return params


# Where a run goes and what it prints: not part of what the run is, so a resumed run may name them anew.
IO_OPTIONS = ("out", "resume", "junit", "json", "dry_run", "columns", "wide")


def recorded_options(suite, values: dict) -> dict:
    """The options that make a run what it is (all but IO_OPTIONS), as the command line writes them: kept in
    meta.json, so that --resume runs exactly the same cases with the same options."""
    return {p.name: p.text_of(values[p.name]) for p in param_set(suite).params if p.name not in IO_OPTIONS}


def resumed_values(suite, run_dir: Path, given: dict) -> dict:
    """A resumed run's option values: its own, from meta.json. An option named again must agree with them."""
    meta = read_meta(run_dir, "--resume")
    if meta.get("suite") != suite.name:
        raise InputError(f"--resume {run_dir}: that run is a {meta.get('suite')} run, not {suite.name}")
    stored = meta.get("run_options")
    if stored is None:
        raise InputError(f"--resume {run_dir}: that run does not record its options (an older rocbench wrote it); "
                         "start a new run")
    params = param_set(suite)
    for name, value in given.items():
        if name not in IO_OPTIONS and params[name].text_of(value) != stored.get(name):
            flag = params[name].flag
            raise InputError(f"--resume {run_dir}: {flag} {shown(params[name].text_of(value))} conflicts with the "
                             f"run's {flag} {shown(stored.get(name))} (a resumed run keeps its options; start a new "
                             "run for other ones)")
    values = params.parse_cli(stored)
    values.update({name: given[name] for name in IO_OPTIONS if name in given})
    return values


def shown(text) -> str:
    if isinstance(text, bool):
        return "on" if text else "off"
    return "(not set)" if text is None else str(text)


def execute(suite, given: dict, started=None, console=None) -> Outcome:
    """Run with the options the user gave (parsed; the others take their defaults, or a resumed run's own).
    `started(run_dir)` is told where the rows go as soon as the run directory exists; `console` (default: the
    terminal, stderr with --json) takes everything but the JSON. InputError propagates."""
    from rocbench.core.reporting.report import TableView
    from rocbench.core.harness.sweep import run_suite

    if given.get("resume") is not None:
        values = resumed_values(suite, Path(given["resume"]), given)
    else:
        values = {**param_set(suite).parse_cli({}), **given}
    plugins.load_all(values["plugins"])  # before the backends are chosen
    answer = suite.before_run(values)
    if answer is not None:
        return Outcome(answer, None)
    params = suite.finish({p.name: values[p.name] for p in suite.params})
    params["backends"], params["plugins"] = values["backends"], values["plugins"]  # the ranks load the same plugins
    opts = run_options(values)
    return run_suite(suite, params, opts, values["out"], resume=values["resume"], junit=values["junit"],
                     as_json=values["json"], dry_run=values["dry_run"], recorded=recorded_options(suite, values),
                     started=started, console=console, view=TableView(values["columns"], values["wide"]))


def run_options(values: dict) -> RunOptions:
    """The run's options from the parsed option values (lists frozen into tuples)."""
    taken = {f.name: values[OPTION_OF_FIELD.get(f.name, f.name)] for f in dataclasses.fields(RunOptions)
             if f.name not in MEASURED_FIELDS}
    return RunOptions(**{name: tuple(v) if isinstance(v, list) else v for name, v in taken.items()})


def one_line_errors(fn):
    """A command whose bad input is one line on stderr and exit 2, and whose int result is its exit code,
    whether run by `rocbench` or by Typer's CliRunner."""
    import typer

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            code = fn(*args, **kwargs)
        except InputError as err:
            print(f"rocbench: error: {err}", file=sys.stderr)
            raise typer.Exit(2) from None
        if code:
            raise typer.Exit(code)
        return 0
    return wrapper


def register_command(app, suite) -> None:
    """`rocbench <suite>`: one option per parameter, generated from the declarations."""
    params = param_set(suite)

    def command(**raw) -> int:
        given = {p.name: p.value(raw[p.name]) for p in params.params if p.given(raw[p.name])}
        return execute(suite, given).code

    command.__signature__ = options.signature(params)
    command.__name__ = suite.name
    app.command(suite.name, help=suite.help)(one_line_errors(command))
