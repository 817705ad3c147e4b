"""One (case, backend) on one rank: gate, determinism, fresh-data and graph-replay checks, timing.

Every rank runs the same sequence of phases; after each phase the ranks exchange their outcome, so
one rank's failure stops all of them at the same point instead of leaving peers in a collective.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from rocbench.core.harness import clocks, gate, invariance, kernel_time, timing

from rocbench.core.faults import inject
from rocbench.core.axes import Case
from rocbench.core.options import RunOptions
from rocbench.core.roofline import Roofline
from rocbench.core.results import FAIL, FAULT, PASS, UNSUPPORTED, samples_key
from rocbench.core.stats import StoppingRule
from rocbench.core.suite import Backend, RankContext, Suite, Tolerance, Verdict

GRAPH_REPLAYS = 3  # each with fresh input data copied in first
# The phase this rank is in (read by a launched job's watchdog thread to say where a case hung).
current_phase = ""


@dataclass(frozen=True)
class RankResult:
    """What one rank's phases made of a task: its row (or kernel-time fragment; rank 0's is recorded), and whether
    this rank can run another task (False after a fault that leaves the device or the group unusable)."""

    row: dict
    fatal: bool = False


class PhaseError(Exception):
    """A phase raised on some rank; `detail` names the phase, the rank and the error."""

    def __init__(self, detail: str, fatal: bool):
        super().__init__(detail)
        self.detail = detail
        self.fatal = fatal


def exchange(ctx: RankContext, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (over the gloo group, so it works beside any device group)."""
    if ctx.world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj, group=ctx.cpu_group)
    return gathered


def device_alive(ctx: RankContext) -> bool:
    if ctx.device.type != "cuda":
        return True
    try:
        torch.cuda.synchronize(ctx.device)
        return True
    except Exception:  # noqa: BLE001 - any error here means the context is gone
        return False


def phase(ctx: RankContext, name: str, fn: Callable[[], Any]) -> Any:
    global current_phase
    current_phase = name
    try:
        result = fn()
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)  # surface asynchronous kernel faults in this phase
        error = None
    except Exception as exc:  # noqa: BLE001 - any exception becomes a fault row, never a crash
        result = None
        error = f"{type(exc).__name__}: {exc}".strip()
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        if last:
            error += f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})"
    alive = device_alive(ctx)
    outcomes = exchange(ctx, (error, alive))
    failed = [(rank, err) for rank, (err, _) in enumerate(outcomes) if err is not None]
    if failed:
        rank, err = failed[0]
        where = f"rank {rank}: " if ctx.world_size > 1 else ""
        # A dead context cannot run the next case; with several ranks a failed phase may also have left
        # a communicator mid-collective, so the pool is restarted after any multi-rank fault.
        fatal = not all(ok for _, ok in outcomes) or ctx.world_size > 1
        raise PhaseError(f"{name}: {where}{err}", fatal)
    return result


def outputs_of(suite: Suite, result) -> dict[str, torch.Tensor]:
    """A call's result by output name (a lone tensor is the suite's one output)."""
    if isinstance(result, torch.Tensor):
        if len(suite.outputs) != 1:
            raise RuntimeError(f"the call returned one tensor; {suite.name} has outputs {suite.outputs}")
        return {suite.outputs[0]: result}
    missing = set(suite.outputs) - set(result)
    if missing:
        raise RuntimeError(f"the call did not return {', '.join(sorted(missing))}")
    return {name: result[name] for name in suite.outputs}


def snapshot(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in outputs.items()}


def judged(suite: Suite, case: Case, ctx: RankContext, got: dict, expected: Any, tolerance: Tolerance | None) -> Verdict:
    """Every output judged on every rank; the worst rules."""
    want = expected if isinstance(expected, dict) else {suite.outputs[0]: expected}

    def judge_all() -> Verdict:
        verdicts = [suite.judge(case, name, got[name], want[name], tolerance) for name in suite.outputs]
        if len(verdicts) > 1:
            for name, v in zip(suite.outputs, verdicts):
                v.detail = f"{name}: {v.detail}" if v.detail else v.detail
        return Verdict.worst(verdicts)

    return Verdict.combine(exchange(ctx, phase(ctx, "judge", judge_all)))


def same_bits(a: dict, b: dict) -> bool:
    return all(gate.bitwise_equal(a[name], b[name]) for name in a)


