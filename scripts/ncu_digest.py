"""A markdown table of Nsight Compute text reports (`ncu --section ...` output, as scripts/device_moe.sh's `ncu` part
writes them): one row per profiled kernel launch with the metrics that say where its time goes.

    python scripts/ncu_digest.py ncu/*.txt > digest.md

A report holds every launch ncu profiled (--launch-count); `--last N` keeps each file's last N (the gate's timed call
after its warm-up, say). Each file's launches are followed by a sum of their durations.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

# "  _moe_gemm1_kernel (46, 4, 4)x(128, 1, 1), Context 1, Stream 7, Device 0, CC 9.0"
LAUNCH = re.compile(r"^\s{2}(\S+) \(([\d, ]+)\)x\(([\d, ]+)\), Context")
# "    DRAM Throughput                   %        19.21"
METRIC = re.compile(r"^\s{4}(\S.*?\S)\s{2,}(\S+(?:/\S+)?)?\s+([\d.,]+|n/a|no data)\s*$")

COLUMNS = {  # column title: ncu metric name
    "duration us": "Duration",
    "DRAM %": "DRAM Throughput",
    "issue slots %": "Issue Slots Busy",
    "regs": "Registers Per Thread",
    "spill requests": "Local Memory Spilling Requests",
    "smem KB": "Dynamic Shared Memory Per Block",
    "occupancy % (theor.)": "Achieved Occupancy",
    "waves/SM": "Waves Per SM",
    "L2 hit %": "L2 Hit Rate",
    "cycles/issue": "Warp Cycles Per Issued Instruction",
}


@dataclass
class Launch:
    kernel: str
    grid: str
    block: str
    metrics: dict[str, str] = field(default_factory=dict)

    def cell(self, title: str) -> str:
        value = self.metrics.get(COLUMNS[title], "")
        if title.startswith("occupancy") and "Theoretical Occupancy" in self.metrics:
            value += f" ({self.metrics['Theoretical Occupancy']})"
        return value


def launches(text: str) -> list[Launch]:
    found: list[Launch] = []
    for line in text.splitlines():
        if match := LAUNCH.match(line):
            grid, block = (",".join(part.split(", ")) for part in match.group(2, 3))
            found.append(Launch(match.group(1).strip("_").removesuffix("_kernel"), grid, block.split(",")[0]))
        elif found and (match := METRIC.match(line)):
            found[-1].metrics.setdefault(match.group(1), match.group(3))  # the first section's value
    return found


def duration_us(launch: Launch) -> float:
    value = float(launch.metrics.get("Duration", "0").replace(",", ""))
    # ncu picks the unit per launch; the table's column is in us
    return value / 1000 if launch.metrics.get("_duration_unit") == "ns" else value


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def table(paths: list[Path], last: int | None) -> str:
    titles = list(COLUMNS)
    lines = [_row("report", "kernel", "grid x block", *titles), "|" + "---|" * (3 + len(titles))]
    for path in paths:
        text = path.read_text(errors="replace")
        found = launches(text)
        units = re.findall(r"^\s{4}Duration\s+(\w+)\s", text, flags=re.M)
        for launch, unit in zip(found, units):
            launch.metrics["_duration_unit"] = unit
        found = found[-last:] if last else found
        if not found:
            lines.append(_row(path.stem, "(no profiled launch: see the report)", *[""] * (1 + len(titles))))
            continue
        for launch in found:
            cells = [launch.cell(title) for title in titles]
            cells[0] = f"{duration_us(launch):.2f}"
            lines.append(_row(path.stem, launch.kernel, f"{launch.grid}x{launch.block}", *cells))
        total = sum(duration_us(launch) for launch in found)
        lines.append(_row(path.stem, "**sum**", "", f"{total:.2f}", *[""] * (len(titles) - 1)))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--last", type=int, default=None, help="each report's last N launches only")
    options = parser.parse_args()
    print(table(options.reports, options.last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
