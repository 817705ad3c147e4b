"""Terminal table and summary lines for a finished sweep."""
from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.table import Table

from rocbench.core.results import BAD_STATUSES, PASS

STATUS_STYLE = {"pass": "green", "fail": "bold red", "fault": "bold red", "timeout": "bold red", "unsupported": "yellow"}
NUMERIC_COLUMNS = {
    "time_us_median": ("us", "{:.2f}"), "time_us_p10": ("p10", "{:.2f}"), "time_us_p90": ("p90", "{:.2f}"),
    "algbw_GBps": ("algbw GB/s", "{:.1f}"), "busbw_GBps": ("busbw GB/s", "{:.1f}"), "tflops": ("TFLOP/s", "{:.1f}"),
    "pct_copy_bw": ("% copy bw", "{:.1f}"), "speedup": ("speedup", "{:.2f}x"),
    "max_abs_err": ("max err", "{:.3g}"), "cosine": ("cosine", "{:.6f}"),
}


def status_counts(frame: pd.DataFrame) -> dict:
    return {str(k): int(v) for k, v in frame["status"].value_counts().items()} if not frame.empty else {}


def summary_line(frame: pd.DataFrame) -> str:
    """'N passed, N failed' over gated rows (unsupported rows are neither)."""
    passed = int((frame["status"] == PASS).sum()) if not frame.empty else 0
    failed = int(frame["status"].isin(BAD_STATUSES).sum()) if not frame.empty else 0
    unsupported = len(frame) - passed - failed
    line = f"{passed} passed, {failed} failed"
    return line + (f" ({unsupported} unsupported)" if unsupported else "")


def display_columns(frame: pd.DataFrame, suite) -> list[str]:
    cols = ["backend", *suite.axis_columns, "status", "path"]
    cols += [c for c in NUMERIC_COLUMNS if c in frame and frame[c].notna().any()]
    cols += ["deterministic", "graph_replays"]
    return [c for c in cols if c in frame and frame[c].notna().any() and (frame[c].astype(str).str.len() > 0).any()]


def cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column in NUMERIC_COLUMNS:
        try:
            return NUMERIC_COLUMNS[column][1].format(float(value))
        except (TypeError, ValueError):
            return str(value)
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def print_table(frame: pd.DataFrame, suite, console: Console) -> None:
    if frame.empty:
        console.print("no rows")
        return
    columns = display_columns(frame, suite)
    table = Table(title=f"rocbench {suite.name}", show_lines=False)
    for column in columns:
        table.add_column(NUMERIC_COLUMNS.get(column, (column,))[0], overflow="fold",
                         justify="right" if column in NUMERIC_COLUMNS else "left")
    for _, row in frame.iterrows():
        style = STATUS_STYLE.get(str(row["status"]))
        table.add_row(*[cell(c, row[c]) for c in columns], style=style if row["status"] != PASS else None)
    console.print(table)
    bad = frame[frame["status"] != PASS]
    for _, row in bad.iterrows():
        console.print(f"[{STATUS_STYLE.get(str(row['status']), 'red')}]{row['status']}[/]: {row['backend']} {row['case']}: {row['detail']}")
