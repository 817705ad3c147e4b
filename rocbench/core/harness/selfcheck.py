"""`rocbench selfcheck`: the harness's two times against ground truth.

Truth comes from kernels that know their own duration: a one-program Triton kernel spins on the GPU's
global timer for T us and stores how long it spun. A call of one or four such kernels is timed by the
harness exactly as a backend is (kernel_us and graph_us), and each time's error against the stored spin
time is judged:
- kernel_us within 3% + 1 us per kernel launched (a kernel's own start and end cost well under 1 us);
- graph_us within 3% where each kernel spins 200 us or longer (below that, its launch gaps are what it
  shows: a graph of back-to-back calls pays them).
Every graph time is taken before the first profiler session, as in a sweep.
Kernels of known work (copies, bf16 GEMMs) give rates, and evidence for how their two times differ:
the same back-to-back graph timed with and without the profiler on (does the profiler slow it?), and
the union vs the sum of its kernel records (do consecutive kernels overlap?).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Callable

import torch

from rocbench.core.harness import clocks, kernel_time, timing
from rocbench.core.options import DEFAULTS
from rocbench.core.stats import StoppingRule

SPIN_US = (2, 5, 10, 20, 50, 200, 1000)
KERNELS_PER_CALL = (1, 4)
KERNEL_REL, KERNEL_ABS_US_PER_KERNEL = 0.03, 1.0
GRAPH_REL, GRAPH_FROM_US = 0.03, 200.0


def spin_call(device: torch.device, spin_us: float, kernels: int) -> tuple[Callable[[], None], torch.Tensor]:
    """A call of `kernels` spin kernels of spin_us each; the tensor holds what each one measured (ns)."""
    from rocbench.core.harness import spin

    hip = bool(torch.version.hip)
    spun = torch.zeros(kernels, dtype=torch.int64, device=device)

    def call() -> None:
        for k in range(kernels):
            spin.launch(spun, k, int(spin_us * 1000), hip)
    return call, spun


def within(measured: float, truth: float, rel: float, abs_us: float = 0.0) -> bool:
    return abs(measured - truth) <= rel * truth + abs_us


def spin_graphs(device: torch.device, reader, stop: StoppingRule) -> tuple[dict, dict]:
    calls = {(kernels, spin_us): spin_call(device, spin_us, kernels) for kernels in KERNELS_PER_CALL for spin_us in SPIN_US}
    graphs = {key: timing.graph_time([call], device, warmup=3, rule=stop, clock_reader=reader)
              for key, (call, _) in calls.items()}
    return calls, graphs


def spin_rows(device: torch.device, flusher, reader, stop: StoppingRule, calls: dict, graphs: dict) -> list[dict]:
    rows = []
    for (kernels, spin_us), (call, spun) in calls.items():
        kernel = kernel_time.kernel_time(call, device, stop, flusher, clock_reader=reader)
        call()
        torch.cuda.synchronize(device)
        truth = float(spun.sum().item()) / 1e3
        k_us, g_us = kernel.stats.median_us, graphs[kernels, spin_us].stats.median_us
        rows.append({
            "kernel": f"spin {spin_us} us x{kernels}", "kernels_per_call": kernels, "truth_us": truth,
            "kernel_us": k_us, "kernel_err_pct": 100 * (k_us / truth - 1),
            "kernel_excess_us_per_kernel": (k_us - truth) / kernels, "kernel_noise_pct": 100 * kernel.stats.noise,
            "kernel_ok": within(k_us, truth, KERNEL_REL, KERNEL_ABS_US_PER_KERNEL * kernels),
            "graph_us": g_us, "graph_err_pct": 100 * (g_us / truth - 1),
            "graph_excess_us_per_kernel": (g_us - truth) / kernels,
            "graph_noise_pct": 100 * graphs[kernels, spin_us].stats.noise,
            "graph_ok": within(g_us, truth, GRAPH_REL) if spin_us >= GRAPH_FROM_US else None,
            "records_per_call": kernel.kernels_per_call,
        })
    return rows


def known_work(device: torch.device) -> list[tuple[str, Callable[[], object], float, str]]:
    """(name, call, work, unit): copies count bytes read + written, GEMMs 2*n^3 flops."""
    out = []
    for mib in (4, 64, 1024):
        n = mib << 20
        src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 256)
        dst = torch.empty_like(src)
        out.append((f"copy {mib} MiB", (lambda d=dst, s=src: d.copy_(s)), 2 * n, "GB/s"))
    for size in (1024, 4096, 8192):
        a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
        b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
        c = torch.empty(size, size, device=device, dtype=torch.bfloat16)
        out.append((f"bf16 gemm {size}^3", (lambda a=a, b=b, c=c: torch.matmul(a, b, out=c)), 2 * size ** 3, "TFLOP/s"))
    return out


class BackToBack:
    """One graph of `iters` back-to-back calls (no flush), timed with events per replay."""

    def __init__(self, call: Callable[[], object], device: torch.device, iters: int, replays: int = 5):
        self.graph = timing.capture([call], iters, device)
        self.device, self.iters, self.replays = device, iters, replays
        self.graph.replay()

    def events_us(self) -> float:
        times = timing.event_samples(self.graph.replay, self.iters, self.replays, self.device)
        return sorted(times)[len(times) // 2]

    def profiled(self) -> dict:
        """Events time with the profiler on, and the records: their union vs their summed durations per call."""
        with kernel_time.recording() as prof:
            during = self.events_us()
        records = kernel_time.gpu_activities(prof)
        calls = self.replays * self.iters
        return {"b2b_events_profiled_us": during,
                "b2b_records_union_us": kernel_time.union_ns((r.start_ns, r.end_ns) for r in records) / 1e3 / calls,
                "b2b_records_sum_us": sum(r.end_ns - r.start_ns for r in records) / 1e3 / calls,
                "b2b_records_per_call": len(records) / calls}


def work_graphs(device: torch.device, reader, stop: StoppingRule) -> tuple[list[dict], list]:
    """Graph times and unprofiled back-to-back events of every known-work case."""
    rows, pending = [], []
    for name, call, work, unit in known_work(device):
        graph = timing.graph_time([call], device, warmup=3, rule=stop, clock_reader=reader)
        graph_clock = clocks.read(reader)
        b2b = BackToBack(call, device, graph.calls_per_sample)
        rows.append({"kernel": name, "graph_us": graph.stats.median_us, "unit": unit,
                     "clock_mhz_after_graph": graph_clock.mhz, "throttle_after_graph": graph_clock.throttle,
                     "b2b_events_us": b2b.events_us()})
        pending.append((call, work, unit, b2b))
    return rows, pending


def work_rows(device: torch.device, flusher, reader, stop: StoppingRule, rows: list[dict], pending: list) -> list[dict]:
    """Kernel times, the profiled back-to-back graph, and its unprofiled events again (after profiling)."""
    for row, (call, work, unit, b2b) in zip(rows, pending):
        kernel = kernel_time.kernel_time(call, device, stop, flusher, clock_reader=reader)
        scale = 1e3 if unit == "GB/s" else 1e6
        row.update({"kernel_us": kernel.stats.median_us, "records_per_call": kernel.kernels_per_call,
                    "clock_mhz_after_kernel": clocks.read(reader).mhz,
                    "kernel_rate": work / kernel.stats.median_us / scale, "graph_rate": work / row["graph_us"] / scale})
        row.update(b2b.profiled())
        row["b2b_events_after_profiling_us"] = b2b.events_us()
    return rows


def explain(work: list[dict]) -> list[str]:
    """What the evidence says about each known-work case, in words: do consecutive kernels overlap, does the
    profiler slow the work or only the gaps, and what separates the cold kernel time from the graph time."""
    lines = []
    for row in work:
        plain, union = row["b2b_events_us"], row["b2b_records_union_us"]
        overlap = row["b2b_records_sum_us"] / union - 1 if union else 0.0
        said = [f"profiler on: back-to-back graph {row['b2b_events_profiled_us'] / plain - 1:+.1%}, "
                f"after the profiler stopped: {row['b2b_events_after_profiling_us'] / plain - 1:+.1%}"]
        said.append(f"consecutive records overlap by {overlap:.1%}" if overlap > 0.001
                    else "no overlap between consecutive records (their sum equals their union)")
        if union <= plain:
            said.append(f"records cover {union:.2f} of {plain:.2f} us per call: {plain - union:.2f} us of gaps")
        else:
            said.append(f"records ({union:.2f} us) are longer than the unprofiled call ({plain:.2f} us): the profiler "
                        f"slows this work itself by {union / plain - 1:.1%}")
        said.append(f"cold kernel_us {row['kernel_us'] / row['graph_us'] - 1:+.1%} vs graph_us; clocks "
                    f"{row['clock_mhz_after_kernel']} MHz after kernel timing, {row['clock_mhz_after_graph']} MHz "
                    f"({row['throttle_after_graph']}) after graph timing")
        lines.append(f"{row['kernel']}: " + "; ".join(said))
    return lines


def run_selfcheck(device: torch.device, cache_bytes: int, max_noise_pct: float = DEFAULTS.max_noise_pct,
                  max_time_s: float = DEFAULTS.max_time_s) -> dict:
    reader = clocks.for_device(device, "rocm" if torch.version.hip else "cuda")
    flusher = kernel_time.Flusher(device, cache_bytes)
    stop = StoppingRule.from_options(max_noise_pct, max_time_s)
    before = clocks.read(reader)
    # Every graph time before the first profiler session: a session slows later graph times in the same
    # process (the harness orders a sweep the same way).
    spin_calls, spin_graph = spin_graphs(device, reader, stop)
    work_graph, work_pending = work_graphs(device, reader, stop)
    spins = spin_rows(device, flusher, reader, stop, spin_calls, spin_graph)
    work = work_rows(device, flusher, reader, stop, work_graph, work_pending)
    after = clocks.read(reader)
    passed = all(r["kernel_ok"] for r in spins) and all(r["graph_ok"] is not False for r in spins)
    return {
        "device": torch.cuda.get_device_name(device),
        "criterion": {"kernel_us": f"|kernel_us - truth| <= {KERNEL_REL:.0%} of truth + "
                                   f"{KERNEL_ABS_US_PER_KERNEL:g} us per kernel launched",
                      "graph_us": f"|graph_us - truth| <= {GRAPH_REL:.0%} of truth, for kernels of {GRAPH_FROM_US:g} us "
                                  "and longer"},
        "passed": passed, "spin": spins, "known_work": work, "explanation": explain(work),
        "copy_bw_GBps": timing.measure_copy_bandwidth(device),
        "clocks": {"before": asdict(before), "after": asdict(after)},
        "flush_MiB": flusher.nbytes / 2**20,
    }

