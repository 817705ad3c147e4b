"""The timing logic on the CPU, with fakes for ranks, the profiler and NVML: noise and stopping rule, sample
summaries, kernel_us from activity records, clock reading, rates, speedups, compare and column names."""
import json
import math
import sys
import types
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from rocbench.core.harness import clocks

from rocbench.core.reporting import compare, report

from rocbench.core import results
from rocbench.core.axes import Case
from rocbench.core.harness.measure import time_and_rates
from rocbench.core.harness.kernel_time import (Activity, call_spans, kernels_label, parts_label, short_kernel_name,
                                               union_ns)
from rocbench.core.roofline import Roofline
from rocbench.core.stats import StoppingRule, TimingStats, median_noise, slowest_rank
from rocbench.core.suite import Work, over_backend
from rocbench.core.harness.recorder import add_speedups, finish_row, timed_medians
from rocbench.core.harness.timing import RankSync, rotation_count, rotation_label, sample_until

NAN = math.nan
MiB = 1 << 20


# --- stats ------------------------------------------------------------------------------------------------

def test_median_noise_is_inf_below_three_samples_zero_when_identical_and_ignores_nans():
    values = list(np.random.default_rng(1).normal(100.0, 1.0, 50))
    assert median_noise([]) == median_noise([1.0, NAN, 2.0, NAN]) == math.inf
    assert median_noise([5.0] * 10) == 0.0
    assert median_noise(values + [NAN] * 30) == median_noise(values) > 0


def test_median_noise_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(0)
    noise = {n: np.mean([median_noise(rng.normal(100.0, 1.0, n)) for _ in range(20)]) for n in (25, 400)}
    assert 2.5 < noise[25] / noise[400] < 6, noise


def test_fixed_rule_takes_exactly_that_many_samples():
    rule = StoppingRule(fixed=7, max_seconds=0.1)
    assert not rule.done([1.0] * 6, elapsed_s=100.0) and rule.done([1.0] * 7, elapsed_s=0.0)
    assert (rule.wanted(0), rule.wanted(5), rule.wanted(7)) == (7, 2, 0)


@pytest.mark.parametrize("samples, elapsed_s, done", [
    ([1.0] * 9, 0.0, False), ([1.0] * 10, 0.0, True),  # quiet: done at min_samples, not before
    ([1.0, 2.0] * 25, 0.99, False), ([1.0, 2.0] * 25, 1.0, True),  # noisy: done at max_seconds
    ([NAN] * 40, 1.0, False), ([NAN] * 40, 3.99, False), ([NAN] * 40, 4.0, True),  # all dropped: 4x max_seconds
])
def test_stopping_rule(samples, elapsed_s, done):
    assert StoppingRule(max_rel_noise=0.005, min_samples=10, max_seconds=1.0).done(samples, elapsed_s) == done


def test_wanted_asks_for_at_least_the_rest_of_min_samples():
    rule = StoppingRule(min_samples=10)
    assert rule.wanted(0) == 10 and rule.wanted(7) >= 3 and min(rule.wanted(10), rule.wanted(100)) >= 2


def test_timing_stats_drop_and_count_nan_samples():
    stats = TimingStats.from_samples([NAN, *range(1, 12), NAN])  # kept: 1..11
    assert (stats.samples, stats.dropped) == (11, 2)
    assert stats.median_us == 6.0 and stats.p10_us == pytest.approx(2.0) and stats.p90_us == pytest.approx(10.0)
    empty = TimingStats.from_samples([NAN, NAN])
    assert (empty.samples, empty.dropped) == (0, 2) and math.isnan(empty.median_us)


def test_slowest_rank_takes_elementwise_max_and_propagates_nan():
    got = slowest_rank([[1.0, 5.0, 3.0, 1.0], [2.0, 4.0, NAN, 1.5]])
    assert got[:2] == [2.0, 5.0] and math.isnan(got[2]) and got[3] == 1.5


# --- sample_until with fake ranks ---------------------------------------------------------------------------

