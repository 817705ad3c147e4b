"""What rocbench's exit code says, defined once (the README lists them): every command returns one of these."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import pandas as pd

from rocbench.core.results import BAD_STATUSES, PASS


class Exit(IntEnum):
    PASSED = 0  # every planned case ran, and every case that could be judged passed (compare: no regression)
    FAILED = 1  # a gate failed, faulted or timed out (compare: a slowdown beyond noise, or a gate that flipped)
    BAD_INPUT = 2  # one line on stderr says what to change
    NOTHING_JUDGED = 3  # nothing ran that could be judged: every case unsupported, or no case at all
    INCOMPLETE = 4  # planned cases or runs did not run (the run was killed or ended early; compare: rows missing)
    INTERRUPTED = 130  # Ctrl-C (SIGINT) or the launcher's SIGTERM: the finished rows are kept

    @property
    def meaning(self) -> str:
        return {Exit.PASSED: "all passed", Exit.FAILED: "a case failed, faulted or timed out, or a time regressed",
                Exit.BAD_INPUT: "bad input", Exit.NOTHING_JUDGED: "nothing ran that could be judged",
                Exit.INCOMPLETE: "planned cases or runs did not run", Exit.INTERRUPTED: "interrupted"}[self]


# When several apply, the first in this order is the one reported.
PRIORITY = (Exit.BAD_INPUT, Exit.FAILED, Exit.INTERRUPTED, Exit.INCOMPLETE, Exit.NOTHING_JUDGED, Exit.PASSED)


def worst(codes) -> Exit:
    """The code of several runs (a sweep): the first of PRIORITY that any of them has."""
    present = {Exit(code) for code in codes}
    return next((code for code in PRIORITY if code in present), Exit.PASSED)


def of_rows(frame: pd.DataFrame, planned: int, interrupted: bool = False) -> Exit:
    """A run's code from its rows and how many (case, backend) rows it planned."""
    statuses = frame["status"] if not frame.empty else pd.Series(dtype=str)
    if statuses.isin(BAD_STATUSES).any():
        return Exit.FAILED
    if interrupted:
        return Exit.INTERRUPTED
    if len(frame) < planned:
        return Exit.INCOMPLETE
    if not (statuses == PASS).any():
        return Exit.NOTHING_JUDGED
    return Exit.PASSED


@dataclass(frozen=True)
class Outcome:
    """What a command ends with: its exit code, and the run directory it wrote (None when nothing ran: a dry
    run, --explain, bad input)."""

    code: int
    run_dir: Path | None
