"""What a kernel family must state to plug into the harness: cases, inputs, reference, backends, work.

A suite is semantics only. The harness (rocbench.core.harness) does the rest: launching ranks, the
correctness gate, determinism and CUDA-graph replay checks, timing, and recording rows.
"""
from __future__ import annotations

import abc
import contextlib
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from rocbench.core.axes import Case
from rocbench.core.platform import PlatformInfo


@dataclass
class RankContext:
    """Everything a rank knows about where it runs."""

    rank: int
    world_size: int
    device: torch.device
    platform: PlatformInfo
    seed: int
    group: Any = None  # device process group (NCCL/RCCL/gloo); None when world_size == 1
    cpu_group: Any = None  # gloo group for handshakes and object exchange
    graph_mode: bool = False  # --cuda-graph: inputs live at non-zero offsets, graph replays are gated
    cache: dict = field(default_factory=dict)  # per-rank state backends keep across cases (e.g. IPC pools)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class Work:
    """Bytes and flops one call of a case moves and does, for bandwidth and throughput columns."""

    bytes: int  # bytes the kernel must move (the denominator of GB/s)
    flops: float = 0.0
    busbw_factor: float | None = None  # collectives: busbw = algbw * factor (nccl-tests convention)


@dataclass(frozen=True)
class Tolerance:
    """|out - ref| <= atol + rtol*|ref| everywhere and cosine >= min_cosine; `why` says what it fits."""

    atol: float
    rtol: float
    min_cosine: float
    why: str = ""

    def describe(self) -> str:
        text = f"atol={self.atol:g} rtol={self.rtol:g} cos>={self.min_cosine:g}"
        return f"{text} ({self.why})" if self.why else text


@dataclass
class Verdict:
    """A gate's judgement of one output. `passed` is the only field the harness decides on."""

    passed: bool
    kind: str  # "exact" | "tolerance"
    detail: str = ""
    max_abs_err: float | None = None
    cosine: float | None = None
    tolerance: str = ""

    @staticmethod
    def combine(verdicts: list["Verdict"]) -> "Verdict":
        """Merge per-rank verdicts: the worst error wins, any failure fails."""
        failed = [(r, v) for r, v in enumerate(verdicts) if not v.passed]
        errs = [v.max_abs_err for v in verdicts if v.max_abs_err is not None]
        coss = [v.cosine for v in verdicts if v.cosine is not None]
        detail = "; ".join(f"rank {r}: {v.detail}" for r, v in failed) if len(verdicts) > 1 else (failed[0][1].detail if failed else verdicts[0].detail)
        return Verdict(
            passed=not failed,
            kind=verdicts[0].kind,
            detail=detail,
            max_abs_err=max(errs) if errs else None,
            cosine=min(coss) if coss else None,
            tolerance=verdicts[0].tolerance,
        )


Runner = Callable[[], torch.Tensor]