def two_ranks(other_error=None, seen=None):
    """RankSync of rank 0 of two; rank 1 is 2x slower and reports `other_error` (None: no error)."""
    def gather(value):
        if seen is not None:
            seen.append(value)
        if isinstance(value, list):
            return [value, [2 * x for x in value]]
        if value is None or isinstance(value, str):
            return [value, other_error]
        return [value, value]
    return RankSync(gather=gather)


def test_sample_until_loops_until_the_rule_is_done():
    asked = []

    def take(n):
        asked.append(n)
        return [1.0 + 0.01 * len(asked)] * n

    rule = SimpleNamespace(wanted=lambda taken: 3, done=lambda samples, elapsed_s: len(samples) >= 10)
    samples = sample_until(take, rule, RankSync())
    assert asked == [3, 3, 3, 3]
    assert samples == [1.01] * 3 + [1.02] * 3 + [1.03] * 3 + [1.04] * 3


def test_sample_until_returns_the_slower_ranks_samples():
    samples = sample_until(lambda n: [float(i + 1) for i in range(n)], StoppingRule(fixed=5), two_ranks())
    assert samples == [2.0, 4.0, 6.0, 8.0, 10.0]


def test_sample_until_reraises_this_ranks_error_after_telling_the_others():
    seen = []

    def take(n):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        sample_until(take, StoppingRule(fixed=3), two_ranks(seen=seen))
    assert "ValueError: boom" in seen


def test_sample_until_raises_when_another_rank_failed():
    with pytest.raises(RuntimeError, match=r"rank 1: ValueError: boom"):
        sample_until(lambda n: [1.0] * n, StoppingRule(fixed=3), two_ranks(other_error="ValueError: boom"))


# --- kernel_us from activity records ------------------------------------------------------------------------

@pytest.mark.parametrize("intervals, total", [
    ([(0, 10), (20, 25)], 15),  # disjoint
    ([(0, 10), (5, 15)], 15),  # overlapping
    ([(0, 100), (10, 20)], 100),  # nested
    ([(10, 20), (0, 10)], 20),  # touching, out of order
    ([], 0),
])
def test_union_ns(intervals, total):
    assert union_ns(intervals) == total


def test_call_spans_split_at_flushes_skip_gaps_and_clip_early_starts():
    flush = "rocbench_l2_flush_0d1d"
    records = [
        Activity("warmup", 0, 500),  # before the first flush: ignored
        Activity(flush, 1000, 1100), Activity("k1", 1100, 1150), Activity("k2", 1200, 1260),  # gap not counted
        Activity(flush, 1300, 1400),
        Activity("k3", 1350, 1450),  # programmatic dependent launch: counted from the flush's end, 1400
        Activity("k4", 1440, 1500),  # overlaps k3: counted once
        Activity("k5", 1310, 1390),  # wholly inside the flush: nothing of the call
    ]
    spans = call_spans(records)
    assert [(s.busy_us, s.kernels) for s in spans] == [(pytest.approx(0.110), 2), (pytest.approx(0.100), 2)]
    assert [[(name, round(us, 3)) for name, us in s.parts] for s in spans] == [[("k1", 0.05), ("k2", 0.06)],
                                                                            [("k3", 0.05), ("k4", 0.05)]]
    assert [sum(us for _, us in s.parts) for s in spans] == [pytest.approx(s.busy_us) for s in spans]


def test_kernel_parts_count_a_waiting_kernel_only_after_its_predecessor():
    """Programmatic dependent launch: the reduce starts 1 us into the attention and waits for it, so only its
    2 us past the attention's end are its own; two launches of one kernel add up."""
    flush = "rocbench_l2_flush_0d1d"
    records = [Activity(flush, 0, 1000), Activity("attend", 1000, 9000), Activity("reduce", 2000, 11000),
               Activity("attend", 11500, 12500)]
    (span,) = call_spans(records)
    assert dict(span.parts) == {"attend": pytest.approx(9.0), "reduce": pytest.approx(2.0)}
    assert span.busy_us == pytest.approx(11.0)


