"""Run-vs-run comparison: match rows by (suite, case, backend), flag slowdowns beyond noise and
threshold, and any gate that went from pass to fail."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rocbench.core.exitcodes import Exit
from rocbench.core.reporting.report import markdown_table, run_dirs
from rocbench.core.results import BAD_STATUSES, PASS, TIMES, read_results, time_columns

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

    @property
    def exit_code(self) -> Exit:
        """A regression or a gate flip fails; rows of the base that the new run lacks make it incomplete."""
        if self.failed:
            return Exit.FAILED
        return Exit.INCOMPLETE if not self.only_base.empty else Exit.PASSED


def load_rows(path: Path) -> pd.DataFrame:
    return pd.concat([read_results(d) for d in run_dirs(path)], ignore_index=True)


def time_verdict(row: pd.Series, basis: str, threshold: float) -> str:
    base, new = row.get(f"{basis}_us_median_base"), row.get(f"{basis}_us_median_new")
    if pd.isna(base) or pd.isna(new):
        return "not timed"
    # Beyond noise: the new run's fast tail (p10) is slower than the base's slow tail (p90), so
    # the two spreads do not overlap. Beyond threshold: the medians differ by more than it.
    slower = new > base * (1 + threshold) and row[f"{basis}_us_p10_new"] > row[f"{basis}_us_p90_base"]
    faster = new < base * (1 - threshold) and row[f"{basis}_us_p90_new"] < row[f"{basis}_us_p10_base"]
    return "REGRESSION" if slower else ("improved" if faster else "same")


def verdict(row: pd.Series) -> str:
    """The row's verdict over both times: a gate flip first, then a regression in either time."""
    if row["status_base"] == PASS and row["status_new"] in BAD_STATUSES:
        return "GATE FAILED"
    verdicts = {basis: row[f"verdict_{basis}"] for basis in TIMES}
    if "REGRESSION" in verdicts.values():
        return "REGRESSION"
    if set(verdicts.values()) == {"not timed"}:
        return "not timed"
    return "improved" if "improved" in verdicts.values() else "same (within noise/threshold)"


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
    times = [c for basis in TIMES for c in time_columns(basis)]
    cols = list(dict.fromkeys(key + KEY + ["status", *times, "detail"]))
    a, b = a.reindex(columns=cols), b.reindex(columns=cols)  # a run of an older version has no kernel time
    if key != KEY:  # the case shown is the new run's
        a = a.drop(columns="case")
    merged = a.merge(b, on=key, how="outer", suffixes=("_base", "_new"), indicator=True)
    matched = merged[merged["_merge"] == "both"].drop(columns="_merge").copy()
    for basis in TIMES:
        median, p10, p90 = time_columns(basis)
        matched[f"change_{basis}"] = matched[f"{median}_new"] / matched[f"{median}_base"] - 1
        matched[f"noise_{basis}"] = np.fmax(  # the wider spread of the two; NaN only if neither was timed
            (matched[f"{p90}_base"] - matched[f"{p10}_base"]) / matched[f"{median}_base"],
            (matched[f"{p90}_new"] - matched[f"{p10}_new"]) / matched[f"{median}_new"])
        matched[f"verdict_{basis}"] = (matched.apply(time_verdict, axis=1, basis=basis, threshold=threshold)
                                       if len(matched) else [])
    matched["verdict"] = matched.apply(verdict, axis=1) if len(matched) else []
    return Comparison(matched, merged[merged["_merge"] == "left_only"][key], merged[merged["_merge"] == "right_only"][key])


def regression_records(result: Comparison) -> list[dict]:
    """One record per (row, time) that regressed."""
    records = []
    for _, row in result.regressions.iterrows():
        for basis in TIMES:
            if row[f"verdict_{basis}"] == "REGRESSION":
                records.append({**{k: row[k] for k in KEY}, "time": basis, "change": row[f"change_{basis}"],
                                "noise": row[f"noise_{basis}"]})
    return records


def to_markdown(result: Comparison, base: Path, new: Path, threshold: float) -> str:
    show = result.table.copy()
    for basis in TIMES:
        show[f"change_{basis}"] = show[f"change_{basis}"].map(lambda v: "" if pd.isna(v) else f"{v:+.1%}")
        show[f"noise_{basis}"] = show[f"noise_{basis}"].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
    flagged = show[show["verdict"].isin(["REGRESSION", "GATE FAILED"])]
    cols = ["suite", "backend", "case", "status_base", "status_new"]
    for basis in TIMES:
        cols += [f"{basis}_us_median_base", f"{basis}_us_median_new", f"change_{basis}", f"noise_{basis}"]
    cols.append("verdict")
    lines = ["# rocbench compare", "", f"- base: `{base}`", f"- new: `{new}`",
             f"- both times are checked (kernel_us and graph_us); a slowdown in either counts only beyond the "
             f"threshold {threshold:.0%} AND beyond noise (new p10 > base p90)",
             f"- {len(result.table)} matched rows, {len(result.regressions)} regressions, "
             f"{len(result.gate_flips)} gates that went from pass to fail, {len(result.only_base)} rows only in base, "
             f"{len(result.only_new)} only in new", ""]
    if not flagged.empty:
        lines += ["## Flagged", "", markdown_table(flagged, cols, full=("case",)), ""]
    if not result.only_base.empty:
        lines += ["## In base, missing in new (not run there)", "",
                  markdown_table(result.only_base, list(result.only_base.columns), full=("case",)), ""]
    if not result.only_new.empty:
        lines += ["## Only in new", "", markdown_table(result.only_new, list(result.only_new.columns), full=("case",)), ""]
    lines += ["## All matched rows", "", markdown_table(show, cols, full=("case",)), ""]
    return "\n".join(lines)