class Backend(abc.ABC):
    """One implementation under test. Heavy imports (triton, aiter) happen inside methods, lazily."""

    name: ClassVar[str]
    platforms: ClassVar[tuple[str, ...]]  # subset of ("cpu", "cuda", "rocm")
    description: ClassVar[str] = ""

    requires: ClassVar[tuple[str, ...]] = ()  # modules that must import here (checked lazily)

    def unavailable_reason(self, platform: PlatformInfo, world_size: int) -> str | None:
        """Why this backend cannot run here at all (None: it can)."""
        if platform.kind not in self.platforms:
            return f"needs {'/'.join(self.platforms)}, this is {platform.kind}"
        if not platform.has_gpu and "triton" in self.requires and os.environ.get("TRITON_INTERPRET") != "1":
            return "Triton needs a GPU (or TRITON_INTERPRET=1 for tiny CPU runs)"
        for module in self.requires:
            try:
                importlib.import_module(module)
            except Exception as err:  # noqa: BLE001 - aiter, for one, fails to import in many ways without ROCm
                return f"{module} is not importable: {type(err).__name__}: {err}"
        if not platform.has_gpu and "triton" in self.requires:
            from rocbench.core.interpreter import interpreter_problem

            return interpreter_problem()
        return None

    def unsupported_reason(self, case: Case, platform: PlatformInfo) -> str | None:
        """Why this backend cannot take this case here (None: it can). Must not depend on the rank."""
        return None

    def twin_checks(self, case: Case) -> list[tuple[str, Case]]:
        """Sibling configurations this backend must reproduce bitwise on the same inputs, as
        (column, twin case) pairs: e.g. one kernel reading two weight layouts. A backend that runs
        different kernels per configuration declares none."""
        return []

    def tolerance(self, case: Case, platform: PlatformInfo) -> Tolerance | None:
        """A tolerance that fits the numerics this backend runs for the case (None: the suite's)."""
        return None

    @abc.abstractmethod
    def prepare(self, case: Case, io: Any, ctx: RankContext) -> Runner:
        """Return a callable that runs the kernel on `io` and returns its output tensor.

        The callable must be capturable in a CUDA graph on GPU: no host syncs, no allocation that
        depends on data.
        """

    def graph_context(self, ctx: RankContext):
        """Context manager around CUDA-graph capture (e.g. a communicator that registers buffers on exit)."""
        return contextlib.nullcontext()

    def describe(self, case: Case, ctx: RankContext) -> str:
        """Which code path and mode runs for this case (shown per row), e.g. metadata mode."""
        return ""

    def paths_here(self, platform: PlatformInfo) -> list[dict]:
        """For `rocbench env`: which of this backend's paths exist on this platform (rows of a table)."""
        return []


class Registry:
    """Backends by name, in the order they were registered (the first one is the baseline)."""

    def __init__(self) -> None:
        self._backends: dict[str, Backend] = {}

    def register(self, cls: type[Backend]) -> type[Backend]:
        self._backends[cls.name] = cls()
        return cls

    def names(self) -> list[str]:
        return list(self._backends)

    def get(self, name: str) -> Backend:
        return self._backends[name]

    def __iter__(self):
        return iter(self._backends.values())


class Suite(abc.ABC):
    """A kernel family. Subclasses state semantics only."""

    name: ClassVar[str]
    backends: ClassVar[Registry]
    baseline: ClassVar[str]  # backend every other backend's speedup is relative to
    axis_columns: ClassVar[tuple[str, ...]]  # case axes, as CSV columns
    extra_columns: ClassVar[tuple[str, ...]] = ()  # suite-specific result columns (e.g. twin checks)

    @abc.abstractmethod
    def cases(self, params: dict) -> list[Case]:
        """Expand validated parameters into cases."""

    @abc.abstractmethod
    def world_size(self, params: dict) -> int:
        """Ranks to launch for these parameters."""

    @abc.abstractmethod
    def build_io(self, case: Case, ctx: RankContext) -> Any:
        """Allocate inputs and outputs for one call (contents are written by `fill`)."""

    @abc.abstractmethod
    def fill(self, case: Case, io: Any, ctx: RankContext, data_seed: int) -> Any:
        """Write fresh, deterministic input data into `io`; return what the output must be.

        Every rank must be able to compute its expected output locally: no collective is trusted.
        """

    @abc.abstractmethod
    def judge(self, case: Case, out: torch.Tensor, expected: Any, tolerance: Tolerance | None = None) -> Verdict:
        """Compare an output with the expectation from `fill` (within `tolerance` when a backend states one)."""

    @abc.abstractmethod
    def work(self, case: Case, world_size: int) -> Work:
        """Bytes and flops of one call."""

    def case_columns(self, case: Case) -> dict:
        """The case's values as CSV cells (default: its axes, formatted)."""
        from rocbench.core.axes import format_value

        return {name: format_value(case.get(name)) for name in self.axis_columns}

    def baseline_key(self, case: Case, backend: str) -> tuple[str, str]:
        """(case id, backend) whose time this row's speedup is relative to."""
        return case.id, self.baseline

    def plot_specs(self) -> list[dict]:
        """Which line plots to draw (see rocbench.core.plots.line_figure)."""
        return []

    def heatmap_specs(self) -> list[dict]:
        """Which heatmaps the report draws (see rocbench.core.plots.heatmap_figure)."""
        return []
