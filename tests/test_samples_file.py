"""--save-samples: a row's timing samples leave the row for samples.csv, in the order taken (the GPU tier checks
them against a timed row's columns)."""
import io
import math

import pandas as pd
import pytest

import rocbench.suites  # noqa: F401 - registers the built-in suites
from rocbench.core.cli.config import ConfigError, plan
from rocbench.core.results import SAMPLES_FILE, append_samples, samples_key, take_samples
from tests.helpers import invoke


def test_samples_leave_the_row_and_land_in_order_with_dropped_ones_empty(tmp_path):
    row = {"status": "pass", samples_key("graph"): (3.0, math.nan, 1.0)}
    taken = take_samples(row)
    assert row == {"status": "pass"} and list(taken) == ["graph"]
    assert taken["graph"][::2] == [3.0, 1.0] and math.isnan(taken["graph"][1])
    append_samples(tmp_path, "nhead=16", "triton", taken)
    append_samples(tmp_path, "nhead=16", "triton", take_samples({samples_key("kernel"): [2.5, 2.0]}))
    append_samples(tmp_path, "nhead=16", "other", take_samples({"status": "fail"}))  # nothing timed: no lines
    lines = (tmp_path / SAMPLES_FILE).read_text().splitlines()
    assert lines[0] == "case,backend,time,index,us" and len(lines) == 6  # one header across appends
    frame = pd.read_csv(tmp_path / SAMPLES_FILE)
    assert frame["time"].tolist() == ["graph"] * 3 + ["kernel"] * 2 and frame["index"].tolist() == [0, 1, 2, 0, 1]
    assert frame["us"].isna().tolist() == [False, True, False, False, False] and frame["us"].iloc[3] == 2.5


def test_the_option_is_one_declaration_for_the_cli_and_yaml(tmp_path):
    """The YAML key through the config's own checks (no backend needed: a GPU box's tests see a CPU platform, where
    the Triton interpreter may be unusable), the flag on the suite every machine runs (allgather over gloo)."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text("runs:\n  - suite: mla\n    nhead: [16]\n    save_samples: true\n")
    (run,) = plan(sweep)[1]
    assert run.values["save_samples"] is True
    sweep.write_text("runs:\n  - suite: mla\n    save_sampels: true\n")  # misspelt: YAML is checked, not ignored
    with pytest.raises(ConfigError, match="save_sampels"):
        plan(sweep)
    proc = invoke("allgather", "--tp", "2", "--save-samples", "--dry-run")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_the_recorder_writes_a_rows_samples_apart_from_its_columns(tmp_path):
    """A rank's row (graph samples) and its kernel-time fragment (kernel samples) through the recorder: results.csv
    keeps its schema, samples.csv gets both times' samples under the row's case and backend."""
    from rich.console import Console

    from rocbench.core.cli.command import suite_params
    from rocbench.core.harness.ranks import Task
    from rocbench.core.harness.recorder import RunRecorder
    from rocbench.core.options import RunOptions
    from rocbench.core.platform import detect
    from tests import toy_addrmsnorm

    suite = toy_addrmsnorm.SUITE
    params = suite_params(suite, {"dtype": "fp32"})
    cases = suite.cases(params)
    backends = list(suite.backends)
    recorder = RunRecorder.open(suite, params, RunOptions(save_samples=True), detect(), backends, cases, tmp_path,
                                None, Console(file=io.StringIO()))
    backend = backends[0].name
    recorder.record(Task(0, backend), {"status": "pass", "graph_us_median": 2.0, samples_key("graph"): (2.0, 2.5)})
    recorder.add_kernel_time(Task(0, backend), {"kernel_us_median": 1.0, samples_key("kernel"): (1.0,)})
    frame = pd.read_csv(recorder.run_dir / "results.csv")
    assert not [c for c in frame.columns if c.startswith("_")] and frame["kernel_us_median"].tolist() == [1.0]
    samples = pd.read_csv(recorder.run_dir / SAMPLES_FILE)
    assert samples[["case", "backend"]].drop_duplicates().values.tolist() == [[cases[0].id, backend]]
    assert samples["time"].tolist() == ["graph", "graph", "kernel"] and samples["us"].tolist() == [2.0, 2.5, 1.0]
