"""What a dry run says before anything runs: the cases, the ranks, how long the run should take and how much device
memory its largest case needs, from a stated model (printed with the estimate).

Time, per (case, backend) row:
- on a GPU: the gate (a handful of checked calls, CUDA-graph replays, the batch probes) about GPU_GATE_S, plus at
  most --max-time of sampling per time taken (--times), or --iters samples; the first call of each backend also
  compiles its kernels (Triton, GPU_COMPILE_S);
- on a CPU: the family's InterpreterCost (seconds per row plus per MiB a call moves, fitted on a 2-core CI box for
  Triton's interpreter; a collective's gloo ranks by default), times PROBE_FACTOR with the batch probes, plus the
  process and rank start-up once.
Memory, per case: its buffers (the bytes one call moves) times the input copies timing rotates through to keep the
caches cold (timing.rotation_count), plus its fp32 reference; or, where the family says building its inputs takes
more (Work.build_bytes), that. The dry run gives the largest case's.
"""
from __future__ import annotations

from rocbench.core.harness import timing

GPU_GATE_S = 0.6
GPU_COMPILE_S = 3.0
START_S = 5.0  # importing torch and starting the ranks
PROBE_FACTOR = 2.2  # the batch probes' calls, on top of the gate's (measured: 1.4-3.1x)


def row_seconds(suite, work, opts, has_gpu: bool) -> float:
    if not has_gpu:
        cost = suite.interpreter_cost
        gate = cost.per_row_s + cost.per_mib_s * work.bytes / 2**20
        return gate * (1.0 if opts.skip_batch_probes else PROBE_FACTOR)
    if opts.correctness_only:
        return GPU_GATE_S
    sampling = opts.max_time_s if opts.iters is None else 0.05 * opts.iters
    return GPU_GATE_S + len(opts.times) * sampling


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def dry_run_plan(suite, cases, backends, world_size: int, opts, platform) -> dict:
    """The dry run's answer: counts, the time estimate and the largest case's memory, each with its model."""
    works = [suite.work(case, world_size) for case in cases]
    rows = len(cases) * len(backends)
    seconds = START_S + sum(row_seconds(suite, work, opts, platform.has_gpu) for work in works) * len(backends)
    if platform.has_gpu:
        seconds += GPU_COMPILE_S * len(backends)
    timed = platform.has_gpu and not opts.correctness_only

    def copies(work) -> int:
        return timing.rotation_count(work.bytes, platform.cache_bytes) if timed else 1

    def buffers(work) -> int:  # the call's buffers, their rotated copies and an fp32 reference
        return work.bytes * copies(work) + 4 * work.bytes

    def memory(work) -> int:  # or building the inputs, where that takes more
        return max(buffers(work), work.build_bytes)

    largest = max(works, key=memory)
    need = memory(largest)
    if platform.has_gpu:
        model = f"gate ~{GPU_GATE_S:g} s + at most --max-time of sampling per time, per row"
    else:
        cost = suite.interpreter_cost
        model = (f"{cost.per_row_s:g} s + {cost.per_mib_s:g} s per MiB moved, per row on this CPU"
                 + ("" if opts.skip_batch_probes else f", x{PROBE_FACTOR:g} with the batch probes"))
    if largest.build_bytes > buffers(largest):
        why = f"while its inputs are built; a call then moves {largest.bytes / 2**20:.1f} MiB"
    else:
        n = copies(largest)
        why = f"{n} input cop{'y' if n == 1 else 'ies'} of {largest.bytes / 2**20:.1f} MiB + its reference"
    text = (f"estimate: about {duration(seconds)} for {rows} rows ({model}); the largest case needs about "
            f"{need / 2**20:.0f} MiB per rank ({why})")
    return {"suite": suite.name, "dry_run": True, "cases": len(cases), "backends": [b.name for b in backends],
            "rows": rows, "ranks": world_size,
            "estimate": {"seconds": round(seconds, 1), "largest_case_bytes": need, "text": text}}
