"""How a run gates and times, as one frozen record: parsed once (command line or YAML), never changed after (a
change is a new record, dataclasses.replace). Its field defaults are the only declaration of each default: the
command line's help, YAML, selfcheck and the sampling rule read them here."""
from __future__ import annotations

from dataclasses import dataclass

from rocbench.core.roofline import Roofline


@dataclass(frozen=True)
class RunOptions:
    correctness_only: bool = False
    cuda_graph: bool = False
    warmup: int = 5  # untimed graph replays before the samples (timing.warm_up: at least 30 ms of them)
    iters: int | None = None  # fixed samples per time; None: sample until max_noise_pct or max_time_s
    max_noise_pct: float = 0.5  # percent: relative noise of the median (half its 95% CI) that ends sampling
    max_time_s: float = 1.0  # seconds of sampling per time (kernel, graph) of one (case, backend)
    times: tuple[str, ...] = ("kernel", "graph")
    seed: int = 0
    timeout_s: float = 300.0  # one (case, backend) longer than this is a timeout row
    inject: str | None = None
    tune: bool = False
    require_batch_invariant: bool = False
    skip_batch_probes: bool = False
    save_samples: bool = False  # every timing sample, in order, to samples.csv
    # Measured once per run (rank 0, before the first case) and handed to every rank for its % columns.
    roofline: Roofline | None = None


DEFAULTS = RunOptions()


def default_text(value) -> str:
    """A default as a user would type it (what the command line's help shows and the parser reads)."""
    if isinstance(value, tuple):
        return ",".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)
