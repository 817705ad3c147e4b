"""One row schema; rows appended and flushed as they finish; metadata JSON beside them."""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shlex
import sys
from pathlib import Path

import pandas as pd

from rocbench.core.errors import InputError

# Row statuses. Only "pass" means the backend was proven correct (and, unless correctness-only, timed).
PASS, FAIL, FAULT, TIMEOUT, UNSUPPORTED = "pass", "fail", "fault", "timeout", "unsupported"
BAD_STATUSES = (FAIL, FAULT, TIMEOUT)

LEAD_COLUMNS = ["suite", "case", "backend"]

# Two times per timed row; every rate and speedup column names the one it uses.
TIMES = {
    "kernel": "GPU time of the call's kernels without launch gaps: union of their profiler records, "
              "caches flushed before each call; a collective's is its slowest rank's",
    "graph": "per-call time inside a CUDA graph of back-to-back calls (launch gaps included: what a "
             "serving graph pays), inputs rotated against the cache; a collective's is its slowest rank's",
}


def time_columns(basis: str) -> list[str]:
    return [f"{basis}_us_median", f"{basis}_us_p10", f"{basis}_us_p90"]


def rate_columns(basis: str) -> list[str]:
    return [f"algbw_{basis}_GBps", f"busbw_{basis}_GBps", f"tflops_{basis}", f"pct_copy_bw_{basis}",
            f"pct_roofline_{basis}"]


def _per_time(kind: type, *names: str) -> dict[str, type]:
    return {name.format(basis=basis): kind for basis in TIMES for name in names}


# Every column a row of any suite has, with the type of its cells (a cell may also be empty). The suite's case
# columns, twin checks and speedups come on top (columns_for). A row holding any other key is refused.
RESULT_SCHEMA: dict[str, type] = {
    "ranks": int, "hosts": str, "devices": str, "status": str, "gate": str, "gate_kind": str, "tolerance": str,
    "max_abs_err": float, "cosine": float, "deterministic": str, "graph_replays": str, "batch_invariant": str,
    "batch_variance": str, "path": str, "detail": str,
    **{c: float for c in time_columns("kernel")}, "kernel_samples": int, "kernel_noise_pct": float,
    "kernels_per_call": int, "kernel_parts": str, "kernel_cold": str,
    **{c: float for c in time_columns("graph")}, "graph_samples": int, "graph_noise_pct": float,
    "graph_calls_per_sample": int, "graph_cold": str, "timing_mode": str,
    "clock_mhz_before": float, "clock_mhz_after": float, "clock_default_mhz": float, "throttle_before": str,
    "throttle_after": str, **_per_time(int, "clock_drops_{basis}"),
    "bytes": int, "flops": float, **{c: float for basis in TIMES for c in rate_columns(basis)},
    **_per_time(float, "determinism_price_{basis}"), "tuned": str,
}
RESULT_COLUMNS = list(RESULT_SCHEMA)

# Runs written before there were two times: their one time was today's graph time.
LEGACY_COLUMNS = {"time_us_median": "graph_us_median", "time_us_p10": "graph_us_p10", "time_us_p90": "graph_us_p90",
                  "samples": "graph_samples", "iters_per_sample": "graph_calls_per_sample",
                  "algbw_GBps": "algbw_graph_GBps", "busbw_GBps": "busbw_graph_GBps", "tflops": "tflops_graph",
                  "pct_copy_bw": "pct_copy_bw_graph"}


def speedup_column(column: str, basis: str) -> str:
    return f"{column}_{basis}"


def columns_for(suite) -> list[str]:
    """A suite's CSV columns: the case's, the results every suite has, its twin checks and its speedups."""
    return (LEAD_COLUMNS + suite.columns() + RESULT_COLUMNS + list(suite.twin_columns)
            + [speedup_column(s.column, basis) for s in suite.speedups() for basis in TIMES])


def speedup_columns(frame) -> list[str]:
    return [c for c in frame.columns if c.startswith("speedup")]


# Runs of that version without --cuda-graph timed eager calls: neither of today's times
LEGACY_EAGER = "eager"
LEGACY_EAGER_MEANING = "an older version's per-call time of eager (not graph-captured) calls: neither kernel nor graph time"


def upgrade_legacy(frame: pd.DataFrame, graph_timed: bool = True) -> pd.DataFrame:
    """A run of an older version, its columns renamed to what they mean now: its time was a graph time if it ran
    with --cuda-graph, else an eager time (eager_us_*, speedup_vs_*_eager), which nothing reads as a graph time."""
    if "graph_us_median" in frame or "time_us_median" not in frame:
        return frame
    basis = "graph" if graph_timed else LEGACY_EAGER
    renames = {old: new.replace("graph", basis) for old, new in LEGACY_COLUMNS.items() if old in frame}
    renames.update({c: speedup_column(c, basis) for c in speedup_columns(frame)})
    return frame.rename(columns=renames)


