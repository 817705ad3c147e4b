"""graph_us: per-call time inside a CUDA graph of back-to-back calls, timed with events around each replay.

This is what a serving graph pays for the call, launch gaps between its kernels included. Inputs
rotate through enough copies that consecutive calls miss the cache (the row says how many)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from rocbench.core.harness import clocks
from rocbench.core.stats import StoppingRule, TimingStats, slowest_rank

# Enough graph iterations that event resolution vanishes, few enough to capture fast.
MIN_ITERS_PER_SAMPLE = 8
MAX_ITERS_PER_SAMPLE = 128
TARGET_SAMPLE_US = 300.0
# Untimed replays run for at least this long before a time's samples. With one replay of warm-up, a row timed after
# another came back slow (H100, 2026-12-06, DeepSeek-R1 TP 8 x 16 tokens MoE, --save-samples, results/examples/
# moe16-warmup-h100): its first 7-10 calls 163-169 us, the rest 145-152 us, in 5 of 8 processes (1-3 calls in the
# others). With 30 ms of replays the same three 12-sample runs took all 72 samples at 144.4-153.8 us, none slow at the
# start (part 2 there).
WARMUP_MIN_US = 30_000.0


@dataclass(frozen=True)
class RankSync:
    """How ranks keep in step while timing: a barrier before each sample, the slowest rank's samples, and
    one rank's decision (rank 0's) so that every rank takes the same number of samples. Alone: no-ops."""

    barrier: Callable[[], None] = lambda: None
    gather: Callable[[object], list] = lambda value: [value]  # every rank's value, in rank order

    def slowest(self, samples: Sequence[float]) -> list[float]:
        return slowest_rank(self.gather(list(samples)))

    def decide(self, flag: bool) -> bool:
        return bool(self.gather(flag)[0])

    def most(self, value: int) -> int:
        return max(self.gather(value))


ALONE = RankSync()  # one rank: no barrier, its own samples


@dataclass
class Measurement:
    """One time (graph or kernel) of a case: its statistics and how it was taken."""

    stats: TimingStats
    calls_per_sample: int
    mode: str  # "graph" | "eager" (a backend that cannot be captured)
    cold: str  # how caches were kept cold: "flush ..." or "rotation ..."
    kernels_per_call: str = ""
    kernel_parts: str = ""  # kernel time only: each kernel's median own time per call (kernel_time.parts_label)


def rotation_count(bytes_per_copy: int, cache_bytes: int | None, max_copies: int = 32, max_total: int = 8 << 30) -> int:
    """How many input copies to cycle through so consecutive calls never find their data in cache."""
    if not cache_bytes or bytes_per_copy <= 0:
        return 1
    wanted = math.ceil(2 * cache_bytes / bytes_per_copy) + 1
    by_memory = max(1, max_total // bytes_per_copy)
    return max(1, min(wanted, max_copies, by_memory))


def rotation_label(copies: int, bytes_per_copy: int, cache_bytes: int | None) -> str:
    if not cache_bytes:
        return f"rotation x{copies}"
    cycled = copies * bytes_per_copy
    if cycled >= 2 * cache_bytes:
        return f"rotation x{copies} ({cycled / 2**20:.0f} MiB >= 2x cache)"
    return f"rotation x{copies} ({cycled / 2**20:.0f} MiB < 2x cache {2 * cache_bytes / 2**20:.0f} MiB: partly warm)"


def iters_per_sample(estimate_us: float, rotation: int) -> int:
    n = max(MIN_ITERS_PER_SAMPLE, math.ceil(TARGET_SAMPLE_US / max(estimate_us, 1e-3)))
    n = min(n, MAX_ITERS_PER_SAMPLE)
    return max(rotation, math.ceil(n / rotation) * rotation)


def eager_estimate_us(run: Callable[[], object], device: torch.device, reps: int = 3) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    run()
    start.record()
    for _ in range(reps):
        run()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) * 1e3 / reps


def capture_outputs(run: Callable[[], torch.Tensor], device: torch.device,
                    context=None) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor]]:
    """Capture one call; also return what the captured call returned, which every replay rewrites
    (a backend may return a tensor it allocated inside the call, e.g. AITER's fused_moe)."""
    outputs: list[torch.Tensor] = []

    def call() -> torch.Tensor:
        outputs.append(run())
        return outputs[-1]

    return capture([call], 1, device, context), outputs


def capture(runners: Sequence[Callable[[], object]], iters: int, device: torch.device,
            context=None) -> torch.cuda.CUDAGraph:
    """Capture `iters` calls, cycling through the runners, into one graph (inside `context`)."""
    with context if context is not None else contextlib.nullcontext():
        return _capture(runners, iters, device)


def _capture(runners: Sequence[Callable[[], object]], iters: int, device: torch.device) -> torch.cuda.CUDAGraph:
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):  # warm the side stream as torch's graph docs ask
        for run in runners:
            run()
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(iters):
            runners[i % len(runners)]()
    torch.cuda.synchronize(device)
    return graph


def replayer(runners: Sequence[Callable[[], object]], iters: int, device: torch.device, use_graph: bool,
             context=None) -> tuple[Callable[[], None], str]:
    """A callable that runs `iters` calls: a graph replay, or the same calls eagerly when the backend
    cannot be captured (the mode says which)."""
    if use_graph:
        try:
            return capture(runners, iters, device, context).replay, "graph"
        except Exception:  # noqa: BLE001 - a backend that cannot be captured is timed eagerly, and says so
            torch.cuda.synchronize(device)

    def eager() -> None:
        for i in range(iters):
            runners[i % len(runners)]()
    return eager, "eager"


