"""The same rows across several runs side by side: kernel time (and % of the roofline) per model, TP, tokens and
backend, one column per directory (a run, or a folder of runs such as scripts/device_moe.sh writes), then each
variant's path column, which says what the kernels took. `rocbench compare` does two runs with noise and verdicts;
this is for a quick look at many.

    python scripts/variants_table.py results/device/ab-default results/device/ab-upper ..."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def table(directories: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = []
    for directory in directories:
        for csv in sorted(directory.rglob("results.csv")):
            frame = pd.read_csv(csv)
            frame["variant"] = directory.name
            frames.append(frame)
    if not frames:
        raise SystemExit("variants_table: no results.csv under " + ", ".join(map(str, directories)))
    rows = pd.concat(frames)
    rows["cell"] = [f"{us:.1f} ({pct:.0f}%)" if status == "pass" else status
                    for us, pct, status in zip(rows.kernel_us_median, rows.pct_roofline_kernel, rows.status)]
    index = [c for c in ("model", "tp", "tokens", "nhead", "batch", "backend") if c in rows.columns]
    cells = rows.pivot_table(index=index, columns="variant", values="cell", aggfunc="first")
    return cells[[d.name for d in directories if d.name in cells.columns]], rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directories", nargs="+", type=Path)
    cells, rows = table(parser.parse_args().directories)
    with pd.option_context("display.width", 250, "display.max_colwidth", 140):
        print(cells.to_string())
        print(rows[["variant", "backend", "path"]].drop_duplicates().to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
