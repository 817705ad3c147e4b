"""What a run leaves behind and says is true, and readable: resume that cannot mix runs, a sweep that can be
finished, exit codes and reports that account for what did not run, JSON that parses, a terminal table of at
most 100 columns, and plots of real series (each test names the defect it guards against)."""
from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from rocbench.core.reporting import plots, report

from rocbench.core import registry
import rocbench.suites  # noqa: F401,E402 - registers the built-in suites (registry.get below)
from rocbench.core.results import columns_for
from tests.helpers import REPO, cli_env, invoke, latest_run, meta, needs_interpreter, results

TINY = ["allgather", "--tp", "3", "--shapes", "2x8,3x5", "--dtypes", "int8", "--dims", "0"]


def drop_last_rows(run_dir: Path, keep: int) -> None:
    """What a killed run leaves: its first rows."""
    lines = (run_dir / "results.csv").read_text().splitlines(keepends=True)
    (run_dir / "results.csv").write_text("".join(lines[:1 + keep]))


def test_resume_keeps_the_runs_options_refuses_others_and_one_writer_at_a_time(tmp_path):
    assert invoke(*TINY, "--out", str(tmp_path)).returncode == 0
    run = latest_run(tmp_path, "allgather")
    drop_last_rows(run, keep=1)
    # another --tp than the run's was appended to it silently
    other = invoke("allgather", "--resume", str(run), "--tp", "2")
    assert other.returncode == 2 and "--tp 2 conflicts with the run's --tp 3" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    # a second resume while one holds the run wrote duplicates
    with open(run / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = invoke("allgather", "--resume", str(run))
    assert busy.returncode == 2 and "another rocbench is running this run" in busy.stderr
    # a bare --resume added the default cases
    bare = invoke("allgather", "--resume", str(run))
    assert bare.returncode == 0, bare.stdout[-2000:]
    frame = results(run)
    assert frame["shape"].tolist() == ["2x8", "3x5"] and set(frame["tp"]) == {3}
    assert not frame.duplicated(["case", "backend"]).any() and len(list(tmp_path.iterdir())) == 1
    assert meta(run)["run_options"]["tp"] == "3"


SWEEP = """name: killed
runs:
  - suite: allgather
    tp: 2
    shapes: 2x8
    dtypes: int8
    dims: 0
    correctness_only: true
    skip_batch_probes: true
  - suite: allgather
    tp: 3
    shapes: 4x64,2x8
    dtypes: [bfloat16, int32, int8, bool]
    dims: [0, -1]
    correctness_only: true
    skip_batch_probes: true
  - suite: allgather
    tp: 2
    shapes: 3x5
    dtypes: int8
    dims: 0
    correctness_only: true
    skip_batch_probes: true
"""


def test_a_killed_sweep_says_what_did_not_run_and_resume_finishes_it(tmp_path):
    config = tmp_path / "killed.yaml"
    config.write_text(SWEEP)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "rocbench", "sweep", str(config), "--out", str(out),
                             "--no-report"], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it inside its second run
        second = [c for c in out.glob("sweep-*/allgather-*/results.csv") if "tp=3" in c.read_text()]
        if second and sum(1 for _ in open(second[0])) - 1 >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    (sweep,) = out.glob("sweep-*")
    first_run = sorted(p for p in sweep.iterdir() if p.is_dir())[0]
    first_rows = (first_run / "results.csv").read_bytes()

    # the report said "None: every gated case passed" and never named the runs that did not finish
    assert invoke("report", str(sweep)).returncode == 0
    text = (sweep / "report.md").read_text()
    assert "every planned case ran" not in text and "not a complete pass" in text
    assert "never started" in text and "started, did not finish" in text and "planned rows did not run" in text
    # there was no sweep --resume; its --json printed tables before the JSON
    resumed = invoke("sweep", str(config), "--resume", str(sweep), "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)  # exactly one JSON document on stdout
    assert summary["finished_runs"] == summary["planned_runs"] == 3 and summary["outcome"] == "all passed"
    assert "nothing run (--dry-run)" not in resumed.stdout + resumed.stderr  # validation printed it per run
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(runs) == 3 and (first_run / "results.csv").read_bytes() == first_rows  # finished run kept as it was
    second = results(runs[1])
    assert len(second) == 16 and not second.duplicated(["case", "backend"]).any()
    text = (sweep / "report.md").read_text()
    assert "every planned case ran and every gated case passed" in text
    headings = [line for line in text.splitlines() if line.startswith("## allgather")]
    assert len(headings) == 3 and len(set(headings)) == 3 and all("tp=" in h for h in headings)  # same heading before
    assert "`kernel_us`" not in text and "`graph_us`" not in text  # a CPU run has neither time


def test_compare_names_missing_rows_full_cases_and_checks_its_paths(tmp_path):
    assert invoke("allgather", "--tp", "2", "--shapes", "2x8,3x5", "--dtypes", "int8,bool",
                  "--dims", "0", "--out", str(tmp_path / "base")).returncode == 0
    base = latest_run(tmp_path / "base", "allgather")
    new = tmp_path / "new"
    shutil.copytree(base, new)
    drop_last_rows(new, keep=1)
    proc = invoke("compare", str(base), str(new), "--json")
    summary = json.loads(proc.stdout)  # exit 0 and no word of the 3 rows the new run lacked
    assert proc.returncode == 4 and summary["outcome"] == "planned cases or runs did not run"
    assert len(summary["missing_in_new"]) == 3
    markdown = invoke("compare", str(base), str(new), "--markdown", str(tmp_path / "cmp.md"))
    text = (tmp_path / "cmp.md").read_text()
    assert markdown.returncode == 4 and "missing in new" in text
    assert all(case in text for case in results(base)["case"])  # names were cut at 40 characters, so rows collided
    bad = invoke("compare", str(base), str(new), "--markdown", str(tmp_path / "no" / "such" / "dir.md"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "does not exist" in bad.stderr


def test_dry_run_says_how_long_and_how_much_memory_in_text_and_json(tmp_path):
    proc = invoke(*TINY, "--dry-run", "--json", "--out", str(tmp_path))
    plan = json.loads(proc.stdout)  # --dry-run --json printed no JSON
    assert proc.returncode == 0 and plan["rows"] == 2 and plan["ranks"] == 3
    assert plan["estimate"]["seconds"] > 0 and plan["estimate"]["largest_case_bytes"] >= 15
    assert "estimate: about" in proc.stderr and not list(tmp_path.iterdir())
    config = tmp_path / "c.yaml"
    config.write_text(SWEEP)
    swept = invoke("sweep", str(config), "--dry-run", "--json", "--out", str(tmp_path))
    assert swept.returncode == 0 and len(json.loads(swept.stdout)["runs"]) == 3


@needs_interpreter()  # the moe suite needs a backend: on a CPU platform, the interpreter's
def test_the_memory_estimate_counts_what_building_a_moe_case_holds(tmp_path):
    """A MoE call reads a few experts, but its inputs hold all of them, drawn in fp32 before quantizing: the dry
    run says what building them takes (it said 252 MiB for gpt-oss-120b TP1, whose build passed 24 GB)."""
    proc = invoke("moe", "--tokens", "1", "--tp", "1", "--layout", "separated", "--correctness-only", "--dry-run",
                  "--json", "--out", str(tmp_path))
    plan = json.loads(proc.stdout)
    assert proc.returncode == 0 and plan["estimate"]["largest_case_bytes"] > 8 * 2**30
    assert "while its inputs are built; a call then moves 50.4 MiB" in plan["estimate"]["text"]


def timed_mla_frame() -> pd.DataFrame:
    """MLA rows as a GPU run writes them: one ctx, batch 1/64/128, two head counts, both KV dtypes and paths."""
    suite = registry.get("mla")
    rows = []
    for nhead in (16, 64):
        for batch in (1, 64, 128):
            for kv in ("bfloat16", "float8_e4m3fn"):
                for persist in (False, True):
                    us = batch * nhead * (0.5 if kv.startswith("float8") else 1.0) * (0.8 if persist else 1.0) + 20
                    rows.append({"suite": "mla", "backend": "triton", "nhead": nhead, "batch": batch, "ctx": 4096,
                                 "ctx_dist": "uniform", "kv_dtype": kv, "q_dtype": "bfloat16", "page_size": 64,
                                 "qlen": 1, "persist": persist, "status": "pass", "path": "x" * 60,
                                 "kernel_us_median": us, "graph_us_median": us * 1.05, "algbw_kernel_GBps": 1e6 / us,
                                 "pct_copy_bw_kernel": 1e4 / us, "speedup_vs_split_kv_kernel": 1.25 if persist else None,
                                 "case": f"nhead={nhead},batch={batch},kv={kv},persist={persist}"})
    return pd.DataFrame(rows).reindex(columns=columns_for(suite))


def test_the_default_table_fits_100_columns_and_shows_what_varies():
    """The MLA table had 29 columns: every cell wrapped to a letter or two at 160 columns."""
    frame = timed_mla_frame()
    console = Console(width=200, record=True)
    report.print_table(frame, registry.get("mla"), console)
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 100
    header = next(line for line in lines if "backend" in line)
    assert all(word in header for word in ("nhead", "batch", "kv_dtype", "persist", "kernel us", "graph us", "% copy bw",
                                           "x split kv"))
    assert "ctx" not in header and "path" not in header  # constant axes and the detail stay in the CSV
    wide = Console(width=400, record=True)
    report.print_table(frame, registry.get("mla"), wide, wide=True)
    assert "path" in wide.export_text() and "deterministic" not in header


def test_the_columns_option_picks_them_and_rejects_unknown_ones(tmp_path):
    picked = invoke(*TINY, "--columns", "shape,status,deterministic", "--out", str(tmp_path))
    header = next(line for line in picked.stdout.splitlines() if "status" in line)
    assert picked.returncode == 0 and header.split() == ["shape", "status", "deterministic"]
    bad = invoke(*TINY, "--columns", "shape,latency", "--out", str(tmp_path))
    assert bad.returncode == 2 and "--columns: no column 'latency'" in bad.stderr


@pytest.fixture(autouse=True)
def _close_figures():
    """captured_figures keeps each test's figures open for inspection; closed after it (matplotlib warns past 20)."""
    yield
    plots.plt.close("all")


def captured_figures(monkeypatch, titles: dict | None = None) -> dict:
    figures = {}

    def keep(fig, title, path):
        figures[Path(path).name] = fig
        if titles is not None:
            titles[Path(path).name] = title
    monkeypatch.setattr(plots, "finish", keep)
    return figures


def test_a_latency_title_names_only_the_times_drawn(monkeypatch, tmp_path):
    """A run with --times kernel drew one solid line per series under a title promising dashed graph-time lines."""
    titles = {}
    figures = captured_figures(monkeypatch, titles)
    frame = timed_mla_frame()
    plots.draw(registry.get("mla"), frame, tmp_path)
    assert titles["latency.png"] == "MLA decode latency, kernel (solid) and graph (dashed)"
    frame["graph_us_median"] = float("nan")
    plots.draw(registry.get("mla"), frame, tmp_path)
    assert titles["latency.png"] == "MLA decode latency, kernel time"
    assert all(line.get_linestyle() == "-" for ax in figures["latency.png"].axes for line in ax.lines)
    plots.draw(registry.get("mla"), frame[frame["batch"] == 64], tmp_path)  # one batch: bars
    assert titles["latency.png"] == "MLA decode latency, kernel time"


def test_plots_draw_real_series_over_an_axis_that_varies(monkeypatch, tmp_path):
    """ctx was the x axis of a sweep with one ctx: every series was one dot, the median of different cases."""
    figures = captured_figures(monkeypatch)
    frame = timed_mla_frame()
    for column in ("nhead", "batch", "ctx"):  # a live run holds its case values as text until they are read back
        frame[column] = frame[column].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'Data has no positive values, and therefore cannot be log-scaled'
        plots.draw(registry.get("mla"), frame, tmp_path)
    latency = figures["latency.png"]
    panels = [ax for ax in latency.axes if ax.get_visible() and ax.lines]
    assert len(panels) == 2 and all(ax.get_xlabel() == "batch" for ax in panels)
    for ax in panels:  # 2 KV dtypes x 2 paths, kernel and graph time: 8 lines of 3 batches each
        assert len(ax.lines) == 8 and all(len(line.get_xdata()) == 3 for line in ax.lines)
        assert ax.get_legend() is None  # the one legend sits outside the panels
    assert latency.legends
    heatmap = figures["heatmap_persistent_speedup.png"]
    images = [image for ax in heatmap.axes for image in ax.images]
    assert len(images) == 2  # one panel per KV dtype, never their median
    norm = images[0].norm
    assert type(norm).__name__ == "LogNorm" and abs(norm.vmin * norm.vmax - 1.0) < 1e-9  # a ratio: log, centred at 1x
    assert all(text.get_text().endswith("x") for text in heatmap.axes[0].texts)


def test_a_plot_with_nothing_varying_on_x_is_a_bar_chart(monkeypatch, tmp_path):
    figures = captured_figures(monkeypatch)
    frame = timed_mla_frame()
    one_batch = frame[frame["batch"] == 64]
    plots.draw(registry.get("mla"), one_batch, tmp_path)
    bars = figures["latency.png"]
    assert bars.axes[0].patches and not bars.axes[0].lines


def test_backends_at_one_batch_are_bars_side_by_side_per_case(monkeypatch, tmp_path):
    """An A/B of backends at batch 1 drew one bar per row in backend order: each case's bars sat 8 bars apart."""
    figures = captured_figures(monkeypatch)
    frame = timed_mla_frame()
    one_batch = frame[frame["batch"] == 1]
    other = one_batch.assign(backend="triton_other", kernel_us_median=one_batch["kernel_us_median"] * 2)
    plots.draw(registry.get("mla"), pd.concat([one_batch, other]), tmp_path)
    ax = figures["latency.png"].axes[0]
    cases = [tick.get_text() for tick in ax.get_xticklabels()]
    assert len(cases) == 8 and not any("triton" in case for case in cases)  # 2 heads x 2 KV dtypes x 2 paths
    assert len(ax.patches) == 8 * 2 * 2  # per case: two backends x kernel and graph time
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "triton kernel", "triton graph", "triton_other kernel", "triton_other graph"]
    first, second = ax.patches[0], ax.patches[16]  # triton's and triton_other's kernel bars of the first case
    assert first.get_facecolor() != second.get_facecolor()
    assert second.get_height() == 2 * first.get_height() and abs(second.get_x() - first.get_x()) < 1


def test_an_ab_of_many_series_gives_each_its_own_colour_and_marker(monkeypatch, tmp_path):
    """An A/B of 3 backends x 2 KV dtypes x 2 paths drew 12 lines from matplotlib's 10-colour cycle: two series shared
    one colour and marker (H100 knob A/B, 2026-12-06). Now a colour per backend, a marker per case within it."""
    figures = captured_figures(monkeypatch)
    frame = timed_mla_frame()
    frame = pd.concat([frame.assign(backend=name, kernel_us_median=frame["kernel_us_median"] * (1 + k / 10))
                       for k, name in enumerate(("triton_a", "triton_b", "triton_c"))])
    frame["graph_us_median"] = float("nan")
    plots.draw(registry.get("mla"), frame, tmp_path)
    for ax in figures["latency.png"].axes:
        if not ax.lines:
            continue
        styles = [(line.get_color(), line.get_marker()) for line in ax.lines]
        assert len(styles) == 12 and len(set(styles)) == 12
        by_backend = {line.get_label().split()[0]: line.get_color() for line in ax.lines}
        assert len(set(by_backend.values())) == 3


def test_shapes_sort_by_size_not_as_text():
    shapes = ["64x7168", "1x16160", "2048x16384", "8x7168", "1x1024"]
    assert sorted(shapes, key=plots.sort_key) == ["1x1024", "1x16160", "8x7168", "64x7168", "2048x16384"]


def test_every_row_holds_only_schema_columns_with_their_types(tmp_path):
    """results.csv of a real run: every column is named by the schema (no private keys), every cell has its type."""
    from rocbench.core.results import RESULT_SCHEMA, ResultsWriter

    assert invoke(*TINY, "--out", str(tmp_path)).returncode == 0
    frame = results(latest_run(tmp_path, "allgather"))
    registry.discover("rocbench.suites")
    assert list(frame.columns) == columns_for(registry.get("allgather"))
    for column, kind in RESULT_SCHEMA.items():
        for cell in frame[column].dropna():
            if kind is int:
                assert float(cell) == int(float(cell)), (column, cell)
            elif kind is float:
                float(cell)
            else:
                assert isinstance(cell, str), (column, cell)
    with pytest.raises(ValueError, match="_fatal"):
        ResultsWriter(tmp_path, columns_for(registry.get("allgather"))).append({"status": "pass", "_fatal": True})


def test_the_recorded_command_can_be_typed_again():
    from rocbench.core.results import command_line

    assert command_line(["/repo/rocbench/__main__.py", "sweep", "configs/ci.yaml"]) == \
        "python -m rocbench sweep configs/ci.yaml"
    assert command_line(["/repo/.venv/bin/rocbench", "mla", "--nhead", "64", "--persist"]) == \
        "rocbench mla --nhead 64 --persist"
    assert command_line(["rocbench", "sweep", "my configs/a b.yaml"]) == "rocbench sweep 'my configs/a b.yaml'"