def sample_until(take: Callable[[int], list[float]], rule: StoppingRule, sync: RankSync) -> list[float]:
    """Rounds of samples (the slowest rank's, NaN where clocks were low) until the rule, as rank 0 sees
    it, is met. `take(n)` takes n samples on this rank and returns them per call, in order."""
    samples: list[float] = []
    started = time.perf_counter()
    while True:
        wanted = rule.wanted(len(samples))
        try:
            mine, error = take(wanted), None
        except Exception as exc:  # noqa: BLE001 - every rank must learn of it, or its peers wait forever
            mine, error = [math.nan] * wanted, exc
        errors = sync.gather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        failed = [(rank, text) for rank, text in enumerate(errors) if text]
        if failed:
            raise RuntimeError(f"rank {failed[0][0]}: {failed[0][1]}")
        samples += sync.slowest(mine)
        if sync.decide(rule.done(samples, time.perf_counter() - started)):
            return samples


def graph_time(runners: Sequence[Callable[[], object]], device: torch.device, warmup: int, rule: StoppingRule,
               sync: RankSync = ALONE, use_graph: bool = True, context=None, clock_reader=None) -> Measurement:
    """Per-call time of graph replays of many back-to-back calls cycling through `runners`."""
    iters = sync.most(iters_per_sample(eager_estimate_us(runners[0], device), len(runners)))
    replay, mode = replayer(runners, iters, device, use_graph, context)
    warm_up(replay, device, warmup, sync)

    def take(n: int) -> list[float]:
        return dropped_if_low(event_samples(replay, iters, n, device, sync.barrier), clock_reader)

    samples = sample_until(take, rule, sync)
    return Measurement(TimingStats.from_samples(samples), iters, mode, "")


def warm_up(replay: Callable[[], None], device: torch.device, replays: int, sync: RankSync = ALONE,
            min_us: float = WARMUP_MIN_US) -> int:
    """Untimed replays before sampling: at least `replays`, and as many more as make min_us back to back (from the
    first replay's time). The count is the ranks' largest, so every rank replays a collective as often. None when
    replays is 0 (--warmup 0). Returns how many ran."""
    if replays <= 0:
        return 0
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    replay()
    torch.cuda.synchronize(device)
    first_us = (time.perf_counter() - start) * 1e6
    count = sync.most(max(replays, math.ceil(min_us / max(first_us, 1.0))))
    for _ in range(count - 1):
        replay()
    torch.cuda.synchronize(device)
    return count


def event_samples(replay: Callable[[], None], calls: int, samples: int, device: torch.device,
                  before: Callable[[], None] = lambda: None) -> list[float]:
    """Per-call times (us) of `samples` replays of `calls` calls each, events recorded around each replay on an
    idle device (`before` runs first: the ranks' barrier)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(samples):
        before()
        torch.cuda.synchronize(device)
        start.record()
        replay()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) * 1e3 / calls)
    return out


def dropped_if_low(samples: list[float], clock_reader) -> list[float]:
    """A round's samples, all NaN (dropped) if the clock was low when it ended. Read once per round, not per
    sample: on an H100 an NVML read between back-to-back samples made small graphs 3-8% slower and noisier."""
    return [math.nan] * len(samples) if clocks.read(clock_reader).low else samples


def measure_copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written (median of samples).

    Timed eagerly: inside a CUDA graph a device-to-device copy becomes a memcpy node that the copy
    engines run (about 2.4 TB/s on an H100), while kernels compete with an SM copy (about 3.0 TB/s).
    Enough warm-up (about a second of copying) that the clocks have left idle first."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 256)
    dst = torch.empty_like(src)
    timed = graph_time([lambda: dst.copy_(src)], device, warmup=40, rule=StoppingRule(fixed=repeats), use_graph=False)
    return 2 * nbytes / (timed.stats.median_us * 1e-6) / 1e9


def measure_mma_tflops(device: torch.device, dtype: str = "bf16", size: int = 8192, repeats: int = 10) -> float | None:
    """Dense MMA rate in TFLOP/s: back-to-back size^3 matmuls (bf16: torch.matmul; fp8: torch._scaled_mm on e4m3
    with per-tensor scales), 2*size^3 flops each, median of samples. None where this torch or device lacks fp8."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    if dtype == "bf16":
        out = torch.empty_like(a)

        def call():
            return torch.matmul(a, b, out=out)
    else:
        call = fp8_matmul(a, b, device)
        if call is None:
            return None
    timed = graph_time([call], device, warmup=20, rule=StoppingRule(fixed=repeats))
    return 2 * size ** 3 / (timed.stats.median_us * 1e-6) / 1e12


def fp8_matmul(a: torch.Tensor, b: torch.Tensor, device: torch.device) -> Callable[[], object] | None:
    """a @ b in e4m3 through torch._scaled_mm (per-tensor scales of 1), in the first e4m3 flavour this device takes
    (OCP e4m3fn; gfx942's e4m3fnuz), or None where neither runs."""
    one = torch.ones((), dtype=torch.float32, device=device)
    for fp8 in (torch.float8_e4m3fn, torch.float8_e4m3fnuz):
        a8, b8 = a.to(fp8), b.t().contiguous().to(fp8).t()  # _scaled_mm wants the second operand column-major

        def call(a8=a8, b8=b8):
            return torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        try:
            call()
            torch.cuda.synchronize(device)
            return call
        except (RuntimeError, TypeError, AttributeError):
            continue
    return None
