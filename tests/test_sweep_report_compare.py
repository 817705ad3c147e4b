"""YAML sweeps (and their errors), markdown reports, run-vs-run compare, JUnit and JSON output."""
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

import rocbench.suites  # noqa: F401 - registers the built-in suites
from rocbench.core.cli.config import ConfigError, plan
from tests.helpers import REPO, needs_interpreter, results, invoke

EXAMPLE = REPO / "results" / "examples" / "moe-deepseek-r1-tp8-h100"


def write(tmp_path, text, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, line, words", [
    ("runs:\n  - suite: mla\n    nhed: 16\n", 3, "key 'nhed': mla has no such option"),
    ("runs:\n  - suite: mla\n    nhead: [16\n", 4, "YAML syntax error"),
    ("runs:\n  - suite: attention\n", 2, "unknown suite 'attention'"),
    ("runs:\n  - nhead: 16\n", 2, "needs `suite:`"),
    ("runs:\n  - suite: allgather\n    tp: [2, 4]\n", 3, "use `each:`"),
    ("runs:\n  - suite: mla\n    out: /tmp\n", 3, "belongs to `rocbench sweep`"),
    ("runs:\n  - suite: mla\n    correctness_only: maybe\n", 3, "expected true or false"),
    ("name: x\nrun:\n  - suite: mla\n", 2, "unknown top-level key"),
    ("name: x\n", 1, "needs a non-empty list of runs"),
])
def test_config_errors_name_file_key_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        plan(path)
    assert str(err.value).startswith(f"{path}:{line}") and words in str(err.value), str(err.value)


def test_option_error_is_mapped_to_its_key_and_line(tmp_path):
    path = write(tmp_path, "runs:\n  - suite: mla\n    batch: 2\n    nhead: [16, 24]\n")
    proc = invoke("sweep", str(path), "--dry-run", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"rocbench: error: {path}:4: key 'nhead': mla: --nhead: 24 is not one of [16, 32, 64, 128]"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, value, flag", [
    ("iters", "0", "--iters"), ("timeout", "0.01", "--timeout"), ("nhead", "[16, 24]", "--nhead"),
    ("kv_dtype", "fp4", "--kv-dtype"), ("page_size", "3", "--page-size"), ("ctx_dist", "zipf", "--ctx-dist"),
])
def test_yaml_and_command_line_reject_a_value_with_the_same_message(tmp_path, key, value, flag):
    """One parser per option: the YAML error is the command line's message, plus file, line, key and suite."""
    path = write(tmp_path, f"runs:\n  - suite: mla\n    {key}: {value}\n")
    with pytest.raises(ConfigError) as err:
        plan(path)
    cli = invoke("mla", flag, value.strip("[]").replace(" ", ""), "--dry-run")
    assert cli.returncode == 2
    message = cli.stderr.strip().removeprefix("rocbench: error: ")
    assert str(err.value) == f"{path}:3: key '{key}': mla: {message}"


