"""--save-samples: a row's timing samples leave the row for samples.csv, in the order taken (the GPU tier checks
them against a timed row's columns)."""
import math

import pandas as pd

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
    sweep = tmp_path / "s.yaml"
    for key, code in (("save_samples", 0), ("save_sampels", 2)):  # the misspelt key: YAML is checked, not ignored
        sweep.write_text(f"runs:\n  - suite: mla\n    nhead: [16]\n    {key}: true\n")
        proc = invoke("sweep", str(sweep), "--dry-run")
        assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert invoke("mla", "--save-samples", "--dry-run").returncode == 0
