"""The recording side of a run (the process that owns the run directory: rocbench itself, or rank 0 under a
launcher): which tasks to run, each row as it arrives (with its speedups), kernel times added later, the metadata,
and the table, plots, JUnit and JSON at the end."""
from __future__ import annotations

import datetime as dt
import fcntl
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rocbench.core import exitcodes, registry

from rocbench.core.reporting import plots, report
from rocbench.core.axes import Case
from rocbench.core.exitcodes import Outcome
from rocbench.core.errors import InputError
from rocbench.core.options import RunOptions
from rocbench.core.roofline import Roofline
from rocbench.core.reporting.junit import write_junit
from rocbench.core.platform import PlatformInfo, git_revision
from rocbench.core.harness.ranks import GATE_STAGE, KERNEL_STAGE, Task
from rocbench.core.results import (BAD_STATUSES, FAULT, PASS, TIMES, ResultsWriter, append_samples, base_meta,
                                   columns_for, new_run_dir, read_meta, read_results, speedup_column, take_samples,
                                   write_meta)
from rocbench.core.suite import Backend, Speedup, Suite

LOCK_FILE = ".lock"  # held by the process that runs (or resumes) the run


class Executor(Protocol):
    """Runs tasks on ranks and hands back rows: rocbench's own rank pool, or a launcher's world."""

    def run_tasks(self, tasks: list[Task], stage: str) -> Iterator[tuple[Task, dict]]: ...


