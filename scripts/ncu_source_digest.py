"""Where a kernel's warps wait, per stretch of its SASS: a digest of Nsight Compute's source page.

Reads the CSV that `ncu --import REPORT.ncu-rep --page source --print-source sass --csv` writes for a report taken
with `--section SourceCounters` (scripts/device_moe.sh ncu-mla-gluon-source) and prints, for every stretch of
--lines SASS lines, its share of the warp-state samples, the most executions of any of its lines (which tells a loop
body, run once per KV block, from set-up code), the instructions that mark what it does (MMAs, conversions, barriers,
loads, shared-memory traffic) and its top stall reasons; then the single lines with the most samples.

A sample is one warp caught in one state, so a partition's stretches add up to the time its warps spent there: in a
warp-specialized kernel, read each partition's stretches against its own total, and a parked warp (a producer
group's idle warps at a barrier) counts as much as a busy one.

--part FIRST-LAST (a partition's lines, read off the stretches) adds its samples by kind of instruction: the MMAs,
their waits, fp8 conversions, shared-memory traffic, the branches (mostly the mbarrier wait loops, each a branch back
to a try-wait), and so on.

    python scripts/ncu_source_digest.py nhead16-batch64-fp8.csv [--lines 100] [--top 25] [--part 300-1600]
"""
from __future__ import annotations

import argparse
import collections
import csv
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

MARKERS = ("QGMMA", "HGMMA", "F2FP", "SYNCS", "UTMALDG", "LDS", "STS", "BAR", "MUFU", "SHFL", "LDG", "STG", "STL",
           "LDL", "EXIT")
SAMPLES = "Warp Stall Sampling (All Samples)"
# (opcode prefix, kind) in order: the first that matches names a line's kind
KINDS = (("QGMMA", "fp8 MMA"), ("HGMMA", "bf16/fp16 MMA"), ("WARPGROUP", "MMA wait"), ("F2FP.F16.E4M3", "fp8 -> fp16"),
         ("LDS", "shared load/store"), ("STS", "shared load/store"), ("STSM", "shared load/store"),
         ("BAR", "CTA/partition barrier"), ("SYNCS", "mbarrier"), ("BRA", "branch (mostly mbarrier wait loops)"),
         ("FENCE", "fence"), ("MUFU", "exp2 / rcp"), ("FMNMX", "max"), ("SHFL", "shuffle"), ("FMUL", "FMUL / FFMA"),
         ("FFMA", "FMUL / FFMA"))


@dataclass(frozen=True)
class SassLine:
    index: int
    source: str
    samples: float
    executed: float
    stalls: dict[str, float]  # reason (ncu's stall_* column less the prefix) -> samples

    @property
    def opcode(self) -> str:
        words = [w for w in self.source.split() if not w.startswith("@")]  # past a predicate
        return words[0] if words else ""


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def read_source_page(path: Path) -> list[SassLine]:
    """The CSV's SASS lines: its first row names the kernel, its second the columns."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header = rows[1]
    col = {name: i for i, name in enumerate(header)}
    reasons = [h for h in header if h.startswith("stall_") and not h.endswith("(Not Issued)")]
    source, samples, executed = col["Source"], col[SAMPLES], col["Instructions Executed"]  # KeyError: not that CSV
    lines = []
    for row in rows[2:]:
        if len(row) < len(header):
            continue
        lines.append(SassLine(len(lines), row[source].strip(), _number(row[samples]), _number(row[executed]),
                              {r.removeprefix("stall_"): _number(row[col[r]]) for r in reasons}))
    return lines


def _top_reasons(lines: list[SassLine], count: int = 3) -> str:
    total = collections.Counter()
    for line in lines:
        total.update(line.stalls)
    samples = sum(total.values())
    return ", ".join(f"{r} {v / samples:.0%}" for r, v in total.most_common(count) if v) if samples else ""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def digest(lines: list[SassLine], stretch: int, top: int) -> str:
    samples = sum(line.samples for line in lines)
    total = samples or 1.0  # shares of nothing are 0%
    stretches = []
    for first in range(0, len(lines), stretch):
        part = lines[first:first + stretch]
        marks = collections.Counter(m for line in part for m in MARKERS if line.opcode.startswith(m))
        stretches.append([f"{first}-{first + len(part) - 1}", f"{sum(x.samples for x in part) / total:.1%}",
                          f"{max(x.executed for x in part):.0f}", " ".join(f"{m} {n}" for m, n in marks.items()),
                          _top_reasons(part)])
    busiest = [[str(line.index), f"{line.samples / total:.2%}", f"{line.executed:.0f}", f"`{line.source[:60]}`",
                _top_reasons([line])] for line in sorted(lines, key=lambda x: -x.samples)[:top]]
    return "\n\n".join([f"{len(lines)} SASS lines, {samples:.0f} warp-state samples",
                         _table(["lines", "samples", "most executed", "marks", "top stalls"], stretches),
                         _table(["line", "samples", "executed", "SASS", "top stalls"], busiest)])


def kinds(lines: list[SassLine], first: int, last: int) -> str:
    """Lines first..last's samples by kind of instruction (KINDS; the rest as other)."""
    part = lines[first:last + 1]
    total = sum(line.samples for line in part) or 1.0
    by_kind = collections.Counter()
    for line in part:
        by_kind[next((kind for prefix, kind in KINDS if line.opcode.startswith(prefix)), "other")] += line.samples
    shares = [[kind, f"{n / total:.1%}"] for kind, n in by_kind.most_common()]
    return f"lines {first}-{last}: {sum(x.samples for x in part):.0f} samples\n\n" + _table(["kind", "share"], shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="ncu --page source --print-source sass --csv output")
    parser.add_argument("--lines", type=int, default=100, help="SASS lines per stretch")
    parser.add_argument("--top", type=int, default=25, help="single lines listed")
    parser.add_argument("--part", action="append", default=[], metavar="FIRST-LAST",
                        help="a partition's lines: its samples by kind of instruction (repeatable)")
    args = parser.parse_args()
    if args.lines < 1 or args.top < 0:
        parser.error("--lines must be at least 1 and --top at least 0")
    try:
        parts = [tuple(int(n) for n in part.split("-")) for part in args.part]
    except ValueError:
        parser.error("--part takes FIRST-LAST, two line numbers")
    if any(len(part) != 2 or part[0] > part[1] for part in parts):
        parser.error("--part takes FIRST-LAST with FIRST <= LAST")
    if not args.csv.is_file():
        parser.error(f"{args.csv}: no such file")
    try:
        lines = read_source_page(args.csv)
    except (KeyError, IndexError, UnicodeDecodeError, csv.Error) as err:
        parser.error(f"{args.csv}: not the CSV of ncu's source page with SASS ({type(err).__name__}: {err})")
    print(digest(lines, args.lines, args.top))
    for first, last in parts:
        print("\n" + kinds(lines, first, last))


if __name__ == "__main__":
    main()
