"""GPU timing: CUDA events around CUDA-graph-captured iterations, rotating inputs to defeat L2."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

# Enough graph iterations that launch gaps and event resolution vanish, few enough to capture fast.
MIN_ITERS_PER_SAMPLE = 8
MAX_ITERS_PER_SAMPLE = 128
TARGET_SAMPLE_US = 300.0


@dataclass
class TimingStats:
    median_us: float
    p10_us: float
    p90_us: float
    samples: int
    iters_per_sample: int
    rotation: int
    mode: str  # "graph" or "eager" (when the backend cannot be captured)

    @staticmethod
    def from_samples(samples_us: Sequence[float], iters: int, rotation: int, mode: str) -> "TimingStats":
        arr = np.asarray(samples_us, dtype=np.float64)
        return TimingStats(float(np.median(arr)), float(np.percentile(arr, 10)), float(np.percentile(arr, 90)),
                           len(arr), iters, rotation, mode)


def rotation_count(bytes_per_copy: int, l2_bytes: int | None, max_copies: int = 32, max_total: int = 8 << 30) -> int:
    """How many input copies to cycle through so consecutive calls never find their data in L2."""
    if not l2_bytes or bytes_per_copy <= 0:
        return 1
    wanted = math.ceil(2 * l2_bytes / bytes_per_copy) + 1
    by_memory = max(1, max_total // bytes_per_copy)
    return max(1, min(wanted, max_copies, by_memory))


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
    """Capture `iters` calls, cycling through the rotated runners, into one graph (inside `context`)."""
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


def time_samples(
    runners: Sequence[Callable[[], object]],
    device: torch.device,
    warmup: int,
    repeats: int,
    barrier: Callable[[], None] | None = None,
    use_graph: bool = True,
    context=None,
    agree: Callable[[int], int] | None = None,
) -> tuple[list[float], int, str]:
    """Per-call times (us) of `repeats` samples. `barrier` lines ranks up before each sample; `agree`
    makes every rank capture the same number of calls (each estimates its own; a collective needs one)."""
    estimate = eager_estimate_us(runners[0], device)
    iters = iters_per_sample(estimate, len(runners))
    if agree is not None:
        iters = agree(iters)
    mode = "graph"
    replay: Callable[[], None]
    if use_graph:
        try:
            graph = capture(runners, iters, device, context)
            replay = graph.replay
        except Exception:  # noqa: BLE001 - a backend that cannot be captured is timed eagerly, and says so
            torch.cuda.synchronize(device)
            mode = "eager"
    else:
        mode = "eager"
    if mode == "eager":
        def replay() -> None:
            for i in range(iters):
                runners[i % len(runners)]()

    for _ in range(warmup):
        replay()
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(repeats):
        if barrier is not None:
            barrier()
        torch.cuda.synchronize(device)
        start.record()
        replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / iters)
    return samples, iters, mode


def measure_copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written (median of samples).

    Timed eagerly: inside a CUDA graph a device-to-device copy becomes a memcpy node that the copy
    engines run (about 2.4 TB/s on an H100), while kernels compete with an SM copy (about 3.0 TB/s).
    Enough warm-up (about a second of copying) that the clocks have left idle first."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 256)
    dst = torch.empty_like(src)
    samples, _, _ = time_samples([lambda: dst.copy_(src)], device, warmup=40, repeats=repeats, use_graph=False)
    del src, dst
    return 2 * nbytes / (float(np.median(samples)) * 1e-6) / 1e9
