"""Drive one suite's run: validate, take the ranks from rocbench's own pool or from the world a launcher made
(torchrun, srun), and let the recorder write rows, plots and the table."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import Callable

from rich.console import Console

from rocbench.core.faults import inject

from rocbench.core.harness import launcher

from rocbench.core import registry
from rocbench.core.axes import Case, dtype_name
from rocbench.core.exitcodes import Outcome
from rocbench.core.errors import InputError, NotEnoughGpus
from rocbench.core.options import RunOptions
from rocbench.core.roofline import Roofline
from rocbench.core.harness.isolate import PoolExecutor, free_port
from rocbench.core.platform import PlatformInfo, detect
from rocbench.core.harness.ranks import PoolSpec, RankWorker
from rocbench.core.harness.estimate import dry_run_plan
from rocbench.core.harness.recorder import RunRecorder
from rocbench.core.reporting.report import COMPACT, TableView, check_columns
from rocbench.core.results import columns_for
from rocbench.core.suite import Backend, Suite

# gloo ranks on a CPU-only machine are processes, not devices: past this many a sweep only thrashes the host.
MAX_CPU_RANKS = 64


def choose_backends(suite: Suite, requested: list[str] | None, platform: PlatformInfo, world_size: int) -> list[Backend]:
    names = suite.backends.names()
    if requested:
        for name in requested:
            if name not in names:
                raise InputError(f"--backends: unknown backend {name!r} for {suite.name} (choose from {', '.join(names)})")
        chosen = [suite.backends.get(n) for n in names if n in requested]  # baseline first, always
        for backend in chosen:
            reason = backend.unavailable_reason(platform, world_size)
            if reason:
                raise InputError(f"--backends: {backend.name} is not available here: {reason}")
        return chosen
    # Batch-invariant variants (deterministic_of) and other on-request ones run when named: they answer a question
    # of their own and would double every default sweep.
    reasons = {b.name: b.unavailable_reason(platform, world_size) for b in suite.backends}
    chosen = [b for b in suite.backends if reasons[b.name] is None and not (b.deterministic_of or b.on_request)]
    if not chosen:
        why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
        raise InputError(f"no {suite.name} backend is available on this {platform.kind} machine ({why})")
    return chosen


def refuse_interpreter_dtypes(suite: Suite, backends: list[Backend], cases: list[Case], platform: PlatformInfo) -> None:
    """Triton's CPU interpreter computes some dtypes' dot products wrong (bf16): refuse such a run up front, naming
    what to use instead, rather than record the kernel's false failures."""
    for backend in backends:
        if not backend.runs_interpreted(platform):
            continue
        for column, wrong in backend.interpreter_wrong_dtypes.items():
            used = sorted({dtype_name(case[column]) for case in cases if case.get(column) in wrong})
            if not used:
                continue
            param = next(p for p in suite.params if p.column == column)
            instead = f"; use {param.flag} {param.cpu_default} here" if param.cpu_default else ""
            raise InputError(f"{param.flag} {','.join(used)}: Triton's CPU interpreter computes {'/'.join(used)} dot "
                             f"products wrong, so the {backend.name} backend's rows would fail falsely{instead} "
                             f"({'/'.join(used)} runs on a GPU)")


def check_world_size(world_size: int, platform: PlatformInfo, me: launcher.LaunchedRank | None = None) -> None:
    if me is not None:  # the launcher made the ranks: tp must fit its world
        from rocbench.core.harness.world import check_tp

        check_tp(world_size, me, platform)
        return
    if platform.has_gpu and world_size > platform.device_count:
        raise NotEnoughGpus(f"tp {world_size}: needs {world_size} GPUs, this machine has {platform.device_count}")
    if not platform.has_gpu and world_size > MAX_CPU_RANKS:
        raise InputError(f"tp {world_size}: this machine has no GPU and runs at most {MAX_CPU_RANKS} gloo ranks")


def make_console(to_stderr: bool = False, quiet: bool = False) -> Console:
    console = Console(stderr=to_stderr, quiet=quiet)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200, stderr=to_stderr, quiet=quiet)  # logs and CI: wide tables beat folded ones
    return console


