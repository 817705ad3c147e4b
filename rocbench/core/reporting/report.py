"""Terminal table and summary lines for a finished sweep."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rocbench.core.errors import InputError
from rocbench.core.roofline import Roofline
from rocbench.core.results import (
    BAD_STATUSES,
    LEGACY_EAGER,
    LEGACY_EAGER_MEANING,
    PASS,
    TIMES,
    UNSUPPORTED,
    rate_columns,
    speedup_columns,
    time_columns,
)

STATUS_STYLE = {"pass": "green", "fail": "bold red", "fault": "bold red", "timeout": "bold red", "unsupported": "yellow"}
NUMERIC_COLUMNS = {
    "kernel_us_median": ("kernel us", "{:.2f}"), "kernel_us_p10": ("kernel p10", "{:.2f}"),
    "kernel_us_p90": ("kernel p90", "{:.2f}"),
    "graph_us_median": ("graph us", "{:.2f}"), "graph_us_p10": ("graph p10", "{:.2f}"),
    "graph_us_p90": ("graph p90", "{:.2f}"),
    "kernel_noise_pct": ("kernel noise %", "{:.2f}"), "graph_noise_pct": ("graph noise %", "{:.2f}"),
    **{f"algbw_{b}_GBps": (f"algbw GB/s ({b})", "{:.1f}") for b in TIMES},
    **{f"busbw_{b}_GBps": (f"busbw GB/s ({b})", "{:.1f}") for b in TIMES},
    **{f"tflops_{b}": (f"TFLOP/s ({b})", "{:.1f}") for b in TIMES},
    **{f"pct_copy_bw_{b}": (f"% copy bw ({b})", "{:.1f}") for b in TIMES},
    **{f"pct_roofline_{b}": (f"% roofline ({b})", "{:.1f}") for b in TIMES},
    **{f"determinism_price_{b}": (f"price of determinism ({b})", "{:.2f}x") for b in TIMES},
    "max_abs_err": ("max err", "{:.3g}"), "cosine": ("cosine", "{:.6f}"),
}
# The terminal shows the kernel time's rates; the report shows both.
TERMINAL_COLUMNS = ["kernel_us_median", "graph_us_median", "kernels_per_call", "batch_invariant",
                    "determinism_price_kernel", "algbw_kernel_GBps",
                    "busbw_kernel_GBps", "pct_copy_bw_kernel", "pct_roofline_kernel", "tflops_kernel", "max_abs_err",
                    "cosine"]
REPORT_TIME_COLUMNS = [*time_columns("kernel"), *time_columns("graph"), "kernels_per_call", "kernel_parts",
                       *[c for b in TIMES for c in rate_columns(b)],
                       "clock_drops_kernel", "clock_drops_graph", "batch_invariant", "determinism_price_kernel", "determinism_price_graph"]


def filled(frame: pd.DataFrame, column: str) -> bool:
    """The frame has the column and at least one value in it (a run of an older version may lack either)."""
    return column in frame and frame[column].notna().any()


def numeric_format(column: str) -> tuple[str, str] | None:
    """(header, format) of a numeric column; speedup columns keep their name, which says what they are over
    and by which time."""
    if column.startswith("speedup_vs_"):
        return (speedup_label(column), "{:.2f}x")
    return NUMERIC_COLUMNS.get(column)


def speedup_label(column: str) -> str:
    over, _, basis = column.removeprefix("speedup_vs_").rpartition("_")
    return f"x {over.replace('_', ' ')} ({basis})"


def status_counts(frame: pd.DataFrame) -> dict:
    return {str(k): int(v) for k, v in frame["status"].value_counts().items()} if not frame.empty else {}


def summary_line(frame: pd.DataFrame, planned: int | None = None) -> str:
    """'N passed, N failed' over gated rows (unsupported rows are neither), and how many planned rows did not run."""
    passed = int((frame["status"] == PASS).sum()) if not frame.empty else 0
    failed = int(frame["status"].isin(BAD_STATUSES).sum()) if not frame.empty else 0
    unsupported = len(frame) - passed - failed
    line = f"{passed} passed, {failed} failed" + (f" ({unsupported} unsupported)" if unsupported else "")
    if planned is not None and planned > len(frame):
        line += f"; {planned - len(frame)} of {planned} planned rows did not run"
    return line


def wide_columns(frame: pd.DataFrame, suite) -> list[str]:
    """--wide: every column the terminal can show (the CSV has the rest)."""
    cols = ["backend", *suite.columns(), "status", "path"]
    cols += [c for c in [*TERMINAL_COLUMNS, *speedup_columns(frame)] if filled(frame, c)]
    cols += ["deterministic", "graph_replays"]
    return [c for c in cols if filled(frame, c) and (frame[c].astype(str).str.len() > 0).any()]


# The compact table's headline rate: a row's rate against its bound where the run has one.
HEADLINE_RATES = ("pct_roofline_kernel", "busbw_kernel_GBps", "pct_roofline_graph", "busbw_graph_GBps",
                  "pct_copy_bw_kernel", "pct_copy_bw_graph")  # runs from before the roofline had only copy bw
SPEEDUP = "speedup"  # the compact table's derived column: the speedup that applies to the row
TABLE_WIDTH = 100
COMPACT_HEADERS = {"pct_roofline_kernel": "% roofline", "pct_roofline_graph": "% roof (graph)",
                   "pct_copy_bw_kernel": "% copy bw", "pct_copy_bw_graph": "% bw (graph)", "busbw_kernel_GBps": "busbw GB/s",
                   "busbw_graph_GBps": "busbw (graph)", "kernel_us_median": "kernel us", "graph_us_median": "graph us"}
SHORT_VALUES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8", "float8_e4m3fnuz": "fp8fnuz",
                "float8_e5m2": "fp8e5m2", "True": "yes", "False": "no"}


def compact_columns(frame: pd.DataFrame, suite) -> list[str]:
    """The default table: the axes that vary in this run, backend, status, both times, the headline rate and the
    speedup that applies; the CSV keeps everything else."""
    axes = [p.column for p in suite.params if p.axis]  # derived columns follow the axes: not shown
    varying = [c for c in axes if c in frame and frame[c].astype(str).nunique() > 1]
    cols = [*varying, "backend", "status", "kernel_us_median", "graph_us_median"]
    cols += [next((c for c in HEADLINE_RATES if filled(frame, c)), "")]
    cols += [SPEEDUP] if speedup_columns(frame) and frame[speedup_columns(frame)].notna().any().any() else []
    return [c for c in cols if c == SPEEDUP or filled(frame, c)]


def applicable_speedup(row: pd.Series) -> tuple[float, str] | None:
    """The row's first speedup, kernel time first: (value, what it is over, e.g. 'split kv' or 'triton (graph)')."""
    for basis in TIMES:
        for column in row.index:
            if column.startswith("speedup_vs_") and column.endswith(f"_{basis}") and pd.notna(row[column]):
                over = column.removeprefix("speedup_vs_").removesuffix(f"_{basis}").replace("_", " ")
                return float(row[column]), over + ("" if basis == "kernel" else " (graph)")
    return None


