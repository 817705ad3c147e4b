"""Drive one suite's sweep: validate, launch rank pools, record rows, draw plots, print the table."""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rocbench.core import inject, plots, report
from rocbench.core.junit import write_junit
from rocbench.core.axes import Case
from rocbench.core.errors import InputError, NotEnoughGpus
from rocbench.core.harness import RunOptions
from rocbench.core.isolate import PoolFailure, RankPool, free_port
from rocbench.core.platform import PlatformInfo, detect, git_revision
from rocbench.core.ranks import GATE_STAGE, KERNEL_STAGE, PoolSpec
from rocbench.core.results import (BAD_STATUSES, FAULT, PASS, TIMES, ResultsWriter, base_meta, columns_for,
                                   new_run_dir, read_results, speedup_column, write_meta)
from rocbench.core import registry
from rocbench.core.command import Outcome
from rocbench.core.suite import Backend, Speedup, Suite

POOL_START_TIMEOUT_S = 240.0
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
    # Batch-invariant variants (deterministic_of) run when named: they answer a question of their own and
    # would double every default sweep.
    reasons = {b.name: b.unavailable_reason(platform, world_size) for b in suite.backends}
    chosen = [b for b in suite.backends if reasons[b.name] is None and not b.deterministic_of]
    if not chosen:
        why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
        raise InputError(f"no {suite.name} backend is available on this {platform.kind} machine ({why})")
    return chosen


def check_world_size(world_size: int, platform: PlatformInfo) -> None:
    if platform.has_gpu and world_size > platform.device_count:
        raise NotEnoughGpus(f"tp {world_size}: needs {world_size} GPUs, this machine has {platform.device_count}")
    if not platform.has_gpu and world_size > MAX_CPU_RANKS:
        raise InputError(f"tp {world_size}: this machine has no GPU and runs at most {MAX_CPU_RANKS} gloo ranks")


def make_console(to_stderr: bool = False) -> Console:
    console = Console(stderr=to_stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200, stderr=to_stderr)  # logs and CI: wide tables beat ones folded letter by letter
    return console