def test_parts_label_gives_each_kernels_median_per_call_slowest_first():
    calls = [(("reduce", 1.0), ("attend", 5.0)), (("reduce", 3.0), ("attend", 7.0)), (("attend", 6.0),)]
    assert parts_label(calls) == "attend 6.0 us, reduce 2.0 us"  # reduce's median over the 2 calls that ran it
    assert parts_label([]) == ""


def test_kernels_label_is_the_count_or_its_range():
    assert (kernels_label([3, 3, 3]), kernels_label([2, 4, 3]), kernels_label([])) == ("3", "2-4", "")


# --- clocks -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mhz, default, low", [
    (700.0, 1000.0, True), (750.0, 1000.0, False), (1000.0, 1000.0, False), (None, 1000.0, False), (500.0, None, False),
])
def test_clock_state_low_below_75_percent_of_default(mhz, default, low):
    assert clocks.ClockState(mhz, default, "none").low is low


def test_no_reader_or_a_failing_one_reads_unreadable():
    assert clocks.read(None) is clocks.read(SimpleNamespace(read=lambda: 1 / 0)) is clocks.UNREADABLE


def fake_pynvml(mask: int) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def no_application_clocks(handle, kind):
        raise NVMLError("not supported")

    nvml.__dict__.update(
        NVMLError=NVMLError, NVML_CLOCK_SM=1, nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetDefaultApplicationsClock=no_application_clocks, nvmlDeviceGetMaxClockInfo=lambda h, k: 1980,
        nvmlDeviceGetClockInfo=lambda h, k: 1410, nvmlDeviceGetCurrentClocksEventReasons=lambda h: mask,
        nvmlClocksEventReasonGpuIdle=1, nvmlClocksEventReasonSwPowerCap=4, nvmlClocksEventReasonHwSlowdown=8,
        nvmlClocksEventReasonAll=0xFF, nvmlClocksEventReasonNone=0)
    return nvml


def test_nvml_reader_decodes_clock_and_throttle_reasons(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(mask=4 | 8))
    state = clocks.NvmlClocks(0, None).read()
    assert state == clocks.ClockState(1410.0, 1980.0, "SwPowerCap+HwSlowdown")  # default: the max clock
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(mask=0))
    assert clocks.NvmlClocks(0, None).read().throttle == "none"


def test_reader_is_none_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    clocks.reader.cache_clear()
    try:
        assert clocks.reader("cuda", 0) is None
    finally:
        clocks.reader.cache_clear()


# --- input rotation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("per_copy, cache, copies, label", [
    (10 * MiB, 50 * MiB, 11, "rotation x11 (110 MiB >= 2x cache)"),
    (1 * MiB, 64 * MiB, 32, "rotation x32 (32 MiB < 2x cache 128 MiB: partly warm)"),  # capped at 32 copies
    (10 * MiB, None, 1, "rotation x1"),
])
def test_rotation_count_and_label(per_copy, cache, copies, label):
    assert rotation_count(per_copy, cache) == copies
    assert rotation_label(copies, per_copy, cache) == label


# --- rates and speedups -------------------------------------------------------------------------------------

STATS_10US = TimingStats(10.0, 9.0, 11.0, 20, 0, 0.01)


def test_collective_gets_busbw_and_no_copy_bw_share():
    cols = time_and_rates("kernel", STATS_10US, Work(bytes=10_000_000, busbw_factor=1.5), Roofline(3000.0))
    assert cols["kernel_us_median"] == 10.0 and cols["algbw_kernel_GBps"] == pytest.approx(1000.0)
    assert cols["busbw_kernel_GBps"] == pytest.approx(1500.0) and not any(c.startswith("pct_") for c in cols)