def prepared_call(suite: Suite, backend: Backend, case: Case, ctx: RankContext, opts: RunOptions):
    """Fresh inputs (data seed 0), their expected output, the backend prepared on them, and its call (with any
    test-only mutation applied): (io, expected, prepared, run)."""
    io = phase(ctx, "build inputs", lambda: suite.build_io(case, ctx))
    expected = phase(ctx, "fill inputs", lambda: suite.fill(case, io, ctx, data_seed=0))
    prepared = phase(ctx, "prepare", lambda: backend.prepare(case, io, ctx))
    run = inject.wrap(lambda: outputs_of(suite, prepared.run()), opts.inject, ctx.rank, ctx.world_size, case.index)
    return io, expected, prepared, run


def gate_checks(suite: Suite, backend: Backend, case: Case, ctx: RankContext, opts: RunOptions,
                row: dict) -> tuple[Any, Callable] | None:
    """The correctness gate. Returns (io, call) when every check passed, else fills `row` and returns None."""
    io, expected, prepared, run = prepared_call(suite, backend, case, ctx, opts)
    row["path"] = prepared.description
    tolerance = backend.tolerance(case, ctx.platform)

    def checked_call(name: str, call: Callable = run) -> dict:
        return phase(ctx, name, lambda: (suite.reset(case, io, ctx), snapshot(call()))[1])

    first = checked_call("run")
    verdict = judged(suite, case, ctx, first, expected, tolerance)
    row.update(gate_kind=verdict.kind, tolerance=verdict.tolerance, max_abs_err=verdict.max_abs_err, cosine=verdict.cosine)
    if not verdict.passed:
        row.update(status=FAIL, gate="fail", detail=f"first call: {verdict.detail}")
        return None

    second = checked_call("run again")
    same = all(exchange(ctx, same_bits(first, second)))
    row["deterministic"] = "yes" if same else "no"
    if not same:
        row.update(status=FAIL, gate="fail", detail="not deterministic: two runs on the same input differ bitwise")
        return None

    twins = backend.twin_checks(case)
    for column in set(suite.twin_columns) - {column for column, _ in twins}:
        row[column] = "n/a"  # this backend runs different kernels per configuration: no bitwise twin
    for column, twin in twins:
        if backend.unsupported_reason(twin, ctx.platform):
            row[column] = "n/a"
            continue
        twin_prepared = phase(ctx, f"prepare twin {column}", lambda: backend.prepare(twin, io, ctx))
        twin_out = checked_call(f"run twin {column}", lambda: outputs_of(suite, twin_prepared.run()))
        equal = all(exchange(ctx, same_bits(first, twin_out)))
        row[column] = "yes" if equal else "no"
        if not equal:
            row.update(status=FAIL, gate="fail", detail=f"differs bitwise from its twin ({column}: {twin.id})")
            return None

    # New data in the same buffers: catches kernels that are right only on their first call.
    expected = phase(ctx, "refill inputs", lambda: suite.fill(case, io, ctx, data_seed=1))
    fresh = checked_call("run on new data")
    verdict = judged(suite, case, ctx, fresh, expected, tolerance)
    if not verdict.passed:
        row.update(status=FAIL, gate="fail", detail=f"second call, new data: {verdict.detail}")
        return None

    if opts.cuda_graph and ctx.device.type == "cuda":
        graph, outputs = phase(ctx, "graph capture", lambda: timing.capture_outputs(run, ctx.device,
                                                                                    backend.graph_context(ctx)))
        for replay in range(1, GRAPH_REPLAYS + 1):
            expected = phase(ctx, "refill inputs", lambda: suite.fill(case, io, ctx, data_seed=100 + replay))
            out = phase(ctx, f"graph replay {replay}", lambda: replay_outputs(graph, outputs))
            verdict = judged(suite, case, ctx, out, expected, tolerance)
            if not verdict.passed:
                row.update(status=FAIL, gate="fail", graph_replays=f"failed at {replay}/{GRAPH_REPLAYS}",
                           detail=f"CUDA-graph replay {replay}: {verdict.detail}")
                return None
        row["graph_replays"] = f"{GRAPH_REPLAYS}/{GRAPH_REPLAYS} ok"
        del graph
    if not batch_invariance(suite, backend, case, ctx, io, opts, row):
        return None
    row["gate"] = "pass"
    return io, run