def speedup_cells(frame: pd.DataFrame) -> tuple[str, list[str]]:
    """The speedup column's header and cells: 'x split kv' over bare numbers when every row's speedup is over the
    same thing, else each cell says what it is over."""
    found = [applicable_speedup(row) for _, row in frame.iterrows()]
    kinds = {f[1] for f in found if f is not None}
    if len(kinds) == 1:
        return f"x {kinds.pop()}", ["" if f is None else f"{f[0]:.2f}" for f in found]
    return "speedup", ["" if f is None else f"{f[0]:.2f}x {f[1]}" for f in found]


@dataclass(frozen=True)
class TableView:
    """How the terminal table shows a run: --columns, or --wide, or the compact default."""

    columns: list[str] | None = None
    wide: bool = False


COMPACT = TableView()  # the default: the axes that vary, backend, status, both times, headline rate, speedup


def check_columns(columns: list[str] | None, available: list[str]) -> None:
    unknown = [c for c in columns or [] if c not in available and c != SPEEDUP]
    if unknown:
        raise InputError(f"--columns: no column {unknown[0]!r} (the CSV's columns, or speedup)")


def cell(column: str, value, width: int | None = 40) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if numeric_format(column):
        try:
            return numeric_format(column)[1].format(float(value))
        except (TypeError, ValueError):
            return str(value)
    text = str(value)
    return text if width is None or len(text) <= width else text[:width - 3] + "..."