def test_non_collective_gets_share_of_copy_bandwidth():
    cols = time_and_rates("graph", STATS_10US, Work(bytes=10_000_000, flops=2e7), Roofline(4000.0, 800.0))
    assert cols["pct_copy_bw_graph"] == pytest.approx(25.0) and cols["tflops_graph"] == pytest.approx(2.0)
    assert "busbw_graph_GBps" not in cols and not any("kernel" in c for c in cols)
    assert cols["pct_roofline_graph"] == pytest.approx(25.0)  # 2.5 us of bytes outweigh 0.025 us of flops


def test_the_roofline_is_the_larger_of_the_byte_and_the_flop_floor():
    compute_bound = Work(bytes=4_000_000, flops=4e9)  # 1 us of bytes at 4 TB/s, 5 us of flops at 800 TFLOP/s
    cols = time_and_rates("kernel", STATS_10US, compute_bound, Roofline(4000.0, 800.0, 1600.0))
    assert cols["pct_roofline_kernel"] == pytest.approx(50.0)
    fp8 = time_and_rates("kernel", STATS_10US, Work(bytes=4_000_000, flops=4e9, mma="fp8"), Roofline(4000.0, 800.0, 1600.0))
    assert fp8["pct_roofline_kernel"] == pytest.approx(25.0)
    unknown_rate = time_and_rates("kernel", STATS_10US, compute_bound, Roofline(4000.0))
    assert "pct_roofline_kernel" not in unknown_rate  # a flop floor without a measured MMA rate would be untrue


def test_no_kept_samples_gives_only_time_columns():
    cols = time_and_rates("kernel", TimingStats.from_samples([NAN] * 4), Work(bytes=100), Roofline(3000.0))
    assert set(cols) == {"kernel_us_median", "kernel_us_p10", "kernel_us_p90", "kernel_samples", "kernel_noise_pct"}


def test_speedups_per_time_basis_from_the_rows_they_are_relative_to():
    suite = SimpleNamespace(name="toy", case_columns=lambda case: {"tokens": case["tokens"]},
                            work=lambda case, n: Work(bytes=1))
    case, speedups, rows = Case((("tokens", 8),)), [over_backend("base")], []
    cases_by_id = {case.id: case}

    def row(backend, kernel, graph):
        done = {"status": "pass", "kernel_us_median": kernel, "graph_us_median": graph}
        full = finish_row(suite, case, SimpleNamespace(name=backend), 1, done)
        add_speedups(full, timed_medians(rows + [full]), cases_by_id, speedups)
        rows.append(full)
        return full

    base = row("base", 10.0, 20.0)
    assert base["case"] == "tokens=8" and base["tokens"] == 8 and base["bytes"] == 1
    assert base["speedup_vs_base_kernel"] is None and base["speedup_vs_base_graph"] is None
    fast = row("fast", 5.0, 16.0)
    assert fast["speedup_vs_base_kernel"] == 2.0 and fast["speedup_vs_base_graph"] == 1.25
    no_kernel = row("eager", NAN, 40.0)
    assert no_kernel["speedup_vs_base_kernel"] is None and no_kernel["speedup_vs_base_graph"] == 0.5
    no_kernel["kernel_us_median"] = 20.0  # its kernel time arrives later (the kernel pass): recomputed
    add_speedups(no_kernel, timed_medians(rows), cases_by_id, speedups)
    assert no_kernel["speedup_vs_base_kernel"] == 0.5


# --- compare ------------------------------------------------------------------------------------------------

def timed(median, spread=0.01):
    return median, median * (1 - spread), median * (1 + spread)


TIME_COLUMNS = results.time_columns("kernel") + results.time_columns("graph")


def write_run(path, rows, legacy=False, meta=None):
    """A run directory: results.csv of rows (case, kernel (median, p10, p90) or None, graph ...), meta.json."""
    records = [{"suite": "toy", "case": f"tokens={case}", "backend": "fast", "tokens": case, "ranks": 1,
                "status": "pass", "detail": "",
                **({"time_us_median": graph[0], "time_us_p10": graph[1], "time_us_p90": graph[2], "speedup_vs_x": 1.5}
                   if legacy else dict(zip(TIME_COLUMNS, kernel + graph)))}
               for case, kernel, graph in rows]
    path.mkdir()
    pd.DataFrame(records).to_csv(path / "results.csv", index=False)
    (path / "meta.json").write_text(json.dumps({"suite": "toy", **(meta or {})}))
    return path


