"""kernel_us: the GPU time of one call's kernels without launch gaps, from the profiler's activity records.

Each call runs right after a kernel that reads a buffer twice the size of the device's caches
(`rocbench_l2_flush`, a Triton kernel of its own name, so its records mark where each call begins).
A call's time is the union of its kernels' (and copies') intervals between two flushes: gaps between
its launches are not counted, overlapping kernels are not counted twice, and a kernel that starts
before the flush ends (programmatic dependent launch) is counted from the flush's end. For a
collective the time of a call is its slowest rank's. Kineto reads CUPTI on CUDA and roctracer on ROCm,
so the same code times both.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from rocbench.core.stats import StoppingRule, TimingStats
from rocbench.core.harness.timing import (ALONE, Measurement, RankSync, dropped_if_low, eager_estimate_us, replayer,
                                             sample_until, warm_up)

FLUSH_KERNEL = "rocbench_l2_flush"
TARGET_REPLAY_US = 1000.0  # calls per profiled replay: about a millisecond of work, 1 to 16 calls
MAX_CALLS_PER_REPLAY = 16


class KernelTimeUnavailable(RuntimeError):
    """The profiler recorded no GPU activity here (no CUPTI/roctracer); the row keeps its graph time."""


@dataclass(frozen=True)
class Activity:
    """One GPU activity record (kernel, memcpy or memset): name and interval in ns."""

    name: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class CallSpan:
    busy_us: float  # union of the call's activity intervals
    kernels: int  # activity records in the call
    parts: tuple[tuple[str, float], ...] = ()  # (kernel name, its own time in us: own_times), in launch order


def union_ns(intervals: Iterable[tuple[int, int]]) -> int:
    """Total length covered by the intervals (overlaps counted once)."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def call_spans(activities: Sequence[Activity], marker: str = FLUSH_KERNEL) -> list[CallSpan]:
    """Split a profiled sequence of (flush, call) pairs into calls and measure each one's busy time."""
    ordered = sorted(activities, key=lambda a: a.start_ns)
    flushes = [a for a in ordered if a.name.startswith(marker)]
    spans = []
    for k, flush in enumerate(flushes):
        window_end = flushes[k + 1].start_ns if k + 1 < len(flushes) else math.inf
        named = [(a.name, max(a.start_ns, flush.end_ns), min(a.end_ns, window_end)) for a in ordered
                 if not a.name.startswith(marker) and flush.start_ns <= a.start_ns < window_end]
        named = [(name, s, e) for name, s, e in named if e > s]
        spans.append(CallSpan(union_ns([(s, e) for _, s, e in named]) / 1e3, len(named), own_times(named)))
    return spans


def own_times(named: Sequence[tuple[str, int, int]]) -> tuple[tuple[str, float], ...]:
    """Each kernel's own time in us (kernels of one short name summed, in launch order): the part of its interval
    that no kernel started before it covers. A kernel launched early under programmatic dependent launch waits for
    its predecessor, so it counts from the predecessor's end. The parts add up to the call's busy time."""
    own: dict[str, float] = {}
    reach = -math.inf  # the latest end among the kernels started so far (they all started before this one)
    for name, start, end in sorted(named, key=lambda record: record[1]):
        key = short_kernel_name(name)
        own[key] = own.get(key, 0) + max(0, end - max(start, reach))
        reach = max(reach, end)
    return tuple((name, ns / 1e3) for name, ns in own.items())