def print_table(frame: pd.DataFrame, suite, console: Console, columns: list[str] | None = None,
                wide: bool = False) -> None:
    """The terminal table: compact (at most TABLE_WIDTH columns) unless --wide or --columns says otherwise; every
    row that did not pass is then named with its detail."""
    if frame.empty:
        console.print("no rows")
        return
    limited = not wide and columns is None  # the default: at most TABLE_WIDTH columns
    compact = not wide
    columns = wide_columns(frame, suite) if wide else (columns or compact_columns(frame, suite))
    table = Table(title=f"rocbench {suite.name}", box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
                  padding=(0, 0 if compact else 1), pad_edge=False, show_edge=not compact)
    speedup_header, speedups = speedup_cells(frame) if SPEEDUP in columns else ("", [])
    for column in columns:
        header = speedup_header if column == SPEEDUP else (numeric_format(column) or (column,))[0]
        header = COMPACT_HEADERS.get(column, header) if compact else header
        table.add_column(header, overflow="fold", justify="right" if numeric_format(column) or column == SPEEDUP else "left")
    for index, (_, row) in enumerate(frame.iterrows()):
        style = STATUS_STYLE.get(str(row["status"]))
        cells = [speedups[index] if c == SPEEDUP else
                 (SHORT_VALUES.get(cell(c, row[c]), cell(c, row[c])) if compact else cell(c, row[c])) for c in columns]
        table.add_row(*cells, style=style if row["status"] != PASS else None)
    console.print(table, width=min(console.width, TABLE_WIDTH) if limited else None)
    bad = frame[frame["status"] != PASS]
    for _, row in bad[bad["status"] != UNSUPPORTED].iterrows():  # every failure on its own line
        console.print(f"[{STATUS_STYLE.get(str(row['status']), 'red')}]{row['status']}[/]: {row['backend']} "
                      f"{escape(str(row['case']))}: {escape(str(row['detail']))}")
    unsupported = bad[bad["status"] == UNSUPPORTED]
    for (backend, detail), rows in unsupported.groupby(["backend", "detail"], sort=False):  # one line per reason
        first = escape(str(rows["case"].iloc[0]))
        console.print(f"[yellow]unsupported[/]: {backend} {first}" + (f" and {len(rows) - 1} more" if len(rows) > 1 else "")
                      + f": {escape(str(detail))}")


# ---------------------------------------------------------------------------------------------
# Markdown report of a run directory or a sweep directory
# ---------------------------------------------------------------------------------------------

def run_dirs(path: Path) -> list[Path]:
    """A run directory itself, or every run directory a sweep directory holds."""
    path = Path(path)
    if (path / "results.csv").exists():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / "results.csv").exists()) if path.is_dir() else []
    if not found:
        raise InputError(f"{path}: no results.csv here or in its subdirectories (not a rocbench run or sweep)")
    return found


def markdown_table(frame: pd.DataFrame, columns: list[str], full: tuple[str, ...] = ()) -> str:
    """A GitHub markdown table; columns named in `full` are never shortened."""
    from tabulate import tabulate

    cols = [c for c in columns if c in frame]
    rows = [[cell(c, r[c], None if c in full else 40) for c in cols] for _, r in frame.iterrows()]
    return tabulate(rows, headers=[(numeric_format(c) or (c,))[0] for c in cols], tablefmt="github")


