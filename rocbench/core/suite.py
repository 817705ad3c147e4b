"""What a kernel family states to plug into the harness: its parameters, cases, inputs, outputs,
expected outputs, backends, work and what each speedup is relative to.

The contract, in the order the harness uses it per (case, backend):
- `build_io(case, ctx)` allocates the buffers of one call; `fill(case, io, ctx, data_seed)` writes fresh
  inputs and returns the expected value of every output named in `outputs` (a tensor when there is one
  output, else a dict) computed on this rank alone;
- `reset(case, io, ctx)` runs before every checked call (an in-place kernel restores its inputs there);
- `Backend.prepare(case, io, ctx)` returns a `Prepared`: the call (it returns the outputs, a tensor or a
  dict by output name; it must be capturable in a CUDA graph) and a description of the path it takes;
- `judge(case, output, got, expected, tolerance)` rules on one output;
- `work(case, world_size)` gives the bytes and flops behind the bandwidth and throughput columns.
A suite is semantics only; the harness (rocbench.core.harness) does the rest.
"""
from __future__ import annotations

import abc
import contextlib
import importlib
import itertools
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Union

import torch

from rocbench.core.axes import Case, format_value, reindex
from rocbench.core.errors import InputError
from rocbench.core.params import Param
from rocbench.core.platform import PlatformInfo
from rocbench.core.roofline import Roofline


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
    hosts: tuple[str, ...] = ()  # the nodes this rank's group spans, in rank order (several: across nodes)
    roofline: Roofline | None = None  # measured once per run; the % of copy bandwidth and roofline columns use it
    flusher: Any = None  # the harness's cache flusher for kernel timing (kernel_time.Flusher), made on first use
    backend_states: dict[str, Any] = field(default_factory=dict, repr=False)  # backend name -> its state_type()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def state(self, backend: "Backend") -> Any:
        """This rank's state of `backend` (an instance of its state_type, made on first use), kept across cases."""
        if backend.state_type is None:
            raise TypeError(f"backend {backend.name} keeps no state (it declares no state_type)")
        if backend.name not in self.backend_states:
            self.backend_states[backend.name] = backend.state_type()
        return self.backend_states[backend.name]


@dataclass
class Work:
    """Bytes and flops one call of a case moves and does, for bandwidth and throughput columns."""

    bytes: int  # bytes the kernel must move (the denominator of GB/s)
    flops: float = 0.0
    busbw_factor: float | None = None  # collectives: busbw = algbw * factor (nccl-tests convention)
    mma: str = "bf16"  # the MMA whose measured rate bounds the flops in the roofline: "bf16" or "fp8"
    # the most memory the case's inputs take while they are built, where that exceeds what a call moves and its
    # reference (MoE: every expert's weights, drawn in fp32 before quantizing, where a call reads a few experts);
    # 0: the call's buffers are the inputs. The dry run's memory estimate takes the larger
    build_bytes: int = 0


@dataclass(frozen=True)
class InterpreterCost:
    """Seconds one row's gate takes under Triton's CPU interpreter (without the batch probes): per row plus per MiB
    of the call's bytes, fitted on a 2-core CI box (the dry run's time estimate uses it)."""

    per_row_s: float = 0.25
    per_mib_s: float = 0.0


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
    def worst(verdicts: list["Verdict"]) -> "Verdict":
        """One rank's outputs merged: the first failure, the largest error, the smallest cosine."""
        failed = [v for v in verdicts if not v.passed]
        errs = [v.max_abs_err for v in verdicts if v.max_abs_err is not None]
        coss = [v.cosine for v in verdicts if v.cosine is not None]
        lead = failed[0] if failed else verdicts[0]
        return Verdict(not failed, lead.kind, lead.detail, max(errs) if errs else None, min(coss) if coss else None,
                       "; ".join(dict.fromkeys(v.tolerance for v in verdicts if v.tolerance)))

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


Outputs = Union[torch.Tensor, Mapping[str, torch.Tensor]]
Runner = Callable[[], Outputs]


@dataclass
class Prepared:
    """A backend's call for one case, and the path it takes (shown per row)."""

    run: Runner
    description: str = ""