def run_suite(suite: Suite, params: dict, opts: RunOptions, out_dir: Path, console: Console | None = None,
              resume: Path | None = None, junit: Path | None = None, as_json: bool = False,
              dry_run: bool = False, recorded: dict | None = None,
              started: Callable[[Path], None] | None = None, view: TableView = COMPACT) -> Outcome:
    """Run the sweep; the outcome holds the exit code (rocbench.core.exitcodes) and the run directory. Under a
    launcher every process calls this: rank 0 records, the others run their share and print nothing. A --resume
    target's metadata was checked by command.execute (resumed_values); its rows are read once it is locked."""
    me = launcher.detect()
    records_here = me is None or me.is_recorder
    console = make_console(quiet=True) if not records_here else console or make_console(to_stderr=as_json)
    inject.check_allowed(opts.inject)
    platform = detect()
    world_size = suite.world_size(params)
    check_world_size(world_size, platform, me)
    if opts.cuda_graph and not platform.has_gpu:
        raise InputError("--cuda-graph needs a GPU; this machine has none")
    if opts.tune and (not platform.has_gpu or opts.correctness_only):
        raise InputError("--tune times kernels: it needs a GPU and no --correctness-only")
    if not platform.has_gpu and not opts.correctness_only:
        console.print("[yellow]no GPU here: running correctness-only (timing needs a GPU)[/yellow]")
        opts = dataclasses.replace(opts, correctness_only=True)
    backends = choose_backends(suite, params.get("backends"), platform, world_size)
    cases = suite.cases(params)
    if not cases:
        raise InputError("the sweep has no cases")
    refuse_interpreter_dtypes(suite, backends, cases, platform)
    check_columns(view.columns, columns_for(suite))
    if dry_run:
        plan = dry_run_plan(suite, cases, backends, world_size, opts, platform)
        console.print(f"{suite.name}: {len(cases)} cases x {len(backends)} backends ({', '.join(b.name for b in backends)}), "
                      f"{world_size} rank(s): valid, nothing run (--dry-run)")
        console.print(plan["estimate"]["text"], highlight=False)
        if as_json and records_here:
            print(json.dumps(plan, default=str))
        return Outcome(0, None)
    if junit is not None and records_here:
        check_writable(Path(junit))
    if me is not None:
        return run_launched(me, suite, params, opts, platform, backends, cases, out_dir, resume, console, junit,
                            as_json, recorded, view)

    recorder = RunRecorder.open(suite, params, opts, platform, backends, cases, out_dir, resume, console, recorded)
    recorder.world_size, recorder.view = world_size, view
    if started is not None:
        started(recorder.run_dir)
    announce(recorder, platform, world_size, "")
    resumed_roofline = Roofline.from_meta(recorder.meta)
    if resumed_roofline:  # resumed: the run's own numbers
        opts = dataclasses.replace(opts, roofline=resumed_roofline)
    spec = PoolSpec(suite.name, registry.module_of(suite.name), params, opts, world_size, free_port())
    devices = "cpu" if not platform.has_gpu else ",".join(f"cuda:{rank}" for rank in range(world_size))
    executor = PoolExecutor(spec, opts.timeout_s, {"hosts": platform.host, "devices": devices},
                            on_roofline=recorder.note_roofline)
    try:
        recorder.drive(executor)
    except KeyboardInterrupt:
        recorder.interrupted = True
        executor.abort()
        console.print("[red]interrupted: the finished rows are in results.csv[/red]")
    finally:
        executor.close()
    return recorder.finish(junit, as_json)


def run_launched(me: launcher.LaunchedRank, suite: Suite, params: dict, opts: RunOptions, platform: PlatformInfo,
                 backends: list[Backend], cases: list[Case], out_dir: Path, resume: Path | None, console: Console,
                 junit: Path | None, as_json: bool, recorded: dict | None, view: TableView) -> Outcome:
    """Join the launcher's world; rank 0 records, every rank runs its TP group's share of the tasks."""
    from rocbench.core.harness import world
    from rocbench.core.harness.launched import LaunchedExecutor, LaunchEnded

    tp = suite.world_size(params)
    joined = world.join(me, tp, platform, opts.seed, opts.cuda_graph, opts.timeout_s,
                        measure_roofline=not opts.correctness_only)
    executor = LaunchedExecutor(joined, RankWorker(suite, cases, joined.ctx, opts), opts.timeout_s)
    if not me.is_recorder:
        code = executor.serve()
        if code == 0:
            world.leave()
        return Outcome(code, None)
    try:
        recorder = RunRecorder.open(suite, params, opts, platform, backends, cases, out_dir, resume, console, recorded)
    except InputError:
        executor.abort()  # the other ranks exit with code 2; this one prints why
        raise
    recorder.world_size, recorder.view = tp, view
    recorder.meta["launcher"] = {"kind": me.launcher, "world_size": me.world_size, "tp": tp, "groups": joined.groups,
                                 "nodes": joined.nodes()}
    if joined.ctx.roofline:
        recorder.note_roofline(joined.ctx.roofline)
    announce(recorder, platform, tp, f", {me.launcher} world of {me.world_size}: {joined.groups} group(s) side by side")

    def ended_by_time_limit(rows, why, unfinished) -> int:  # the watchdog thread; every rank exits after it
        recorder.end_early(rows, why, unfinished)
        return recorder.finish(junit, as_json).code

    executor.on_ended = ended_by_time_limit
    signal.signal(signal.SIGTERM, interrupt)  # a launcher stops its ranks with SIGTERM: record, then stop
    try:
        recorder.drive(executor)
        executor.close()
    except LaunchEnded as ended:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the launcher stops the job now: finish recording first
        recorder.end_early([], ended.why, ended.unfinished)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        recorder.interrupted = True
        recorder.stopped_during(executor.in_flight, "stopped by a signal: the launcher ended the job")
        console.print(f"[red]interrupted: the finished rows are in results.csv; relaunch with --resume "
                      f"{recorder.run_dir} to run the rest[/red]")
    outcome = recorder.finish(junit, as_json)
    if recorder.ended is None and not recorder.interrupted:
        world.leave()
    return outcome


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def announce(recorder: RunRecorder, platform: PlatformInfo, ranks: int, how: str) -> None:
    recorder.console.print(f"rocbench {recorder.suite.name}: {len(recorder.cases)} cases x {len(recorder.backends)} "
                           f"backends on {platform.kind} ({ranks} rank{'s' if ranks > 1 else ''}{how}) -> "
                           f"{recorder.run_dir}")


def check_writable(path: Path, flag: str = "--junit") -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{flag} {path}: directory {parent} is not writable")