def backend_summary(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for backend, part in frame.groupby("backend", sort=False):
        row = {"backend": backend, "cases": len(part), "passed": int((part["status"] == PASS).sum()),
               "failed": int(part["status"].isin(BAD_STATUSES).sum()),
               "unsupported": int((part["status"] == "unsupported").sum())}
        for column in speedup_columns(part):
            speed = part[column].dropna()
            if len(speed):
                row[f"{speedup_label(column)}: median (range)"] = f"{speed.median():.2f}x ({speed.min():.2f}-{speed.max():.2f})"
        for basis in TIMES:
            roofline = f"pct_roofline_{basis}"
            bound = (roofline, "best % roofline") if filled(part, roofline) else (f"pct_copy_bw_{basis}", "best % copy bw")
            for column, label in ((f"algbw_{basis}_GBps", "best GB/s"), bound):  # older runs: copy bw, no roofline
                if filled(part, column):
                    row[f"{label} ({basis})"] = f"{part[column].max():.0f}" + ("%" if "pct" in column else "")
        rows.append(row)
    return pd.DataFrame(rows)


def roofline_text(meta: dict) -> str:
    """The run's measured rates, as the % columns use them (older runs measured only the copy bandwidth)."""
    roofline = Roofline.from_meta(meta)
    return roofline.describe() + ("" if roofline.bf16_tflops else " (no MMA rate: % roofline only for byte-bound rows)")


def determinism_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per backend: on how many cases its probe request's output stayed bitwise the same in every batch, the
    first perturbation that changed it, and the price of determinism (its time over its default twin's)."""
    if "batch_invariant" not in frame:
        return pd.DataFrame()
    probed = frame[frame["batch_invariant"].isin(["yes", "no"])]
    rows = []
    for backend, part in probed.groupby("backend", sort=False):
        variant = part[part["batch_invariant"] == "no"]
        row = {"backend": backend, "batch-invariant": f"{int((part['batch_invariant'] == 'yes').sum())}/{len(part)} cases",
               "first variance": (f"{variant['case'].iloc[0]}: {variant['batch_variance'].iloc[0]}"
                                  if len(variant) else "")}
        for basis in TIMES:
            price = part.get(f"determinism_price_{basis}", pd.Series(dtype=float)).dropna()
            row[f"price ({basis})"] = f"{price.median():.2f}x ({price.min():.2f}-{price.max():.2f})" if len(price) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def timed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a time (either)."""
    present = [c for c in ("kernel_us_median", "graph_us_median") if c in frame]
    return frame.dropna(subset=present, how="all") if present else frame.iloc[0:0]


def times_legend(meta: dict, frame: pd.DataFrame) -> list[str]:
    """What each time means, for the times this run has (a CPU run has none; an old eager run its eager time)."""
    meanings = {**(meta.get("times") or TIMES), LEGACY_EAGER: LEGACY_EAGER_MEANING}
    return [f"- `{basis}_us`: {meaning}" for basis, meaning in meanings.items() if filled(frame, f"{basis}_us_median")]


def speedup_legend(meta: dict, frame: pd.DataFrame) -> list[str]:
    """What each speedup is over, for the speedup columns that have values in this run."""
    lines = []
    for column, meaning in meta.get("speedups", {}).items():
        bases = [basis for basis in TIMES if filled(frame, f"{column}_{basis}")]
        if bases:
            lines.append(f"- {', '.join(f'`{column}_{basis}`' for basis in bases)}: that time of the {meaning} / this row's")
    return lines


def distinguishing_options(metas: list[dict]) -> list[str]:
    """Per run, the options that tell it from the other runs of its suite in the same report (TP, model, ...)."""
    def options_of(meta: dict) -> dict:  # runs of older versions recorded their parsed parameters only
        return {k: str(v) for k, v in (meta.get("run_options") or meta.get("params") or {}).items()}

    labels = []
    for meta in metas:
        same = [options_of(m) for m in metas if m.get("suite") == meta.get("suite")]
        options = options_of(meta)
        differing = [name for name, value in options.items() if any(other.get(name) != value for other in same)]
        labels.append(", ".join(f"{name}={options[name]}" for name in differing[:4]))
    return labels


def sweep_status(path: Path) -> tuple[list[str], int]:
    """For a sweep directory: lines on the planned runs that did not finish, and how many there are."""
    meta_path = Path(path) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if "planned_runs" not in meta:
        return [], 0
    runs = meta.get("runs", [])
    lines = []
    for index, planned in enumerate(meta["planned_runs"]):
        run = runs[index] if index < len(runs) else None
        if run is None or not run.get("run_dir"):
            lines.append(f"- {planned['suite']} (config line {planned['line']}): never started")
        elif not run.get("finished"):
            lines.append(f"- {planned['suite']} (config line {planned['line']}): started, did not finish "
                         f"(`{run['run_dir']}`)")
    count = len(lines)
    if lines:
        lines = ["## Runs that did not finish", "", f"Finish them with `rocbench sweep {meta.get('config')} --resume "
                 f"{path}`.", "", *lines, ""]
    if meta.get("skipped"):
        lines += ["## Runs this machine skipped", "",
                  *[f"- {entry['suite']} (config line {entry['line']}): {entry['why']}" for entry in meta["skipped"]], ""]
    return lines, count


def write_report(path: Path) -> Path:
    """report.md beside the results (in the sweep directory for a sweep), with its PNGs."""
    from rocbench.core.reporting import plots
    from rocbench.core import registry
    from rocbench.core.results import read_results

    path = Path(path)
    dirs = run_dirs(path)
    out = path / "report.md"
    sections, failures, incomplete = [], [], []
    header = [f"# rocbench report: {path.name}", ""]
    metas = [json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else {} for d in dirs]
    labels = distinguishing_options(metas)
    for run_dir, meta, label in zip(dirs, metas, labels):
        frame = read_results(run_dir)
        suite = registry.get(meta.get("suite") or frame["suite"].iloc[0], meta.get("suite_module"))
        plots.draw(suite, frame, run_dir)
        platform = meta.get("platform", {})
        bad = frame[frame["status"].isin(BAD_STATUSES)]
        if not bad.empty:
            failures.append(bad.assign(run=run_dir.name))
        planned = (meta.get("planned") or {}).get("rows")
        if planned and planned > len(frame):
            incomplete.append(f"- `{run_dir.name}`: {planned - len(frame)} of {planned} planned rows did not run"
                              + (f" ({meta['ended']})" if meta.get("ended") else
                                 " (interrupted)" if meta.get("interrupted") else " (killed, or still running)"))
        rel = run_dir.relative_to(path) if run_dir != path else Path(".")
        lines = [f"## {suite.name}{f' ({label})' if label else ''}: `{rel}`", "",
                 f"- device: {', '.join(platform.get('device_names') or [platform.get('kind', '?')])}; "
                 f"roofline (measured): {roofline_text(meta)}" if meta.get("copy_bw_GBps")
                 else f"- device: {platform.get('kind', '?')} (correctness only: nothing timed)",
                 f"- command: `{meta.get('command', '')}`", f"- {summary_line(frame, planned)}", "",
                 *times_legend(meta, frame), *speedup_legend(meta, frame),
                 "", "### Gate and speed by backend", "", markdown_table(backend_summary(frame), list(backend_summary(frame).columns)), ""]
        determinism = determinism_summary(frame)
        if not determinism.empty:
            lines += ["### Deterministic inference", "",
                      "Is a request's output bitwise the same whatever else is in its batch (alone, at another "
                      "position, beside other requests, at other batch sizes)? Price: a batch-invariant variant's "
                      "time over its default backend's on the same case.", "",
                      markdown_table(determinism, list(determinism.columns), full=("first variance",)), ""]
        timed = timed_rows(frame)
        if not timed.empty:
            cols = ["backend", *suite.columns(), "path", *REPORT_TIME_COLUMNS, *speedup_columns(timed)]
            cols = [c for c in cols if filled(timed, c)]
            lines += ["### Timed cases", "", markdown_table(timed, cols, full=("kernel_parts",)), ""]
        for png in sorted(run_dir.glob("*.png")):
            lines += [f"![{png.stem}]({(rel / png.name).as_posix()})", ""]
        sections.append("\n".join(lines))
    unfinished, never_done = sweep_status(path)
    if failures:
        bad = pd.concat(failures)
        first = ["## Failed, faulted or timed-out cases (read these first)", "",
                 markdown_table(bad, ["run", "backend", "case", "status", "detail"], full=("case", "detail")), ""]
    elif never_done or incomplete:
        first = ["## Failed, faulted or timed-out cases", "",
                 f"None among the rows that ran; but {never_done} planned run(s) did not finish and "
                 f"{len(incomplete)} run(s) lack planned rows (below): this is not a complete pass.", ""]
    else:
        first = ["## Failed, faulted or timed-out cases", "", "None: every planned case ran and every gated case passed.", ""]
    if incomplete:
        first += ["## Runs with planned rows that did not run", "", *incomplete,
                  "", "Finish a run with `--resume RUN_DIR` (the run's own options are kept).", ""]
    out.write_text("\n".join(header + first + unfinished + sections) + "\n")
    return out