def test_compare_flags_a_kernel_regression_but_not_noise(tmp_path):
    """tokens=8: kernel 20% slower; 16: 1% slower; 32: 10% slower, but the spreads overlap (not beyond noise)."""
    same = timed(10.0), timed(20.0)
    base = write_run(tmp_path / "base", [(8, *same), (16, *same), (32, *same)])
    new = write_run(tmp_path / "new", [(8, timed(12.0), timed(20.0)), (16, timed(10.1), timed(20.0)),
                                       (32, timed(11.0, spread=0.2), timed(20.0))])
    result = compare.compare(base, new)
    verdicts = result.table.set_index("case")[["verdict_kernel", "verdict_graph", "verdict"]]
    assert list(verdicts.loc["tokens=8"]) == ["REGRESSION", "same", "REGRESSION"]
    assert verdicts.loc[["tokens=16", "tokens=32"], "verdict"].tolist() == ["same (within noise/threshold)"] * 2
    records = compare.regression_records(result)
    assert [(r["case"], r["time"]) for r in records] == [("tokens=8", "kernel")]
    assert records[0]["change"] == pytest.approx(0.2)


def test_legacy_run_reads_as_graph_time_and_compares(tmp_path):
    base = write_run(tmp_path / "base", [(8, None, timed(20.0))], legacy=True)
    frame = results.read_results(base)
    assert frame.loc[0, "graph_us_median"] == 20.0 and frame.loc[0, "speedup_vs_x_graph"] == 1.5
    assert "time_us_median" not in frame and "speedup_vs_x" not in frame
    new = write_run(tmp_path / "new", [(8, timed(10.0), timed(24.0))])
    row = compare.compare(base, new).table.iloc[0]
    assert (row["verdict_kernel"], row["verdict_graph"], row["verdict"]) == ("not timed", "REGRESSION", "REGRESSION")


def test_a_legacy_eager_run_is_not_read_as_graph_time(tmp_path):
    """An older version without --cuda-graph timed eager calls; its report had called them graph time."""
    eager = write_run(tmp_path / "eager", [(8, None, timed(20.0))], legacy=True, meta={"options": {"cuda_graph": False}})
    frame = results.read_results(eager)
    assert "graph_us_median" not in frame and frame.loc[0, "eager_us_median"] == 20.0
    assert frame.loc[0, "speedup_vs_x_eager"] == 1.5 and report.times_legend({}, frame) == [
        f"- `eager_us`: {results.LEGACY_EAGER_MEANING}"]
    row = compare.compare(eager, write_run(tmp_path / "new", [(8, timed(10.0), timed(24.0))])).table.iloc[0]
    assert row["verdict_graph"] == "not timed"


# --- column names -------------------------------------------------------------------------------------------

def test_speedup_header_names_baseline_and_time():
    assert report.numeric_format("speedup_vs_split_kv_kernel") == ("x split kv (kernel)", "{:.2f}x")


def test_columns_for_end_with_one_speedup_per_time():
    suite = SimpleNamespace(columns=lambda: ["a"], twin_columns=(), speedups=lambda: [over_backend("torch")])
    columns = results.columns_for(suite)
    assert columns[:4] == ["suite", "case", "backend", "a"]
    assert columns[-2:] == ["speedup_vs_torch_kernel", "speedup_vs_torch_graph"]