class RunRecorder:
    def __init__(self, suite: Suite, opts: RunOptions, backends: list[Backend], cases: list[Case], run_dir: Path,
                 meta: dict, finished_rows: list[dict], console: Console):
        self.suite, self.opts, self.backends, self.cases = suite, opts, backends, cases
        self.run_dir, self.meta, self.console = run_dir, meta, console
        self.writer = ResultsWriter(run_dir, columns_for(suite))
        self.writer.rows.extend(finished_rows)
        self.cases_by_id = {case.id: case for case in cases}
        self.by_name = {backend.name: backend for backend in backends}
        self.speedups = suite.speedups()
        self.default_twins = {b.name: b.deterministic_of for b in backends if b.deterministic_of}
        self.timed = timed_medians(self.writer.rows)
        self.world_size = 1
        self.interrupted = False
        self.ended: str | None = None  # why a launched job ended early
        self.lock = None  # the open lock file (lock_run): held until this process ends
        self.view = report.COMPACT

    @classmethod
    def open(cls, suite: Suite, params: dict, opts: RunOptions, platform: PlatformInfo, backends: list[Backend],
             cases: list[Case], out_dir: Path, resume: Path | None, console: Console,
             recorded: dict | None = None) -> "RunRecorder":
        """A new run directory under out_dir, or the one --resume names with its finished rows (read once it is
        locked); either way locked for this process, so that no two write one run."""
        if resume is not None:
            lock = lock_run(Path(resume), "--resume")
            run_dir, meta, rows = open_for_resume(Path(resume), suite, columns_for(suite))
            meta.setdefault("resumed", []).append(dt.datetime.now().isoformat(timespec="seconds"))
            if "ended" in meta:  # how the earlier launch ended stays on record, not as this one's end
                meta.setdefault("earlier_ends", []).append(meta.pop("ended"))
        else:
            run_dir, rows = new_run_dir(out_dir, suite.name), []
            lock = lock_run(run_dir, "--out")
            meta = base_meta(suite.name, params, platform.as_dict(), git_revision())
            meta["suite_module"] = registry.module_of(suite.name)
            meta["speedups"] = {s.column: s.meaning for s in suite.speedups()}
            meta["times"] = TIMES
            meta["options"] = asdict(opts)
            meta["run_options"] = recorded or {}
            meta["backends"] = [b.name for b in backends]
        meta["planned"] = {"cases": len(cases), "backends": [b.name for b in backends], "rows": len(cases) * len(backends)}
        write_meta(run_dir, meta)
        recorder = cls(suite, opts, backends, cases, run_dir, meta, rows, console)
        recorder.lock = lock
        return recorder

    def note_roofline(self, roofline: Roofline) -> None:
        """The measured copy bandwidth and MMA rates, kept once per run (the % columns' reference)."""
        if "roofline" not in self.meta:
            self.meta["copy_bw_GBps"] = roofline.copy_bw_GBps  # where reports and older tools look for it
            self.meta["roofline"] = roofline.to_meta()
            write_meta(self.run_dir, self.meta)

    # ---- what to run ---------------------------------------------------------------------------------

    def missing(self) -> list[Task]:
        """Planned (case, backend) rows with no row yet: all of them in a new run; after --resume, or at the end of a
        run that was interrupted, killed or ended early, those it did not finish."""
        done = {(row["case"], row["backend"]) for row in self.writer.rows}
        return [Task(case.index, backend.name) for case in self.cases for backend in self.backends
                if (case.id, backend.name) not in done]

    def kernel_tasks(self) -> list[Task]:
        return [Task(self.cases_by_id[row["case"]].index, row["backend"]) for row in self.writer.rows
                if wants_kernel_time(row, self.opts, self.cases_by_id, self.by_name)]

    # ---- rows as they arrive ---------------------------------------------------------------------------

    def record(self, task: Task, row: dict) -> None:
        case, backend = self.cases[task.case], self.by_name[task.backend]
        samples = take_samples(row)
        row = finish_row(self.suite, case, backend, self.world_size, row)
        self.timed.update(timed_medians([row]))
        add_speedups(row, self.timed, self.cases_by_id, self.speedups, self.default_twins)
        self.writer.append(row)
        append_samples(self.run_dir, case.id, backend.name, samples)  # after its row: none of a row never recorded

    def add_kernel_time(self, task: Task, fragment: dict) -> None:
        case_id = self.cases[task.case].id
        row = next(r for r in self.writer.rows if r["case"] == case_id and r["backend"] == task.backend)
        samples = take_samples(fragment)
        fragment = {k: v for k, v in fragment.items() if k not in ("gate", "hosts", "devices")}
        row.update(fragment)
        self.timed.update(timed_medians([row]))
        for other in self.writer.rows:  # this row's kernel time may be another row's baseline
            add_speedups(other, self.timed, self.cases_by_id, self.speedups, self.default_twins)
        self.writer.rewrite()
        append_samples(self.run_dir, case_id, task.backend, samples)

    def drive(self, executor: Executor) -> None:
        """Every missing row (gate and graph time), then every kernel time (a profiler session slows the process's
        later graph times: see harness.kernel_pass)."""
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, transient=False) as progress:
            tasks = self.missing()
            total = len(self.cases) * len(self.backends)
            bar = progress.add_task(self.suite.name, total=total, completed=total - len(tasks))
            for task, row in executor.run_tasks(tasks, GATE_STAGE):
                self.record(task, row)
                progress.update(bar, advance=1, description=f"{task.backend} {self.cases[task.case].id}"[:70])
            tasks = self.kernel_tasks()
            if tasks:
                bar = progress.add_task(f"{self.suite.name} kernel_us", total=len(tasks))
            for task, fragment in executor.run_tasks(tasks, KERNEL_STAGE):
                self.add_kernel_time(task, fragment)
                progress.update(bar, advance=1,
                                description=f"kernel_us {task.backend} {self.cases[task.case].id}"[:70])

    def end_early(self, rows: list[tuple[Task, dict]], why: str, unfinished: list[Task]) -> None:
        """A launched job ended before its tasks did: record what arrived and say what did not run."""
        for task, row in rows:
            self.record(task, row)
        self.ended = why
        self.meta["ended"] = why
        self.stopped_during(unfinished, why)
        total = len(self.cases) * len(self.backends)
        self.console.print(f"[red]the job ended early: {escape(why)}; {len(self.writer.rows)} of {total} rows done[/red]")
        self.console.print(f"relaunch the same command with --resume {self.run_dir} to run the rest")
        self.finish_meta()

    def stopped_during(self, tasks: list[Task], why: str) -> None:
        """A launched job stopped while `tasks` ran (a rank died, the launcher stopped it). They run again after
        --resume, but one that was in flight at the previous stop too is what stops the job (a crash that kills its
        rank): it gets a fault row, so that the next launch moves on."""
        previous = {(entry["case"], entry["backend"]) for entry in self.meta.get("in_flight", [])}
        again = [t for t in tasks if (self.cases[t.case].id, t.backend) in previous]
        for task in again:
            self.record(task, {"status": FAULT, "gate": "fault",
                               "detail": f"the job stopped while this case ran, in two launches in a row ({why})"})
        self.meta["in_flight"] = [{"case": self.cases[t.case].id, "backend": t.backend} for t in tasks if t not in again]

    # ---- the end -----------------------------------------------------------------------------------------

    def finish_meta(self) -> None:
        if not self.ended and not self.interrupted:
            self.meta.pop("in_flight", None)
        self.meta["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        self.meta["interrupted"] = self.interrupted
        self.meta["summary"] = report.status_counts(self.writer.frame())
        write_meta(self.run_dir, self.meta)

    def finish(self, junit: Path | None, as_json: bool) -> Outcome:
        """Metadata, plots, the table and summary; the exit code (rocbench.core.exitcodes)."""
        self.finish_meta()
        frame = self.writer.frame()
        if not frame.empty:
            plots.draw(self.suite, frame, self.run_dir)
        report.print_table(frame, self.suite, self.console, self.view.columns, self.view.wide)
        planned = len(self.cases) * len(self.backends)
        code = exitcodes.of_rows(frame, planned, self.interrupted)
        self.console.print(f"{report.summary_line(frame, planned)}: {code.meaning} (exit {int(code)})")
        self.console.print(f"results: {self.run_dir}")
        if junit is not None:
            write_junit(Path(junit), [(self.suite.name, frame)])
        if as_json:
            summary = summary_json(self.suite.name, self.run_dir, frame, code, planned)
            summary["not_run"] = [{"case": self.cases[t.case].id, "backend": t.backend} for t in self.missing()]
            print(json.dumps(summary, default=str))
        return Outcome(int(code), self.run_dir)


def summary_json(suite_name: str, run_dir: Path, frame, code: exitcodes.Exit, planned: int) -> dict:
    bad = frame[frame["status"].isin(BAD_STATUSES)]
    return {
        "suite": suite_name, "run_dir": str(run_dir), "exit_code": int(code), "outcome": code.meaning,
        "planned_rows": planned, "counts": report.status_counts(frame), "summary": report.summary_line(frame, planned),
        "failures": [{"case": r["case"], "backend": r["backend"], "status": r["status"], "detail": r["detail"]}
                     for _, r in bad.iterrows()],
    }


def lock_run(run_dir: Path, what: str):
    """An exclusive lock on the run directory for as long as this process runs it (the open file holds it)."""
    handle = open(Path(run_dir) / LOCK_FILE, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InputError(f"{what} {run_dir}: another rocbench is running this run right now (its lock is held); "
                         "wait for it to end") from None
    return handle


def open_for_resume(run_dir: Path, suite: Suite, columns: list[str]) -> tuple[Path, dict, list[dict]]:
    """An earlier run's directory, its metadata and its finished rows (a killed run keeps all of them)."""
    meta = read_meta(run_dir, "--resume")
    if meta.get("suite") != suite.name:
        raise InputError(f"--resume {run_dir}: that run is a {meta.get('suite')} run, not {suite.name}")
    rows = []
    if (run_dir / "results.csv").exists():
        frame = read_results(run_dir)
        if list(frame.columns) != columns:
            raise InputError(f"--resume {run_dir}: results.csv has other columns than this version writes")
        rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]
    return run_dir, meta, rows


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


def medians(row: dict) -> dict[str, float]:
    """The row's median per time basis (those it has)."""
    out = {}
    for basis in TIMES:
        value = row.get(f"{basis}_us_median")
        if value is not None and value == value and value > 0:  # value == value: not NaN
            out[basis] = float(value)
    return out
