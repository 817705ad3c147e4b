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


def test_source_digest_adds_each_stretchs_samples_and_names_its_instructions(tmp_path):
    """scripts/ncu_source_digest.py: each stretch of SASS lines gets its share of the samples, its most executed line
    and its marking instructions (a predicate skipped), and the lines with the most samples come first."""
    columns = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Warp Stall Sampling (Not-issued Samples)",
               "Instructions Executed", "stall_barrier", "stall_long_sb", "stall_long_sb (Not Issued)"]
    lines = [("QGMMA.64x16x32.F32.E4M3.E4M3 R24, gdesc[UR8], R24", 10, 16384, 0, 0),
             ("@!P2  BRA 0x7f00", 30, 4096, 0, 30),
             ("@!P5  SYNCS.ARRIVE.TRANS64.A1T0 RZ, [R4], RZ", 0, 192, 0, 0),
             ("NOP", 60, 267, 60, 0)]
    rows = [f'"{0x1000 + 16 * i:#x}","{src}","{n}","{n}","{ex}","{bar}","{lsb}","0"'
            for i, (src, n, ex, bar, lsb) in enumerate(lines)]
    page = tmp_path / "page.csv"
    page.write_text('"Kernel Name","_kernel",\n' + ",".join(f'"{c}"' for c in columns) + "\n" + "\n".join(rows) + "\n")
    out = subprocess.run([sys.executable, "scripts/ncu_source_digest.py", str(page), "--lines", "2", "--top", "2",
                          "--part", "0-2"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "4 SASS lines, 100 warp-state samples" in out
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    assert ["0-1", "40.0%", "16384", "QGMMA 1", "long_sb 100%"] in cells
    assert ["2-3", "60.0%", "267", "SYNCS 1", "barrier 100%"] in cells
    top = [row for row in cells if row[0] in ("3", "1")]
    assert top[0][:4] == ["3", "60.00%", "267", "`NOP`"] and top[1][:2] == ["1", "30.00%"]
    kinds = out[out.index("lines 0-2: 40 samples"):]  # the partition: the MMA line's 10 and the branch's 30
    shares = [[c.strip() for c in line.strip("|").split("|")] for line in kinds.splitlines() if line.startswith("| ")]
    assert ["branch (mostly mbarrier wait loops)", "75.0%"] in shares and ["fp8 MMA", "25.0%"] in shares
