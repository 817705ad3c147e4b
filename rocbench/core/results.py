"""One row schema; rows appended and flushed as they finish; metadata JSON beside them."""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
from pathlib import Path

import pandas as pd

from rocbench.core.errors import InputError

# Row statuses. Only "pass" means the backend was proven correct (and, unless correctness-only, timed).
PASS, FAIL, FAULT, TIMEOUT, UNSUPPORTED = "pass", "fail", "fault", "timeout", "unsupported"
BAD_STATUSES = (FAIL, FAULT, TIMEOUT)

LEAD_COLUMNS = ["suite", "case", "backend"]
RESULT_COLUMNS = [
    "ranks", "status", "gate", "gate_kind", "tolerance", "max_abs_err", "cosine", "deterministic",
    "graph_replays", "path", "detail",
    "time_us_median", "time_us_p10", "time_us_p90", "samples", "iters_per_sample", "rotation", "timing_mode",
    "bytes", "flops", "algbw_GBps", "busbw_GBps", "tflops", "pct_copy_bw", "tuned",
]


def columns_for(suite) -> list[str]:
    """A suite's CSV columns: the case's, the results every suite has, its twin checks and its speedups."""
    return (LEAD_COLUMNS + suite.columns() + RESULT_COLUMNS + list(suite.twin_columns)
            + [s.column for s in suite.speedups()])


def speedup_columns(frame) -> list[str]:
    return [c for c in frame.columns if c.startswith("speedup")]


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


class ResultsWriter:
    """Appends rows to results.csv, one flush per row, under an exclusive lock."""

    def __init__(self, run_dir: Path, columns: list[str]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "results.csv"
        self.columns = columns
        self.rows: list[dict] = []

    def append(self, row: dict) -> None:
        frame = pd.DataFrame([row], columns=self.columns)
        with open(self.path, "a", newline="") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                header = handle.tell() == 0
                frame.to_csv(handle, header=header, index=False)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)


def read_results(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "results.csv"
    if not path.exists():
        raise InputError(f"{run_dir}: no results.csv (not a rocbench run directory?)")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def write_meta(run_dir: Path, meta: dict) -> None:
    path = Path(run_dir) / "meta.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # never leave a half-written meta.json


def base_meta(suite: str, params: dict, platform: dict, git_rev: str | None) -> dict:
    return {
        "suite": suite,
        "command": " ".join(sys.argv),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "git_revision": git_rev,
        "platform": platform,
        "params": params,
    }
