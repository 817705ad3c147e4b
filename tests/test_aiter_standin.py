"""The aiter backends end to end on a CPU: the platform simulated as ROCm gfx942 / gfx950, AITER replaced by
the stand-in in tests/aiter_standin (same signatures as AITER, AITER's preconditions, results computed from
its inputs), through the real harness: gates, unsupported rows with reasons, paths, graph-mode dispatch."""
import os
import sys

import pytest
import torch

from tests.aiter_source import REPO, STANDIN, aiter_source_dir, missing_reason
from tests.helpers import latest_run, results, invoke

pytestmark = pytest.mark.skipif(aiter_source_dir() is None, reason=missing_reason())
ARCHS = ["gfx942", "gfx950"]


@pytest.fixture
def simulated(monkeypatch):
    """The stand-in importable here and in the rank processes; the env that makes the platform `arch`."""
    monkeypatch.syspath_prepend(str(STANDIN))

    def env(arch: str) -> dict:
        return {"PYTHONPATH": f"{REPO}{os.pathsep}{STANDIN}", "ROCBENCH_SIMULATE_PLATFORM": f"rocm:{arch}"}
    return env


def rows(frame, **where):
    for key, value in where.items():
        frame = frame[frame[key].astype(str) == str(value)]
    assert len(frame) == 1, where
    return frame.iloc[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_allgather_aiter(arch, tmp_path, simulated):
    proc = invoke("allgather", "--tp", "2", "--backends", "aiter", "--correctness-only", "--shapes", "3x40,2x4x8,2x7",
                    "--dtypes", "bf16,fp32,int32", "--dims", "0,-1,1", "--out", str(tmp_path), env=simulated(arch))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = results(latest_run(tmp_path, "allgather"))
    assert set(frame["status"]) == {"pass"} and len(frame) == 27
    assert rows(frame, shape="3x40", dtype="bfloat16", dim=0)["path"].startswith("aiter custom all-gather dim=0")
    assert rows(frame, shape="3x40", dtype="float32", dim=1)["path"].startswith("aiter custom all-gather dim=-1")
    # AITER gathers every dim != 0 as the last one: a middle dim never reaches it
    assert "gathers every dim != 0 as the last one" in rows(frame, shape="2x4x8", dtype="bfloat16", dim=1)["path"]
    assert "AITER needs a multiple of 16" in rows(frame, shape="2x7", dtype="bfloat16", dim=-1)["path"]
    assert "int32 is not a dtype" in rows(frame, shape="3x40", dtype="int32", dim=0)["path"]


def test_allgather_aiter_at_tp6_is_unsupported():
    from rocbench.core.axes import Case
    from rocbench.core.platform import detect
    from rocbench.suites.allgather import SUITE

    backend = SUITE.backends.get("aiter")
    assert "at 6 it launches nothing" in backend.unsupported_reason(Case((("tp", 6),)), detect())
    assert all(backend.unsupported_reason(Case((("tp", tp),)), detect()) is None for tp in (2, 4, 8))


@pytest.mark.parametrize("arch", ARCHS)
def test_mla_aiter(arch, tmp_path, simulated):
    proc = invoke("mla", "--backends", "aiter", "--correctness-only", "--nhead", "16,32,64,128", "--batch", "2",
                    "--ctx", "40", "--page-size", "16", "--kv-dtype", "bf16,fp8", "--ctx-dist", "skewed",
                    "--out", str(tmp_path), env=simulated(arch))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = results(latest_run(tmp_path, "mla"))
    fp8 = "float8_e4m3fnuz" if arch == "gfx942" else "float8_e4m3fn"
    assert set(frame["kv_dtype"]) == {"bfloat16", fp8}  # "fp8" is the arch's flavour
    assert set(frame["status"]) <= {"pass", "unsupported"} and (frame["status"] == "pass").sum() >= 13
    persistent64 = rows(frame, nhead=64, kv_dtype=fp8, persist=True)
    assert persistent64["status"] == "pass" and "persistent fast_mode=True intra_batch_mode=False" in persistent64["path"]
    assert "max_split_per_batch=64" in persistent64["path"] and f"q cast to {fp8}" in persistent64["path"]
    assert "q in fp8" in persistent64["tolerance"]
    nhead16 = rows(frame, nhead=16, kv_dtype=fp8, persist=True)
    assert nhead16["status"] == "pass" and "intra_batch_mode=True" in nhead16["path"]
    bf16_64 = rows(frame, nhead=64, kv_dtype="bfloat16", persist=False)
    if arch == "gfx942":  # no non-persistent bf16 kernel for 64 heads at q length 1 there
        assert bf16_64["status"] == "unsupported" and "no row" in bf16_64["detail"] and "gfx942" in bf16_64["detail"]
    else:
        assert bf16_64["status"] == "pass" and "qh64_qseqlen1" in bf16_64["path"]
    assert "only supports persistent mode" in rows(frame, nhead=64, kv_dtype=fp8, persist=False)["detail"]


@pytest.mark.parametrize("arch", ARCHS)
def test_moe_aiter(arch, tmp_path, simulated):
    proc = invoke("moe", "--backends", "aiter", "--correctness-only", "--experts", "4", "--topk", "2", "--hidden",
                    "224", "--inter", "224", "--tp", "1", "--tokens", "3,256", "--activation", "silu", "--pad",
                    "--out", str(tmp_path), env=simulated(arch))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = results(latest_run(tmp_path, "moe"))
    assert set(frame["status"]) == {"pass"} and set(frame["layouts_bitwise"]) == {"n/a"}
    assert set(frame["hidden_pad"]) == {32} and frame["path"].str.contains("hidden_pad=32 intermediate_pad=32").all()
    separated = rows(frame, layout="separated", tokens=3)
    assert "a4w4" in separated["path"] and "a4w4" in separated["tolerance"]  # SEPARATED + SiLU: fp4 activations
    interleave = rows(frame, layout="interleave", tokens=256)
    assert ("a8w4" if arch == "gfx950" else "a16w4") in interleave["path"]


def test_moe_aiter_unsupported_rows(tmp_path, simulated):
    """A shape a layout cannot take, and activations AITER's a16w4 path does not take, are rows with reasons."""
    proc = invoke("moe", "--backends", "aiter", "--correctness-only", "--experts", "4", "--topk", "2", "--hidden", "64",
                    "--inter", "128", "--tp", "1", "--tokens", "2", "--x-dtype", "bf16,fp16", "--out", str(tmp_path),
                    env=simulated("gfx950"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = results(latest_run(tmp_path, "moe"))
    assert "not a multiple" in rows(frame, layout="interleave", x_dtype="bfloat16")["detail"]
    assert rows(frame, layout="separated", x_dtype="bfloat16")["status"] == "pass"
    assert (frame[frame["x_dtype"] == "float16"]["detail"].str.contains("takes bf16 activations")).all()
    assert set(frame["status"]) == {"pass", "unsupported"}


@pytest.fixture
def standin(monkeypatch):
    """The stand-in importable in this process, the platform simulated as gfx950."""
    from rocbench.core import platform

    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.setenv(platform.SIMULATE_ENV, "rocm:gfx950")
    platform.detect.cache_clear()
    from aiter import _standin

    _standin.CALLS.clear()
    yield _standin
    platform.detect.cache_clear()


def one_case(suite, **values):
    from rocbench.core.cli.command import suite_params
    from rocbench.core.platform import detect
    from rocbench.core.suite import RankContext

    params = suite_params(suite, {k: None if v is None else str(v) for k, v in values.items()})
    case = suite.cases(params)[0]
    ctx = RankContext(0, 1, torch.device("cpu"), detect(), seed=0)
    io = suite.build_io(case, ctx)
    expected = suite.fill(case, io, ctx, data_seed=0)
    return case, ctx, io, expected


def test_mla_metadata_is_built_as_sglang_builds_it(standin):
    from rocbench.suites.mla import SUITE

    case, ctx, io, expected = one_case(SUITE, nhead="64", batch="3", ctx="50", ctx_dist="skewed", kv_dtype="fp8",
                                       page_size="32", qlen="1", persist=True)
    run = SUITE.backends.get("aiter").prepare(case, io, ctx).run
    assert SUITE.judge(case, "out", run(), expected, SUITE.backends.get("aiter").tolerance(case, ctx.platform)).passed
    (name, meta), (_, call) = standin.CALLS[0], standin.CALLS[1]
    assert name == "get_mla_metadata_v1" and not meta["is_causal"] and meta["kv_granularity"] == 32
    assert meta["max_seqlen_qo"] == meta["uni_seqlen_qo"] == 1 and meta["max_split_per_batch"] == 64
    assert meta["fast_mode"] and not meta["intra_batch_mode"]
    assert call["persistent"] and call["q_dtype"] == torch.float8_e4m3fn


def test_moe_returns_what_fused_moe_returns(standin, monkeypatch):
    """No output copy inside the timed call: the runner hands back fused_moe's own output."""
    from aiter import fused_moe as module

    from rocbench.suites.moe import SUITE

    returned = []
    real = module.fused_moe
    monkeypatch.setattr(module, "fused_moe", lambda *a, **k: returned.append(real(*a, **k)) or returned[-1])
    case, ctx, io, expected = one_case(SUITE, tp="1", tokens="2", layout="interleave", experts=4, topk=2, hidden=128,
                                       inter=128)
    out = SUITE.backends.get("aiter").prepare(case, io, ctx).run()
    assert out is returned[0] and SUITE.judge(case, "out", out, expected).passed


def _dispatch_rank(rank: int, port: int, queue, expandable: bool) -> None:
    """One rank: eager call, then a capture block (warm-up, then a capturing call), as the harness drives it."""
    sys.path.insert(0, str(STANDIN))
    os.environ["ROCBENCH_SIMULATE_PLATFORM"] = "rocm:gfx942"
    if expandable:
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    import torch.distributed as dist

    from aiter import _standin
    from rocbench.core.platform import detect
    from rocbench.core.suite import RankContext
    from rocbench.suites.allgather import SUITE

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ctx = RankContext(rank, 2, torch.device("cpu"), detect(), 0, dist.group.WORLD, dist.group.WORLD, graph_mode=True)
    case = SUITE.cases({"tp": 2, "shapes": [(4, 64)], "dtypes": [torch.bfloat16], "dims": [0]})[0]
    backend = SUITE.backends.get("aiter")
    io = SUITE.build_io(case, ctx)
    expected = SUITE.fill(case, io, ctx, 0)
    prepared = backend.prepare(case, io, ctx)
    run = prepared.run
    from rocbench.core.harness.gate import bitwise_equal

    eager_ok = bitwise_equal(run(), expected)  # NaN payloads included
    with backend.graph_context(ctx):
        torch.cuda.is_current_stream_capturing = lambda: False  # warm-up inside the capture block
        warm_zero = bool((run() == 0).all())
        torch.cuda.is_current_stream_capturing = lambda: True
        captured_ok = bitwise_equal(run(), expected)
    queue.put((rank, [name for name, _ in _standin.CALLS], eager_ok, warm_zero, captured_ok, prepared.description))
    dist.destroy_process_group()


@pytest.mark.parametrize("expandable", [False, True])
def test_graph_mode_dispatch_order(expandable):
    from rocbench.core.harness.isolate import free_port, rank_context

    ctx = rank_context()  # the harness's own way to start ranks
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_dispatch_rank, args=(rank, port, queue, expandable)) for rank in range(2)]
    for proc in procs:
        proc.start()
    got = dict((item[0], item[1:]) for item in (queue.get(timeout=120) for _ in procs))
    for proc in procs:
        proc.join(30)
    calls, eager_ok, warm_zero, captured_ok, path = got[0]
    assert eager_ok and warm_zero and captured_ok
    captured = "all_gather_unreg" if expandable else "all_gather_reg"
    assert calls == ["all_gather_unreg", captured, "register_graph_buffers"], calls  # warm-up calls nothing
    assert ("expandable_segments is on" in path) == expandable, path