@dataclass
class Tuning:
    """What `--tune` may try for a case: named configs, how to prepare the call with one, and where the
    winner goes (the kernel's tuned-config store) -- returns a description of the place."""

    candidates: dict[str, Any]
    prepare: Callable[[Any, Any], Prepared]  # (io, config) -> Prepared
    remember: Callable[[str, Any, dict], str]  # (name, config, evidence) -> where it was stored


@dataclass(frozen=True)
class Speedup:
    """A speedup column: the time of the row named by `relative_to(case, backend)` over this row's time."""

    column: str
    meaning: str
    relative_to: Callable[[Case, str], tuple[str, str] | None]


def over_backend(baseline: str) -> Speedup:
    return Speedup(f"speedup_vs_{baseline}", f"{baseline} backend on the same case",
                   lambda case, backend: None if backend == baseline else (case.id, baseline))


class Backend(abc.ABC):
    """One implementation under test. Heavy imports (triton, aiter) happen inside methods, lazily."""

    name: ClassVar[str]
    platforms: ClassVar[tuple[str, ...]]  # subset of ("cpu", "cuda", "rocm")
    description: ClassVar[str] = ""

    requires: ClassVar[tuple[str, ...]] = ()  # modules that must import here (checked lazily)
    # A batch-invariant variant of another backend names it: its rows carry the price of determinism
    # (this row's time over that backend's on the same case).
    deterministic_of: ClassVar[str | None] = None
    # Runs only when --backends names it (as batch-invariant variants do): a variant that answers a narrower
    # question than the family's default backends and would lengthen every default sweep.
    on_request: ClassVar[bool] = False
    # What it supports, by case column (e.g. {"persist": (False,)} for a backend without a persistent path): any
    # other value gets an `unsupported` row with the reason. A family's axes describe the family, not a backend.
    supports: ClassVar[Mapping[str, tuple]] = {}
    # Needs every rank of its group on one host (CUDA/HIP IPC, symmetric memory): across nodes its rows are
    # unsupported, with the reason.
    single_host: ClassVar[bool] = False
    # Case column -> dtypes whose dot products Triton's CPU interpreter computes wrong in this backend's
    # kernels (bf16): a run that would interpret them is refused up front rather than report false failures.
    interpreter_wrong_dtypes: ClassVar[Mapping[str, tuple[torch.dtype, ...]]] = {}
    # What it keeps per rank across cases (IPC pools, a communicator, probed capabilities): a class whose
    # no-argument call makes an empty one; ctx.state(self) returns this rank's.
    state_type: ClassVar[type | None] = None
    # Whether each of its paths is batch-invariant by construction, from its source: (path, invariant, why). The
    # family's --explain lists them; the batch_invariant column checks every row regardless.
    batch_invariance: ClassVar[tuple[tuple[str, bool, str], ...]] = ()

    def runs_interpreted(self, platform: PlatformInfo) -> bool:
        """Whether this backend's Triton kernels run under the CPU interpreter here."""
        return not platform.has_gpu and "triton" in self.requires

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

    def capability_reason(self, case: Case) -> str | None:
        """Why the case asks for something this backend does not state it supports (`supports`), or None."""
        for column, allowed in self.supports.items():
            value = case.get(column)
            if value is not None and value not in allowed:
                shown = ", ".join(format_value(v) for v in allowed)
                return f"{self.name} takes only {column}={shown} (this case: {column}={format_value(value)})"
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
    def prepare(self, case: Case, io: Any, ctx: RankContext) -> Prepared:
        """The call on `io` (returning the suite's outputs) and its path. The call must be capturable in
        a CUDA graph on a GPU: no host syncs, no allocation that depends on data."""

    def tuning(self, case: Case, ctx: RankContext) -> Tuning | None:
        """The kernel configs `--tune` tries for this case (None: nothing to tune)."""
        return None

    def graph_context(self, ctx: RankContext):
        """Context manager around CUDA-graph capture (e.g. a communicator that registers buffers on exit)."""
        return contextlib.nullcontext()

    def paths_here(self, platform: PlatformInfo) -> list[dict]:
        """For `rocbench env`: which of this backend's paths exist on this platform (rows of a table)."""
        return []