def new_run_dir(out: Path, suite: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{suite}-{stamp}"
    path, n = base, 1
    while True:  # two runs in the same second get different directories, never a shared one
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = Path(f"{base}-{n}")
        except OSError as err:
            raise InputError(f"cannot create results directory under {out}: {err.strerror}") from None


def append_csv(path: Path, frame: pd.DataFrame) -> None:
    """The frame's lines appended to a CSV (its header first if the file is empty), under an exclusive lock, flushed
    to disk before the lock goes: concurrent writers never interleave and a crash loses no appended line."""
    with open(path, "a", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            frame.to_csv(handle, header=handle.tell() == 0, index=False)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ResultsWriter:
    """Appends rows to results.csv, one flush per row, under an exclusive lock."""

    def __init__(self, run_dir: Path, columns: list[str]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "results.csv"
        self.columns = columns
        self.rows: list[dict] = []

    def append(self, row: dict) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:  # a private key or a misspelt column: a harness bug, never silently dropped
            raise ValueError(f"row has keys outside the schema: {', '.join(sorted(unknown))}")
        append_csv(self.path, pd.DataFrame([row], columns=self.columns))
        self.rows.append(row)

    def rewrite(self) -> None:
        """The file rewritten from `rows` (after columns were added to written rows, e.g. their kernel times) and
        swapped in, so a crash leaves the old one or the new one, never half of either."""
        tmp = self.path.with_suffix(".csv.tmp")
        pd.DataFrame(self.rows, columns=self.columns).to_csv(tmp, index=False)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)


SAMPLES_FILE = "samples.csv"
SAMPLES_COLUMNS = ["case", "backend", "time", "index", "us"]


def samples_key(time: str) -> str:
    """The private row key under which a rank hands the recorder one time's samples (--save-samples)."""
    return f"_samples_{time}"


def take_samples(row: dict) -> dict[str, list[float]]:
    """The samples a row carries, per time, removed from it (they go to samples.csv, not results.csv)."""
    return {time: list(row.pop(samples_key(time))) for time in TIMES if samples_key(time) in row}


def append_samples(run_dir: Path, case: str, backend: str, samples: dict[str, list[float]]) -> None:
    """One row's samples appended to samples.csv, one line each in the order taken (NaN, a dropped sample, is
    written empty), under the same lock and flush as results.csv's rows."""
    lines = [(case, backend, time, index, value) for time, values in samples.items()
             for index, value in enumerate(values)]
    if lines:
        append_csv(Path(run_dir) / SAMPLES_FILE, pd.DataFrame(lines, columns=SAMPLES_COLUMNS))


def read_results(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "results.csv"
    if not path.exists():
        raise InputError(f"{run_dir}: no results.csv (not a rocbench run directory?)")
    meta_path = Path(run_dir) / "meta.json"
    options = json.loads(meta_path.read_text()).get("options", {}) if meta_path.exists() else {}
    return upgrade_legacy(pd.read_csv(path, keep_default_na=False, na_values=[""]),
                          graph_timed=options.get("cuda_graph", True))


def read_meta(run_dir: Path, what: str) -> dict:
    """A run's (or sweep's) meta.json; `what` names the option or command that asked, for the error."""
    path = Path(run_dir) / "meta.json"
    if not path.exists():
        raise InputError(f"{what} {run_dir}: no meta.json there (not a rocbench run directory)")
    return json.loads(path.read_text())


def write_meta(run_dir: Path, meta: dict) -> None:
    path = Path(run_dir) / "meta.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # never leave a half-written meta.json


def command_line(argv: list[str] | None = None) -> str:
    """The command as one types it again: `python -m rocbench ...` for a module run (whose argv[0] is the path of
    rocbench/__main__.py; under torchrun, what each rank runs), else the program's name (`rocbench ...`); the
    arguments shell-quoted."""
    argv = list(sys.argv if argv is None else argv)
    program = "python -m rocbench" if Path(argv[0]).name == "__main__.py" else Path(argv[0]).name
    return " ".join([program, *map(shlex.quote, argv[1:])])


def base_meta(suite: str, params: dict, platform: dict, git_rev: str | None) -> dict:
    return {
        "suite": suite,
        "command": command_line(),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "git_revision": git_rev,
        "platform": platform,
        "params": params,
    }