@pytest.mark.parametrize("times, recorded", [(("kernel",), True), (("kernel", "graph"), False)])
def test_a_kernel_only_run_records_the_clocks_around_its_kernel_pass(monkeypatch, times, recorded):
    """--times kernel (the A/B runs) has no graph pass to read the clock around: its rows would say nothing of a
    card that warmed and slowed between runs. With both times, the graph pass's clocks stand (one pair per row)."""
    from rocbench.core.harness import measure
    from rocbench.core.options import RunOptions

    states = iter([clocks.ClockState(1980.0, 1980.0, "none"), clocks.ClockState(1755.0, 1980.0, "SwPowerCap")])
    monkeypatch.setattr(measure, "prepared_call", lambda *args: (None, None, None, lambda: None))
    monkeypatch.setattr(measure.clocks, "for_device", lambda device, kind: "reader")
    monkeypatch.setattr(measure.clocks, "read", lambda reader: next(states))
    stats = SimpleNamespace(median_us=10.0, p10_us=9.9, p90_us=10.1, samples=50, noise=0.001, dropped=0)
    monkeypatch.setattr(measure, "measure_kernel", lambda *args: SimpleNamespace(
        kernels_per_call=1, kernel_parts="k 10.0 us", cold="flushed", stats=stats))
    monkeypatch.setattr(measure, "device_alive", lambda ctx: False)
    suite = SimpleNamespace(work=lambda case, world: SimpleNamespace(bytes=1e6, flops=0, mma=None, busbw_factor=None))
    ctx = SimpleNamespace(device=SimpleNamespace(type="cpu"), platform=SimpleNamespace(kind="cuda"), world_size=1,
                          roofline=None)
    columns = measure.kernel_pass(suite, None, None, ctx, RunOptions(times=times)).row
    assert columns["kernel_us_median"] == 10.0 and columns["kernel_parts"] == "k 10.0 us"
    clock_columns = dict(clock_mhz_before=1980.0, clock_mhz_after=1755.0, clock_default_mhz=1980.0,
                         throttle_before="none", throttle_after="SwPowerCap")
    assert (clock_columns.items() <= columns.items()) is recorded
    assert recorded or not clock_columns.keys() & columns.keys()


def test_warm_up_runs_its_replays_and_on_until_its_time_the_ranks_agreeing(monkeypatch):
    """timing.warm_up: the counted replays, more until min_us back to back (from the first replay's time), the
    ranks' largest count so a collective replays as often everywhere, none for --warmup 0."""
    from rocbench.core.harness import timing

    monkeypatch.setattr(timing.torch.cuda, "synchronize", lambda device=None: None)
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])  # a clock that only replays move
    calls = []

    def replay():  # a 2 ms replay
        calls.append(1)
        now[0] += 0.002

    def warmed(replays, sync=timing.ALONE):
        calls.clear()
        count = timing.warm_up(replay, "cpu", replays, sync, min_us=10_000)
        assert count == len(calls)
        return count

    assert warmed(1) == 5  # 10 ms of 2 ms replays
    assert warmed(20) == 20  # the count wins where it is more
    assert warmed(0) == 0  # --warmup 0: none
    assert warmed(1, RankSync(gather=lambda value: [value, 9])) == 9  # another rank needs 9


@pytest.mark.parametrize("record, short", [
    ("_kernel", "_kernel"),  # Triton: the function's name already
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, at::detail::Array<char*, 1> >"
     "(int, at::native::FillFunctor<float>, at::detail::Array<char*, 1>)", "vectorized_elementwise_kernel"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>(float*, float const*, int)",
     "cunn_SoftMaxForward"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_gemm_bf16_64x64>(cutlass_80_tensorop_gemm_bf16_64x64::Params)",
     "cutlass_80_tensorop_gemm_bf16_64x64"),
    ("void cutlass::device_kernel<flash::FlashAttnFwdSm90<flash::Mainloop<2, cute::tuple<int>>, int> >"
     "(flash::FlashAttnFwdSm90<int>::Params)", "FlashAttnFwdSm90"),
    ("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "ncclDevKernel_AllGather_RING_LL"),
    ("Memcpy DtoD (Device -> Device)", "Memcpy DtoD"),
])
def test_kernel_parts_name_a_record_by_its_function(record, short):
    """No commas, templates or parameters in kernel_parts' names (its ", " separates the parts)."""
    assert short_kernel_name(record) == short