class Backends:
    """A suite's backends by name, in registration order (the baseline first); `register` is a class
    decorator, so a backend module registers its implementations by declaring them."""

    def __init__(self) -> None:
        self._backends: dict[str, Backend] = {}
        self.origins: dict[str, str] = {}  # backend name -> where it came from (a module, or a plugin's file)

    def register(self, cls: type[Backend]) -> type[Backend]:
        module = sys.modules.get(cls.__module__)
        origin = getattr(module, "__file__", None) or cls.__module__
        if cls.name in self._backends and self.origins[cls.name] != origin:
            raise InputError(f"backend {cls.name!r} from {origin} takes the name of the one from "
                             f"{self.origins[cls.name]}; give it another name")
        self._backends[cls.name] = cls()
        self.origins[cls.name] = origin
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
    help: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]  # the suite's own options; axes among them become CSV columns
    # the axes whose values seed a case's inputs (Case.input_key), frozen when declared: an axis added later
    # stays out unless it changes the data, and a renamed axis keeps its label ("old=new")
    input_axes: ClassVar[tuple[str, ...]] = ()
    derived_columns: ClassVar[tuple[str, ...]] = ()  # case values `cases` derives (shown as columns)
    twin_columns: ClassVar[tuple[str, ...]] = ()  # result columns of backends' twin checks
    outputs: ClassVar[tuple[str, ...]] = ("out",)  # what a call produces, by name
    baseline: ClassVar[str]  # the backend every other backend's speedup is relative to
    extra_speedups: ClassVar[tuple[Speedup, ...]] = ()  # e.g. persistent over split-KV
    backends: ClassVar[Backends]
    interpreter_cost: ClassVar[InterpreterCost] = InterpreterCost()

    def finish(self, params: dict) -> dict:
        """Checks across parameters and defaults that depend on others (InputError on bad input)."""
        return params

    def world_size(self, params: dict) -> int:
        """Ranks to launch for these parameters."""
        return 1

    def cases(self, params: dict) -> list[Case]:
        """The product of the axes in declaration order (the last varies fastest); parameters that are not
        axes but have a column join every case."""
        # a case holds each value under its column's name (`--dtypes` sweeps `dtype`)
        values = {p.column: [params[p.name]] if not p.axis else params[p.name] for p in self.params if p.column}
        combos = itertools.product(*values.values())
        return reindex((Case(tuple(zip(values, combo))) for combo in combos), self.input_axes)

    def columns(self) -> list[str]:
        return [p.column for p in self.params if p.column] + list(self.derived_columns)

    def case_columns(self, case: Case) -> dict:
        cells = {p.column: p.fmt(case.get(p.column)) for p in self.params if p.column}
        cells.update({column: case.get(column) for column in self.derived_columns})
        return cells

    def speedups(self) -> list[Speedup]:
        return [over_backend(self.baseline), *self.extra_speedups]

    def before_run(self, values: dict) -> int | None:
        """May answer instead of running (e.g. `mla --explain`); `values` are the parsed options."""
        return None

    @abc.abstractmethod
    def build_io(self, case: Case, ctx: RankContext) -> Any:
        """Allocate inputs and outputs for one call (contents are written by `fill`)."""

    @abc.abstractmethod
    def fill(self, case: Case, io: Any, ctx: RankContext, data_seed: int) -> Any:
        """Write fresh, deterministic input data into `io`; return what each output must be.

        Every rank must be able to compute its expected output locally: no collective is trusted.
        """

    def reset(self, case: Case, io: Any, ctx: RankContext) -> None:
        """Before every checked call: restore what a call changes in place (nothing by default)."""

    def batch_probes(self, case: Case, io: Any, ctx: RankContext) -> list:
        """The batch-invariance probes (rocbench.core.harness.invariance.BatchProbe), the reference first: the same
        request in several batches. Empty: the question does not apply to this suite."""
        return []

    @abc.abstractmethod
    def judge(self, case: Case, output: str, got: torch.Tensor, expected: Any,
              tolerance: Tolerance | None = None) -> Verdict:
        """Rule on one output against its expectation (within `tolerance` when a backend states one)."""

    @abc.abstractmethod
    def work(self, case: Case, world_size: int) -> Work:
        """Bytes and flops of one call."""

    def plot_specs(self) -> list[dict]:
        """Which line plots to draw (see rocbench.core.reporting.plots.line_figure)."""
        return []

    def heatmap_specs(self) -> list[dict]:
        """Which heatmaps the report draws (see rocbench.core.reporting.plots.heatmap_figure)."""
        return []
