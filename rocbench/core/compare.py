"""Run-vs-run comparison: match rows by (suite, case, backend), flag slowdowns beyond noise and
threshold, and any gate that went from pass to fail."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rocbench.core.report import markdown_table, run_dirs
from rocbench.core.results import BAD_STATUSES, PASS, read_results

KEY = ["suite", "case", "backend"]


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per matched (suite, case, backend)
    only_base: pd.DataFrame
    only_new: pd.DataFrame

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == "REGRESSION"]

    @property
    def gate_flips(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == "GATE FAILED"]

    @property
    def failed(self) -> bool:
        return not self.regressions.empty or not self.gate_flips.empty


def load_rows(path: Path) -> pd.DataFrame:
    return pd.concat([read_results(d) for d in run_dirs(path)], ignore_index=True)


def verdict(row: pd.Series, threshold: float) -> str:
    if row["status_base"] == PASS and row["status_new"] in BAD_STATUSES:
        return "GATE FAILED"
    base, new = row.get("time_us_median_base"), row.get("time_us_median_new")
    if pd.isna(base) or pd.isna(new):
        return "not timed"
    # Beyond noise: the new run's fast tail (p10) is slower than the base's slow tail (p90), so
    # the two spreads do not overlap. Beyond threshold: the medians differ by more than it.
    slower = new > base * (1 + threshold) and row["time_us_p10_new"] > row["time_us_p90_base"]
    faster = new < base * (1 - threshold) and row["time_us_p90_new"] < row["time_us_p10_base"]
    return "REGRESSION" if slower else ("improved" if faster else "same (within noise/threshold)")


def case_columns(frame: pd.DataFrame) -> list[str]:
    """The case's own columns: between the leading ones and the first result column."""
    columns = list(frame.columns)
    return columns[columns.index("backend") + 1:columns.index("ranks")]


def match_key(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """(suite, case, backend) when the case ids agree; for runs of another version, whose case ids name
    other columns (e.g. MoE's padded became hidden_pad/inter_pad), the case columns both share."""
    if set(a["case"]) & set(b["case"]):
        return KEY
    shared = [c for c in case_columns(a) if c in case_columns(b)]
    key = ["suite", "backend", *shared]
    if a.duplicated(key).any() or b.duplicated(key).any():
        return KEY
    return key


def compare(base: Path, new: Path, threshold: float = 0.05) -> Comparison:
    a, b = load_rows(base), load_rows(new)
    key = match_key(a, b)
    cols = list(dict.fromkeys(key + KEY + ["status", "time_us_median", "time_us_p10", "time_us_p90", "detail"]))
    a, b = a[cols], b[cols]
    if key != KEY:  # the case shown is the new run's
        a = a.drop(columns="case")
    merged = a.merge(b, on=key, how="outer", suffixes=("_base", "_new"), indicator=True)
    matched = merged[merged["_merge"] == "both"].drop(columns="_merge").copy()
    matched["change"] = matched["time_us_median_new"] / matched["time_us_median_base"] - 1
    matched["noise"] = ((matched["time_us_p90_base"] - matched["time_us_p10_base"]) / matched["time_us_median_base"]
                        ).combine((matched["time_us_p90_new"] - matched["time_us_p10_new"]) / matched["time_us_median_new"], max)
    matched["verdict"] = matched.apply(verdict, axis=1, threshold=threshold) if len(matched) else []
    return Comparison(matched, merged[merged["_merge"] == "left_only"][key], merged[merged["_merge"] == "right_only"][key])


def to_markdown(result: Comparison, base: Path, new: Path, threshold: float) -> str:
    show = result.table.copy()
    show["change"] = show["change"].map(lambda v: "" if pd.isna(v) else f"{v:+.1%}")
    show["noise"] = show["noise"].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
    flagged = show[show["verdict"].isin(["REGRESSION", "GATE FAILED"])]
    cols = ["suite", "backend", "case", "status_base", "status_new", "time_us_median_base", "time_us_median_new",
            "change", "noise", "verdict"]
    lines = [f"# rocbench compare", "", f"- base: `{base}`", f"- new: `{new}`",
             f"- threshold {threshold:.0%}; a slowdown counts only beyond it AND beyond noise (new p10 > base p90)",
             f"- {len(result.table)} matched rows, {len(result.regressions)} regressions, "
             f"{len(result.gate_flips)} gates that went from pass to fail, {len(result.only_base)} rows only in base, "
             f"{len(result.only_new)} only in new", ""]
    if not flagged.empty:
        lines += ["## Flagged", "", markdown_table(flagged, cols), ""]
    lines += ["## All matched rows", "", markdown_table(show, cols), ""]
    return "\n".join(lines)