def kernels_label(counts: Iterable[int]) -> str:
    values = sorted(set(counts))
    return "" if not values else (str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")


GENERIC_KERNELS = ("Kernel", "Kernel2", "device_kernel")  # CUTLASS 2 and 3 kernel wrappers


def short_kernel_name(name: str) -> str:
    """A GPU record's name as kernel_parts shows it: a kernel's function name without return type, namespaces,
    template arguments or parameters ('void at::native::elementwise_kernel<128, 4, F>(int, F)' -> 'elementwise_kernel';
    a Triton kernel's name is that already), a copy's kind ('Memcpy DtoD (Device -> Device)' -> 'Memcpy DtoD')."""
    if "::" not in name and "<" not in name:
        return name.split(" (")[0].strip() or name
    outside, first_argument, depth, lists = [], [], 0, 0
    for char in name:
        lists += char == "<" and depth == 0  # the first template argument list only
        depth += (char == "<") - (char == ">" and depth > 0)
        if depth == 0 and char not in "<>":
            outside.append(char)
        elif depth == 1 and lists == 1 and char not in "<>" and "," not in first_argument:
            first_argument.append(char)
    function = "".join(outside).replace("(anonymous namespace)", "").split("(")[0].split()
    short = function[-1].split("::")[-1] if function else name
    if short in GENERIC_KERNELS and first_argument:  # CUTLASS's wrappers: the kernel is their template argument
        return "".join(first_argument).split(",")[0].split("::")[-1].strip() or short
    return short


def parts_label(calls: Iterable[Sequence[tuple[str, float]]]) -> str:
    """Each kernel's median own time per call (own_times) over the calls that ran it, slowest first:
    "name 95.1 us, name 6.3 us" (kernels of one short name together). The parts add up to about kernel_us: each
    call's exactly, their medians nearly."""
    times: dict[str, list[float]] = {}
    for call in calls:
        for name, us in call:
            times.setdefault(name, []).append(us)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return ", ".join(f"{name} {us:.1f} us" for name, us in sorted(medians.items(), key=lambda item: -item[1]))


def gpu_activities(prof) -> list[Activity]:
    """Kernel, memcpy and memset records of a finished torch.profiler session (not user annotations)."""
    out = []
    for event in prof.profiler.kineto_results.events():
        if event.device_type() != torch.autograd.DeviceType.CUDA or event.is_user_annotation():
            continue
        kind = str(event.activity_type()).lower() if hasattr(event, "activity_type") else ""
        if "annotation" in kind or "runtime" in kind or "driver" in kind:
            continue
        out.append(Activity(event.name(), int(event.start_ns()), int(event.end_ns())))
    return out


@contextlib.contextmanager
def recording():
    """A profiler session that records GPU activity only (quiet: torch warns once that a session's events
    do not carry over to the next, which is what is wanted here)."""
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            yield prof


class Flusher:
    """Reads a buffer of twice the device's cache bytes; its kernel's name marks call boundaries. It reads
    rather than writes so that it leaves no dirty lines for the call to write back (on an H100 the two
    gave the same MoE times, within 0.5%)."""

    BLOCK = 4096

    def __init__(self, device: torch.device, cache_bytes: int):
        self.buffer = torch.ones(max(2 * cache_bytes, 1 << 20) // 4, dtype=torch.int32, device=device)
        self.sums = torch.empty(-(-self.buffer.numel() // self.BLOCK), dtype=torch.int32, device=device)
        self.kernel = _flush_kernel()

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * 4

    def __call__(self) -> None:
        self.kernel[(self.sums.numel(),)](self.buffer, self.sums, self.buffer.numel(), BLOCK=self.BLOCK)


def _flush_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def rocbench_l2_flush(buffer, sums, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(sums + tl.program_id(0), tl.sum(tl.load(buffer + offsets, mask=offsets < n, other=0)))

    return rocbench_l2_flush


def kernel_time(run: Callable[[], object], device: torch.device, rule: StoppingRule, flusher: Flusher,
                sync: RankSync = ALONE, use_graph: bool = True, context=None, clock_reader=None) -> Measurement:
    """kernel_us of `run`: profiled replays of [flush, call] x M, in rounds until the rule is met."""
    estimate = eager_estimate_us(run, device)
    calls = sync.most(min(MAX_CALLS_PER_REPLAY, max(1, math.ceil(TARGET_REPLAY_US / max(estimate, 1.0)))))
    steps = [flusher, run]
    replay, mode = replayer(steps, 2 * calls, device, use_graph, context)
    warm_up(replay, device, 1, sync)
    kernel_counts: list[int] = []
    parts: list[tuple[tuple[str, float], ...]] = []

    def take(n: int) -> list[float]:
        replays = max(1, math.ceil(n / calls))
        with recording() as prof:
            for _ in range(replays):
                sync.barrier()
                replay()
                torch.cuda.synchronize(device)
        spans = call_spans(gpu_activities(prof))
        if not spans:
            raise KernelTimeUnavailable("the profiler recorded no GPU activity (no CUPTI/roctracer here?)")
        if len(spans) != replays * calls:
            raise RuntimeError(f"kernel timing: the profiler saw {len(spans)} flushes, expected {replays * calls} "
                               "(records lost: profiler buffer too small?)")
        kernel_counts.extend(s.kernels for s in spans)
        kept = dropped_if_low([s.busy_us for s in spans], clock_reader)
        if not all(math.isnan(us) for us in kept):  # a round dropped for a low clock: its parts go too
            parts.extend(s.parts for s in spans)
        return kept

    samples = sample_until(take, rule, sync)
    return Measurement(TimingStats.from_samples(samples), calls, mode,
                       f"flush: {flusher.nbytes / 2**20:.0f} MiB read before each call", kernels_label(kernel_counts),
                       parts_label(parts))
