"""Timing self-check: the harness's CUDA-graph/event times against the PyTorch profiler's kernel
durations for known kernels (a copy, a bf16 GEMM), and the copy bandwidth used as "% of limit"."""
from __future__ import annotations

import torch

from rocbench.core import timing


def profiler_kernel_us(run, device: torch.device, iters: int, replays: int = 5) -> float:
    """Mean device time per call as the profiler sees it, over the same graph the harness replays
    (so both time the same kernels and memcpy nodes), summing every GPU activity of a replay."""
    from torch.profiler import ProfilerActivity, profile

    graph = timing.capture([run], iters, device)
    graph.replay()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize(device)
    total = 0.0
    for event in prof.events():
        if getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA:
            total += event.device_time if hasattr(event, "device_time") else event.cuda_time
    return total / (replays * iters)


def cases(device: torch.device) -> list[tuple[str, object, int]]:
    """(name, callable, bytes or flops) for a ladder of sizes: 5 us and up."""
    out = []
    for mib in (4, 64, 1024):
        n = mib << 20
        src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 256)
        dst = torch.empty_like(src)
        out.append((f"copy {mib} MiB", (lambda d=dst, s=src: d.copy_(s)), 2 * n))
    for size in (1024, 4096, 8192):
        a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
        b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
        c = torch.empty(size, size, device=device, dtype=torch.bfloat16)
        out.append((f"bf16 gemm {size}^3", (lambda a=a, b=b, c=c: torch.matmul(a, b, out=c)), 2 * size ** 3))
    return out


def run_selfcheck(device: torch.device) -> dict:
    rows = []
    for name, run, work in cases(device):
        samples, iters, mode = timing.time_samples([run], device, warmup=10, repeats=30)
        harness_us = sorted(samples)[len(samples) // 2]
        profiler_us = profiler_kernel_us(run, device, iters)
        is_copy = name.startswith("copy")
        ratio = harness_us / profiler_us if profiler_us else float("nan")
        rows.append({"kernel": name, "harness_us": harness_us, "profiler_us": profiler_us, "ratio": ratio,
                     # what the harness counts beyond the kernels: the gap between back-to-back graph nodes
                     "gap_us": harness_us - profiler_us,
                     "rate": (work / harness_us / 1e3) if is_copy else (work / harness_us / 1e6),
                     "unit": "GB/s (read+write)" if is_copy else "TFLOP/s", "timing_mode": mode,
                     "within_3pct": (abs(ratio - 1) <= 0.03) if profiler_us >= 5 else None})
    eager_copy = timing.measure_copy_bandwidth(device)
    return {"rows": rows, "copy_bw_GBps": eager_copy, "device": torch.cuda.get_device_name(device)}
