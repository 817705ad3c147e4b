"""Summary statistics of timing samples and the rule that decides when there are enough of them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rocbench.core.options import DEFAULTS

# z for a two-sided 95% interval: the median's order-statistic interval is n/2 +- z*sqrt(n)/2 ranks.
Z95 = 1.96


def median_noise(samples: Sequence[float]) -> float:
    """Relative noise of the median: half the width of its distribution-free 95% confidence interval
    (order statistics n/2 -/+ 1.96*sqrt(n)/2), over the median. Shrinks like 1/sqrt(n); inf below 3 samples."""
    values = np.sort(np.asarray([s for s in samples if not math.isnan(s)], dtype=np.float64))
    n = len(values)
    if n < 3:
        return math.inf
    half = Z95 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    median = float(np.median(values))
    return (values[hi] - values[lo]) / (2 * median) if median > 0 else math.inf


@dataclass(frozen=True)
class StoppingRule:
    """Sample until the median's relative noise is under `max_rel_noise` (after `min_samples`), or `max_seconds`
    of sampling have passed; `fixed` (a user's --iters) takes exactly that many samples instead."""

    max_rel_noise: float = DEFAULTS.max_noise_pct / 100  # a fraction (the options say percent)
    min_samples: int = 10
    max_seconds: float = DEFAULTS.max_time_s
    fixed: int | None = None

    @staticmethod
    def from_options(max_noise_pct: float, max_seconds: float, fixed: int | None = None) -> "StoppingRule":
        """The rule from the command line's units (--max-noise is in percent)."""
        return StoppingRule(max_rel_noise=max_noise_pct / 100, max_seconds=max_seconds, fixed=fixed)

    def done(self, samples: Sequence[float], elapsed_s: float) -> bool:
        kept = [s for s in samples if not math.isnan(s)]
        if self.fixed is not None:
            return len(samples) >= self.fixed
        if elapsed_s >= self.max_seconds and len(kept) >= 3:
            return True
        if elapsed_s >= 4 * self.max_seconds:  # every sample dropped (clocks low all along): give up, say so
            return True
        return bool(len(kept) >= self.min_samples and median_noise(kept) <= self.max_rel_noise)

    def wanted(self, taken: int) -> int:
        """How many samples the next round should add (a fixed count: what is left of it)."""
        if self.fixed is not None:
            return max(0, self.fixed - taken)
        return max(self.min_samples - taken, max(5, taken // 4))


@dataclass
class TimingStats:
    """One time's summary. Samples are per-call times in us; NaN marks a sample dropped for low clocks."""

    median_us: float
    p10_us: float
    p90_us: float
    samples: int  # kept
    dropped: int  # taken below 75% of the default clock
    noise: float  # relative noise of the median (see median_noise)
    values_us: tuple[float, ...] = ()  # every sample in the order taken, NaN where dropped (--save-samples)

    @staticmethod
    def from_samples(samples_us: Sequence[float]) -> "TimingStats":
        arr = np.asarray(samples_us, dtype=np.float64)
        kept = arr[~np.isnan(arr)]
        dropped = int(len(arr) - len(kept))
        if len(kept) == 0:
            nan = float("nan")
            return TimingStats(nan, nan, nan, 0, dropped, math.inf, tuple(arr.tolist()))
        return TimingStats(float(np.median(kept)), float(np.percentile(kept, 10)), float(np.percentile(kept, 90)),
                           len(kept), dropped, median_noise(kept), tuple(arr.tolist()))


def slowest_rank(per_rank: Sequence[Sequence[float]]) -> list[float]:
    """Sample by sample, the slowest rank's value; a sample any rank dropped (NaN) is dropped."""
    arr = np.asarray(per_rank, dtype=np.float64)
    worst = arr.max(axis=0)  # NaN propagates through max: one rank's dropped sample drops it for all
    return [float(v) for v in worst]
