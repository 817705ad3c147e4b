"""scripts/ncu_digest.py reads Nsight Compute's text reports into one row per launch, each launch with its own
metrics (not the next launch's), durations in microseconds whatever unit ncu printed."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _launch(name: str, grid: str, unit: str, duration: str, dram: str, regs: str) -> str:
    return f"""  {name} ({grid})x(128, 1, 1), Context 1, Stream 7, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    ----------------------- ----------- ------------
    Metric Name             Metric Unit Metric Value
    ----------------------- ----------- ------------
    DRAM Throughput                   %        {dram}
    Duration                         {unit}        {duration}
    Section: Launch Statistics
    Registers Per Thread             register/thread             {regs}
    Waves Per SM                                                1.86
    Section: Occupancy
    Theoretical Occupancy                     %        18.75
    Achieved Occupancy                        %        16.02
"""


def test_each_launch_keeps_its_own_metrics_and_durations_come_in_us(tmp_path):
    report = tmp_path / "moe-x1.txt"
    report.write_text("==PROF== Connected to process 1\n"
                      + _launch("_moe_gemm1_kernel", "46, 4, 4", "us", "43.36", "19.21", "159")
                      + _launch("_moe_combine_kernel", "1, 3, 1", "ns", "950.5", "0.42", "40"))
    empty = tmp_path / "crashed.txt"
    empty.write_text("==ERROR== the application returned an error code (1)\n")
    out = subprocess.run([sys.executable, "scripts/ncu_digest.py", str(report), str(empty)], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| moe-x1")]
    assert rows[0][1:6] == ["moe_gemm1", "46,4,4x128", "43.36", "19.21", ""]
    assert rows[0][6] == "159" and rows[0][9] == "16.02 (18.75)" and rows[0][10] == "1.86"
    assert rows[1][1:5] == ["moe_combine", "1,3,1x128", "0.95", "0.42"] and rows[1][6] == "40"
    assert rows[2][1] == "**sum**" and rows[2][3] == "44.31"
    assert "| crashed | (no profiled launch" in out