def run_suite(suite: Suite, params: dict, opts: RunOptions, out_dir: Path, console: Console | None = None,
              resume: Path | None = None, junit: Path | None = None, as_json: bool = False,
              dry_run: bool = False) -> Outcome:
    """Run the sweep; the outcome holds the exit code (0: every gated case passed) and the run directory."""
    console = console or make_console(to_stderr=as_json)
    inject.check_allowed(opts.inject)
    columns = columns_for(suite)
    # A wrong --resume target is the user's first mistake to hear about, before anything about this machine.
    resumed = open_for_resume(Path(resume), suite, columns) if resume is not None else None
    platform = detect()
    world_size = suite.world_size(params)
    check_world_size(world_size, platform)
    if opts.cuda_graph and not platform.has_gpu:
        raise InputError("--cuda-graph needs a GPU; this machine has none")
    if opts.tune and (not platform.has_gpu or opts.correctness_only):
        raise InputError("--tune times kernels: it needs a GPU and no --correctness-only")
    if not platform.has_gpu and not opts.correctness_only:
        console.print("[yellow]no GPU here: running correctness-only (timing needs a GPU)[/yellow]")
        opts.correctness_only = True
    backends = choose_backends(suite, params.get("backends"), platform, world_size)
    cases = suite.cases(params)
    if not cases:
        raise InputError("the sweep has no cases")
    if dry_run:
        console.print(f"{suite.name}: {len(cases)} cases x {len(backends)} backends ({', '.join(b.name for b in backends)}), "
                      f"{world_size} rank(s): valid, nothing run (--dry-run)")
        return Outcome(0, None)
    if junit is not None:
        check_writable(Path(junit))

    if resumed is not None:
        run_dir, meta, finished_rows = resumed
        meta.setdefault("resumed", []).append(dt.datetime.now().isoformat(timespec="seconds"))
    else:
        run_dir, finished_rows = new_run_dir(out_dir, suite.name), []
        meta = base_meta(suite.name, params, platform.as_dict(), git_revision())
        meta["suite_module"] = registry.module_of(suite.name)
        meta["speedups"] = {s.column: s.meaning for s in suite.speedups()}
        meta["times"] = TIMES
        meta["options"] = asdict(opts)
        meta["backends"] = [b.name for b in backends]
    writer = ResultsWriter(run_dir, columns)
    writer.rows.extend(finished_rows)
    done = {(row["case"], row["backend"]) for row in finished_rows}
    write_meta(run_dir, meta)
    console.print(f"rocbench {suite.name}: {len(cases)} cases x {len(backends)} backends on {platform.kind} "
                  f"({world_size} rank{'s' if world_size > 1 else ''}) -> {run_dir}")

    spec = PoolSpec(suite.name, registry.module_of(suite.name), params, opts, world_size, free_port(),
                    measure_copy_bw=not opts.correctness_only)
    dispatch = Dispatcher(spec, meta, run_dir)
    cases_by_id = {case.id: case for case in cases}
    by_name = {backend.name: backend for backend in backends}
    speedups = suite.speedups()
    default_twins = {b.name: b.deterministic_of for b in backends if b.deterministic_of}
    timed = timed_medians(writer.rows)
    interrupted = False
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            bar = progress.add_task(suite.name, total=len(cases) * len(backends))
            progress.advance(bar, sum((c.id, b.name) in done for c in cases for b in backends))
            for case in cases:
                for backend in backends:
                    if (case.id, backend.name) in done:
                        continue
                    progress.update(bar, description=f"{backend.name} {case.id}"[:70])
                    row = finish_row(suite, case, backend, world_size, dispatch.run(case, backend, opts.timeout_s))
                    timed.update(timed_medians([row]))
                    add_speedups(row, timed, cases_by_id, speedups, default_twins)
                    writer.append(row)
                    progress.advance(bar)
            # Kernel times last: a profiler session slows the process's later graph times (see kernel_pass).
            pending = [i for i, row in enumerate(writer.rows) if wants_kernel_time(row, opts, cases_by_id, by_name)]
            if pending:
                bar = progress.add_task(f"{suite.name} kernel_us", total=len(pending))
            for i in pending:
                row = writer.rows[i]
                progress.update(bar, description=f"kernel_us {row['backend']} {row['case']}"[:70])
                fragment = dispatch.run(cases_by_id[row["case"]], by_name[row["backend"]], opts.timeout_s, KERNEL_STAGE)
                fragment.pop("gate", None)
                if "clock_drops" in fragment:
                    fragment["clock_drops"] += row.get("clock_drops") or 0
                row.update(fragment)
                timed.update(timed_medians([row]))
                for other in writer.rows:  # this row's kernel time may be another row's baseline
                    add_speedups(other, timed, cases_by_id, speedups, default_twins)
                writer.rewrite()
                progress.advance(bar)
    except KeyboardInterrupt:
        interrupted = True
        console.print("[red]interrupted: the finished rows are in results.csv[/red]")
    finally:
        dispatch.close()

    meta["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    meta["interrupted"] = interrupted
    frame = writer.frame()
    meta["summary"] = report.status_counts(frame)
    write_meta(run_dir, meta)
    if not frame.empty:
        plots.draw(suite, frame, run_dir)
    report.print_table(frame, suite, console)
    console.print(report.summary_line(frame))
    console.print(f"results: {run_dir}")
    code = 130 if interrupted else (1 if frame["status"].isin(BAD_STATUSES).any() else 0)
    if junit is not None:
        write_junit(Path(junit), [(suite.name, frame)])
    if as_json:
        print(json.dumps(summary_json(suite.name, run_dir, frame, code), default=str))
    return Outcome(code, run_dir)


def check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"--junit {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"--junit {path}: directory {parent} is not writable")


def summary_json(suite_name: str, run_dir: Path, frame, code: int) -> dict:
    bad = frame[frame["status"].isin(BAD_STATUSES)]
    return {
        "suite": suite_name, "run_dir": str(run_dir), "exit_code": code,
        "counts": report.status_counts(frame), "summary": report.summary_line(frame),
        "failures": [{"case": r["case"], "backend": r["backend"], "status": r["status"], "detail": r["detail"]}
                     for _, r in bad.iterrows()],
    }


def open_for_resume(run_dir: Path, suite: Suite, columns: list[str]) -> tuple[Path, dict, list[dict]]:
    """An earlier run's directory, its metadata and its finished rows (a killed run keeps all of them)."""
    meta_path = run_dir / "meta.json"
    if not meta_path.exists():
        raise InputError(f"--resume {run_dir}: no meta.json there (not a rocbench run directory)")
    meta = json.loads(meta_path.read_text())
    if meta.get("suite") != suite.name:
        raise InputError(f"--resume {run_dir}: that run is a {meta.get('suite')} run, not {suite.name}")
    rows = []
    if (run_dir / "results.csv").exists():
        frame = read_results(run_dir)
        if list(frame.columns) != columns:
            raise InputError(f"--resume {run_dir}: results.csv has other columns than this version writes")
        rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]
    return run_dir, meta, rows