def batch_invariance(suite: Suite, backend: Backend, case: Case, ctx: RankContext, io: Any, opts: RunOptions,
                     row: dict) -> bool:
    """The probe request's output in every batch the suite states, bitwise against its output in the case's
    own batch. A property, not a correctness failure: False (the row fails) only under --require-batch-invariant."""
    if opts.skip_batch_probes:
        row["batch_invariant"] = invariance.SKIPPED
        return True
    probes = phase(ctx, "batch probes", lambda: suite.batch_probes(case, io, ctx))
    probes = [p for p in probes or [] if not backend.unsupported_reason(p.case, ctx.platform)]
    if len(probes) < 2:
        row["batch_invariant"] = invariance.NOT_APPLICABLE
        return True
    reference = None
    for probe in probes:
        where = f"batch probe ({probe.perturbation})"
        probe_io, probe_rows = phase(ctx, f"{where}: build", probe.build)
        prepared = phase(ctx, f"{where}: prepare", lambda: backend.prepare(probe.case, probe_io, ctx))
        got = phase(ctx, f"{where}: run", lambda: (suite.reset(probe.case, probe_io, ctx),
                                                    snapshot(probe_rows(outputs_of(suite, prepared.run())))))[1]
        if reference is None:
            reference, reference_name = got, probe.perturbation
            continue
        differences = [d for d in exchange(ctx, invariance.first_difference(reference, got)) if d]
        if differences:
            row.update(batch_invariant=invariance.NO,
                       batch_variance=f"{probe.perturbation} vs {reference_name}: {differences[0]}")
            if opts.require_batch_invariant:
                row.update(status=FAIL, gate="fail",
                           detail=f"not batch-invariant (--require-batch-invariant): {row['batch_variance']}")
                return False
            return True
    row.update(batch_invariant=invariance.YES,
               batch_variance=f"bitwise equal in {len(probes)} batches: " + "; ".join(p.perturbation for p in probes))
    return True


def replay_outputs(graph: torch.cuda.CUDAGraph, outputs: list[dict]) -> dict:
    """Replay and snapshot what the captured call returned (the graph rewrites those tensors in place)."""
    graph.replay()
    return snapshot(outputs[-1])


def rotated_inputs(suite: Suite, case: Case, ctx: RankContext, io: Any) -> list:
    """io plus enough freshly filled copies that consecutive calls never find their data in cache."""
    ios = [io]
    for k in range(1, timing.rotation_count(io_bytes(io), ctx.platform.cache_bytes)):
        extra = suite.build_io(case, ctx)
        suite.fill(case, extra, ctx, data_seed=1000 + k)
        ios.append(extra)
    return ios


def rank_sync(ctx: RankContext) -> timing.RankSync:
    if ctx.world_size == 1:
        return timing.RankSync()
    return timing.RankSync(barrier=lambda: dist.barrier(group=ctx.cpu_group), gather=lambda value: exchange(ctx, value))


def stopping_rule(opts: RunOptions) -> StoppingRule:
    return StoppingRule.from_options(opts.max_noise_pct, opts.max_time_s, opts.iters)


def measure_graph(backend: Backend, ctx: RankContext, opts: RunOptions, runners: list[Callable],
                  clock_reader=None) -> timing.Measurement:
    """graph_us of the runners (one per rotated input), the slowest rank's, sample by sample."""
    return phase(ctx, "graph timing", lambda: timing.graph_time(
        runners, ctx.device, opts.warmup, stopping_rule(opts), rank_sync(ctx), context=backend.graph_context(ctx),
        clock_reader=clock_reader))


def measure_kernel(backend: Backend, ctx: RankContext, opts: RunOptions, run: Callable,
                   clock_reader=None) -> timing.Measurement | str:
    """kernel_us of one call (caches flushed before each), or why it could not be taken here."""
    def timed() -> timing.Measurement | str:
        try:
            if ctx.flusher is None:
                ctx.flusher = kernel_time.Flusher(ctx.device, ctx.platform.cache_bytes or 0)
            return kernel_time.kernel_time(run, ctx.device, stopping_rule(opts), ctx.flusher, rank_sync(ctx),
                                           context=backend.graph_context(ctx), clock_reader=clock_reader)
        except ImportError as why:
            return f"n/a: the cache flush that marks each call is a Triton kernel ({why})"
        except kernel_time.KernelTimeUnavailable as why:
            return f"n/a: {why}"
    return phase(ctx, "kernel timing", timed)