def test_unreadable_config(tmp_path):
    proc = invoke("sweep", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "cannot read the config" in proc.stderr


def test_each_expands_and_lists_join():
    name, runs = plan(REPO / "configs" / "ci.yaml")
    assert name == "ci"
    gathers = [r for r in runs if r.suite == "allgather"]
    assert [r.values["tp"] for r in gathers] == [2, 4]
    assert gathers[0].values["dims"] == [0, -1] and gathers[0].values["correctness_only"] is True


def test_shipped_configs_parse():
    for config in (REPO / "configs").glob("*.yaml"):
        _, runs = plan(config)
        assert runs, config


@needs_interpreter()
def test_ci_config_runs_and_reports(tmp_path):
    out = tmp_path / "out"
    junit = tmp_path / "ci.xml"
    proc = invoke("sweep", str(REPO / "configs" / "ci.yaml"), "--out", str(out), "--junit", str(junit), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["exit_code"] == 0 and len(summary["runs"]) == 4
    sweep_dir = Path(summary["sweep_dir"])
    report = (sweep_dir / "report.md").read_text()
    assert "every gated case passed" in report and "## mla" in report and "## moe" in report
    meta = json.loads((sweep_dir / "meta.json").read_text())
    assert meta["wall_s"] > 0 and all(r["exit_code"] == 0 for r in meta["runs"])
    tree = ET.parse(junit).getroot()
    assert tree.tag == "testsuites" and len(tree.findall("testsuite")) == 4
    total_rows = sum(len(results(sweep_dir / r["run_dir"])) for r in meta["runs"])
    assert len(tree.findall(".//testcase")) == total_rows
    # the same config run by main at a2c4e27 (before the typed core): every row is there again, under the same case
    old = REPO / "results" / "examples" / "ci-cpu-a2c4e27"
    compared = invoke("compare", str(old), str(sweep_dir), "--json")
    verdict = json.loads(compared.stdout.strip().splitlines()[-1])
    assert compared.returncode == 0 and verdict["matched"] == total_rows == 26, verdict
    assert not verdict["missing_in_new"] and not verdict["only_in_new"] and not verdict["gate_flips"], verdict


def test_junit_carries_gate_detail(tmp_path):
    junit = tmp_path / "j.xml"
    proc = invoke("allgather", "--tp", "2", "--shapes", "4x64", "--dtypes", "int32", "--dims", "0",
                    "--out", str(tmp_path), "--inject", "flip-byte", "--junit", str(junit),
                    env={"ROCBENCH_ALLOW_INJECT": "1"})
    assert proc.returncode == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None and "elements differ" in failure.text


def test_report_from_a_stored_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(EXAMPLE, run)
    for p in run.rglob("*"):
        p.chmod(0o644)
    proc = invoke("report", str(run))
    assert proc.returncode == 0, proc.stderr
    text = (run / "report.md").read_text()
    assert text.index("Failed, faulted or timed-out") < text.index("## moe")
    assert "![heatmap_separated_vs_interleave](heatmap_separated_vs_interleave.png)" in text
    assert (run / "heatmap_separated_vs_interleave.png").stat().st_size > 1000
    assert "| triton" in text and "best % copy bw" in text


def test_report_gives_each_rows_kernel_parts_whole(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(EXAMPLE, run)
    frame = pd.read_csv(run / "results.csv")
    parts = "_moe_gemm1_kernel_with_a_long_name 61.2 us, _moe_gemm2_kernel 30.4 us, _combine 4.1 us"
    frame["kernel_parts"] = [parts if status == "pass" else None for status in frame["status"]]
    frame.to_csv(run / "results.csv", index=False)
    (run / "meta.json").chmod(0o644)
    invoke("report", str(run))
    assert f"| {parts} |" in (run / "report.md").read_text().replace("  ", " ")


def test_report_lists_failures_first(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(EXAMPLE, run)
    frame = pd.read_csv(run / "results.csv", dtype={"detail": object})
    frame.loc[3, ["status", "detail"]] = ["fail", "first call: 7/10 elements outside tolerance"]
    frame.to_csv(run / "results.csv", index=False)
    (run / "meta.json").chmod(0o644)
    invoke("report", str(run))
    text = (run / "report.md").read_text()
    assert "read these first" in text and "7/10 elements outside tolerance" in text.split("## moe")[0]


def slowed(run: Path, dest: Path, factor: float, rows: list[int]) -> Path:
    shutil.copytree(run, dest)
    for p in dest.rglob("*"):
        p.chmod(0o644)
    frame = pd.read_csv(dest / "results.csv")
    for column in [c for c in frame.columns if c.rsplit("_", 1)[-1] in ("median", "p10", "p90") and "_us_" in c]:
        frame.loc[rows, column] = frame.loc[rows, column] * factor
    frame.to_csv(dest / "results.csv", index=False)
    return dest


def test_compare_flags_a_planted_20pct_regression_only(tmp_path):
    new = slowed(EXAMPLE, tmp_path / "new", 1.20, [2])
    slowed(EXAMPLE, tmp_path / "noise", 1.01, [0, 1, 2, 3, 4, 5, 6, 7])
    proc = invoke("compare", str(EXAMPLE), str(new), "--json")
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    cases = {r["case"] for r in summary["regressions"]}
    assert len(cases) == 1 and cases.pop().startswith("model=deepseek-r1,tp=8,tokens=16")
    assert {r["time"] for r in summary["regressions"]} == {"kernel", "graph"}  # both times slowed, both checked
    assert all(r["change"] == pytest.approx(0.20, abs=1e-6) for r in summary["regressions"])
    calm = invoke("compare", str(EXAMPLE), str(tmp_path / "noise"), "--markdown", str(tmp_path / "c.md"))
    assert calm.returncode == 0, calm.stdout
    assert "0 regressions" in (tmp_path / "c.md").read_text()


def test_compare_flags_a_gate_that_went_from_pass_to_fail(tmp_path):
    new = slowed(EXAMPLE, tmp_path / "new", 1.0, [])
    frame = pd.read_csv(new / "results.csv", dtype={"detail": object})
    frame.loc[5, ["status", "detail"]] = ["fail", "differs bitwise from its twin"]
    frame.to_csv(new / "results.csv", index=False)
    proc = invoke("compare", str(EXAMPLE), str(new))
    assert proc.returncode == 1 and "GATE FAILED" in proc.stdout


def test_selfcheck_needs_a_gpu():
    proc = invoke("selfcheck")  # the CLI tests hide GPUs, so this holds on any machine
    assert proc.returncode == 2 and "needs a GPU" in proc.stderr


def tick_labels(x: list[float], y: list[float], logy: bool) -> tuple[list[str], list[str]]:
    """The x and y tick labels (y's minor ones included) a line through (x, y) gets from plots.log_axes."""
    from rocbench.core.reporting.plots import log_axes, plt  # plots selects the Agg backend first
    fig, ax = plt.subplots()
    ax.plot(x, y)
    log_axes(ax, pd.Series(x), logy=logy)
    fig.canvas.draw()
    x_shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    y_shown = [t.get_text() for t in ax.get_yticklabels() + ax.get_yminorticklabels() if t.get_text()]
    plt.close(fig)
    return x_shown, y_shown


@pytest.mark.parametrize(("x", "y", "x_labels", "y_labels"), [
    ([8, 16, 32], [22.0, 70.0], ["8", "16", "32"], ["30", "40", "60"]),  # under a decade: minor ticks labelled
    ([1, 64, 4096], [12.0, 5500.0], ["1", "64", "4096"], ["100", "1000"]),
])
def test_log_axes_read_as_plain_numbers(x, y, x_labels, y_labels):
    """Batch and token axes read 8, 16, 32 (not 2^3) and times 60 (not 6 x 10^1)."""
    x_shown, y_shown = tick_labels(x, [y[0], (y[0] * y[1]) ** 0.5, y[1]], logy=True)
    shown = x_shown + y_shown
    assert set(x_labels) <= set(x_shown) and set(y_labels) <= set(y_shown)
    assert not any("^" in text or "times" in text or "e+" in text for text in shown), shown


def test_log_axes_keep_powers_of_two_for_sizes():
    x_shown, _ = tick_labels([2 ** 12, 2 ** 27], [10, 300], logy=False)
    assert x_shown and all("2^" in text for text in x_shown), x_shown