def start_pool(spec: PoolSpec, meta: dict, run_dir: Path) -> tuple[RankPool | None, str]:
    try:
        pool = RankPool(spec).start(POOL_START_TIMEOUT_S)
    except PoolFailure as failure:
        spec.port = free_port()
        return None, failure.detail
    if "copy_bw_GBps" in pool.info and "copy_bw_GBps" not in meta:
        meta["copy_bw_GBps"] = pool.info["copy_bw_GBps"]
        write_meta(run_dir, meta)
    spec.measure_copy_bw = False  # once per run is enough; later pools reuse the number
    spec.options.extra["copy_bw_GBps"] = meta.get("copy_bw_GBps")
    return pool, ""


def finish_row(suite: Suite, case: Case, backend: Backend, world_size: int, row: dict) -> dict:
    full = {"suite": suite.name, "case": case.id, "backend": backend.name, "ranks": world_size}
    full.update(suite.case_columns(case))
    full.update(row)
    if "bytes" not in row:
        full["bytes"] = suite.work(case, world_size).bytes
    return full


def timed_medians(rows: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """(case, backend) -> its medians per time basis, for the rows that passed."""
    return {(r["case"], r["backend"]): medians(r) for r in rows if r.get("status") == PASS}


def add_speedups(row: dict, timed: dict[tuple[str, str], dict[str, float]], cases_by_id: dict[str, Case],
                 speedups: list[Speedup], default_twins: dict[str, str] | None = None) -> None:
    """The row's speedup columns, per time basis, from the rows it is relative to (`timed`, see timed_medians);
    for a batch-invariant variant (default_twins: its backend -> the default backend), the price of determinism:
    its time over the default's on the same case."""
    case = cases_by_id.get(row["case"])
    mine = medians(row) if row.get("status") == PASS else {}
    for speedup in speedups:
        base = timed.get(speedup.relative_to(case, row["backend"]) if case is not None else None, {})
        for basis in TIMES:
            ok = basis in mine and basis in base
            row[speedup_column(speedup.column, basis)] = base[basis] / mine[basis] if ok else None
    twin = (default_twins or {}).get(row["backend"])
    if twin is not None:
        default = timed.get((row["case"], twin), {})
        for basis in TIMES:
            ok = basis in mine and basis in default
            row[f"determinism_price_{basis}"] = mine[basis] / default[basis] if ok else None


def wants_kernel_time(row: dict, opts: RunOptions, cases_by_id: dict, backends: dict) -> bool:
    """A row still missing the kernel time it should have (also after --resume)."""
    if opts.correctness_only or "kernel" not in opts.times or row.get("status") != PASS:
        return False
    if row["case"] not in cases_by_id or row["backend"] not in backends:
        return False
    taken = row.get("kernel_us_median")
    return (taken is None or taken != taken) and not row.get("kernel_cold")


class Dispatcher:
    """Runs one task at a time on a rank pool, starting it when needed and replacing it after a failure;
    a pool that cannot start, a timeout or a dead rank becomes the task's row."""

    def __init__(self, spec: PoolSpec, meta: dict, run_dir: Path):
        self.spec, self.meta, self.run_dir = spec, meta, run_dir
        self.pool: RankPool | None = None

    def run(self, case: Case, backend: Backend, timeout_s: float, stage: str = GATE_STAGE) -> dict:
        prefix = "kernel timing: " if stage == KERNEL_STAGE else ""
        if self.pool is None:
            self.pool, start_error = start_pool(self.spec, self.meta, self.run_dir)
            if self.pool is None:
                return {"status": FAULT, "gate": "fault", "detail": prefix + start_error}
        try:
            row = self.pool.run(case.index, backend.name, timeout_s, stage)
        except PoolFailure as failure:
            self.pool = None
            self.spec.port = free_port()
            return {"status": failure.status, "gate": failure.status, "detail": prefix + failure.detail}
        if not self.pool.alive:
            self.pool = None
        return row

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def medians(row: dict) -> dict[str, float]:
    """The row's median per time basis (those it has)."""
    out = {}
    for basis in TIMES:
        value = row.get(f"{basis}_us_median")
        if value is not None and value == value and value > 0:  # value == value: not NaN
            out[basis] = float(value)
    return out