def time_backend(suite: Suite, backend: Backend, case: Case, ctx: RankContext, opts: RunOptions,
                 ios: list, run: Callable, row: dict) -> None:
    """graph_us of a gated backend (kernel_us is taken later, by kernel_pass: see there why)."""
    work = suite.work(case, ctx.world_size)
    runners = [run] + phase(ctx, "prepare rotated inputs", lambda: [
        inject.wrap(backend.prepare(case, extra, ctx).run, opts.inject, ctx.rank, ctx.world_size, case.index)
        for extra in ios[1:]])
    reader = clocks.for_device(ctx.device, ctx.platform.kind)
    before = clocks.read(reader)
    graph = measure_graph(backend, ctx, opts, runners, reader)
    after = clocks.read(reader)
    graph.cold = timing.rotation_label(len(runners), io_bytes(ios[0]), ctx.platform.cache_bytes)
    row.update(timing_mode=graph.mode, graph_calls_per_sample=graph.calls_per_sample, graph_cold=graph.cold,
               clock_drops_graph=graph.stats.dropped, **clock_columns(before, after))
    row.update(time_and_rates("graph", graph.stats, work, ctx.roofline))
    if opts.save_samples:
        row[samples_key("graph")] = graph.stats.values_us


def kernel_pass(suite: Suite, backend: Backend, case: Case, ctx: RankContext, opts: RunOptions) -> RankResult:
    """kernel_us of a backend whose gate passed earlier in this run: the columns to add to its row (as a RankResult).

    A sweep takes every row's graph time first and the kernel times after them, because a profiler session
    leaves the process slower: on an H100, graph times of small decode calls taken after any profiled call
    read 2-10% slow (the same rows taken with --times graph matched the previous version to 0.0%)."""
    fragment: dict = {}
    fatal = False
    try:
        run = prepared_call(suite, backend, case, ctx, opts)[3]
        reader = clocks.for_device(ctx.device, ctx.platform.kind)
        own_clocks = "graph" not in opts.times  # else the graph pass's clocks stand (time_backend): one pair per row
        before = clocks.read(reader) if own_clocks else None
        kernel = measure_kernel(backend, ctx, opts, run, reader)
        if isinstance(kernel, str):
            return RankResult({"kernel_cold": kernel})
        fragment.update(kernels_per_call=kernel.kernels_per_call, kernel_parts=kernel.kernel_parts,
                        kernel_cold=kernel.cold, clock_drops_kernel=kernel.stats.dropped)
        if own_clocks:
            fragment.update(clock_columns(before, clocks.read(reader)))
        fragment.update(time_and_rates("kernel", kernel.stats, suite.work(case, ctx.world_size),
                                       ctx.roofline))
        if opts.save_samples:
            fragment[samples_key("kernel")] = kernel.stats.values_us
    except PhaseError as err:
        fragment.update(status=FAULT, detail=f"kernel timing: {err.detail}")
        fatal = err.fatal
    finally:
        if ctx.device.type == "cuda" and device_alive(ctx):
            torch.cuda.empty_cache()
    return RankResult(fragment, fatal)


def clock_columns(before: clocks.ClockState, after: clocks.ClockState) -> dict:
    """A row's clock columns: the SM clock and throttle reasons around its timing pass."""
    return dict(clock_mhz_before=before.mhz, clock_mhz_after=after.mhz, clock_default_mhz=before.default_mhz,
                throttle_before=before.throttle, throttle_after=after.throttle)


def time_and_rates(basis: str, stats, work, roofline: Roofline | None) -> dict:
    """One time's columns: median/p10/p90, samples and noise, and the rates computed from its median."""
    cols = {f"{basis}_us_median": stats.median_us, f"{basis}_us_p10": stats.p10_us, f"{basis}_us_p90": stats.p90_us,
            f"{basis}_samples": stats.samples, f"{basis}_noise_pct": 100 * stats.noise}
    if not stats.samples or not stats.median_us > 0:
        return cols
    seconds = stats.median_us * 1e-6
    algbw = work.bytes / seconds / 1e9
    cols[f"algbw_{basis}_GBps"] = algbw
    cols[f"tflops_{basis}"] = work.flops / seconds / 1e12 if work.flops else None
    if work.busbw_factor is not None:
        cols[f"busbw_{basis}_GBps"] = algbw * work.busbw_factor
    elif roofline and roofline.copy_bw_GBps:
        cols[f"pct_copy_bw_{basis}"] = 100.0 * algbw / roofline.copy_bw_GBps
    # A collective is bound by its links, not by HBM: no roofline until a link rate is measured (busbw stays its
    # headline, as in nccl-tests)
    floor_us = roofline.floor_us(work.bytes, work.flops, work.mma) if roofline and work.busbw_factor is None else None
    if floor_us:
        cols[f"pct_roofline_{basis}"] = 100.0 * floor_us / stats.median_us
    return cols


def tune_backend(suite: Suite, backend: Backend, case: Case, ctx: RankContext, opts: RunOptions,
                 ios: list, row: dict) -> bool:
    """--tune: gate and time every config the backend offers for this case on the same rotated inputs; the
    fastest that passes (by graph time: what a serving graph pays) is stored where the kernel loads it for
    this device (the row says which won). True when one was stored."""
    tuning = backend.tuning(case, ctx)
    if tuning is None:
        return False
    tolerance = backend.tolerance(case, ctx.platform)
    times: dict[str, float] = {}
    failed: list[str] = []
    for name, config in tuning.candidates.items():
        try:
            expected = phase(ctx, f"tune {name}: fill", lambda: suite.fill(case, ios[0], ctx, data_seed=7))
            prepared = [phase(ctx, f"tune {name}: prepare", lambda: tuning.prepare(io, config)) for io in ios]
            got = phase(ctx, f"tune {name}: run", lambda: (suite.reset(case, ios[0], ctx),
                                                            snapshot(outputs_of(suite, prepared[0].run())))[1])
            if not judged(suite, case, ctx, got, expected, tolerance).passed:
                failed.append(name)
                continue
            times[name] = measure_graph(backend, ctx, opts, [p.run for p in prepared]).stats.median_us
        except PhaseError as err:
            if err.fatal:
                raise
            failed.append(name)
    if not times:
        row["tuned"] = f"no candidate passed ({', '.join(failed)})"
        return False
    best = min(times, key=times.get)
    evidence = {"us": times, "failed": failed, "case": case.id}  # the default is one of the candidates
    where = tuning.remember(best, tuning.candidates[best], evidence) if ctx.rank == 0 else ""
    rank_sync(ctx).barrier()  # every rank loads what rank 0 stored from here on
    row["tuned"] = (f"{best} {times[best]:.2f} us (graph), best of {len(times)} passing ({len(failed)} failed); "
                    f"stored in {where}")
    return True


def io_bytes(io: Any, depth: int = 2) -> int:
    """Bytes of every tensor an io object holds (one level of nested objects too, e.g. a paged cache)."""
    if isinstance(io, torch.Tensor):
        return io.numel() * io.element_size()
    if depth == 0 or not hasattr(io, "__dict__"):
        return 0
    return sum(io_bytes(value, depth - 1) for value in vars(io).values())


def run_case(suite: Suite, backend: Backend, case: Case, ctx: RankContext, opts: RunOptions) -> RankResult:
    """Gate and time one (case, backend) on this rank. Rank 0's row is the one recorded."""
    work = suite.work(case, ctx.world_size)
    row: dict = {"status": PASS, "gate": "", "bytes": work.bytes, "flops": work.flops or None}
    reason = backend.capability_reason(case) or backend.unsupported_reason(case, ctx.platform)
    if backend.single_host and len(set(ctx.hosts)) > 1:
        reason = (f"needs every rank on one host (it maps its peers' memory: IPC); these ranks span "
                  f"{', '.join(dict.fromkeys(ctx.hosts))}")
    if reason:
        row.update(status=UNSUPPORTED, gate="n/a", detail=reason)
        return RankResult(row)
    fatal = False
    try:
        gated = gate_checks(suite, backend, case, ctx, opts, row)
        if gated is not None and not opts.correctness_only and ctx.device.type == "cuda":
            io, run = gated
            ios = phase(ctx, "build rotated inputs", lambda: rotated_inputs(suite, case, ctx, io))
            if opts.tune and tune_backend(suite, backend, case, ctx, opts, ios, row):
                # The kernel loads the stored winner from now on (the kernel pass too): the whole gate again, then
                # the times, so that the row's path, gate and both times are the winner's
                gated = gate_checks(suite, backend, case, ctx, opts, row)
                if gated is not None:
                    io, run = gated
                    ios = phase(ctx, "build rotated inputs", lambda: rotated_inputs(suite, case, ctx, io))
            if gated is not None and "graph" in opts.times:
                time_backend(suite, backend, case, ctx, opts, ios, run, row)
    except PhaseError as err:
        row.update(status=FAULT, gate=row.get("gate") or "fault", detail=err.detail)
        fatal = err.fatal
    finally:
        if ctx.device.type == "cuda" and device_alive(ctx):
            torch.cuda.empty_cache()
    return RankResult(row, fatal)
