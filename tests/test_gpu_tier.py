"""The GPU tier of `make test` (skipped without a GPU, saying so): the real paths end to end on one GPU. The gates
under CUDA-graph replay in bf16 and fp8, both times of a timed row (kernel_us from the profiler), a short
selfcheck, and the fault matrix's GPU entries. The compiled Triton kernels in bf16/fp8 are the kernel test modules,
which run on the GPU wherever there is one. Speeds are checked by `rocbench` on the device, never here."""
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from tests.helpers import REPO, cli_env, latest_run, meta, results, rocbench, wait_until_gone
from tests.test_mla_gluon import GLUON_HERE

pytestmark = [pytest.mark.gpu, pytest.mark.gpu_exclusive,  # times kernels: nothing else on the GPU meanwhile
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]


def test_mla_and_moe_gates_hold_under_graph_replay_in_bf16_and_fp8(tmp_path):
    # batch 32 x 600 tokens: past the Gluon tile's least KV (mla_config.GLUON_MIN_KV_TOKENS) for bf16 and for fp8 at
    # 128 heads, below fp8's at 16
    mla = rocbench("mla", "--nhead", "16,128", "--batch", "1,8,32", "--ctx", "600", "--kv-dtype", "bf16,fp8",
                   "--ctx-dist", "skewed", "--correctness-only", "--cuda-graph", "--out", str(tmp_path), on_gpu=True)
    assert mla.returncode == 0, mla.stdout[-3000:] + mla.stderr[-2000:]
    frame = results(latest_run(tmp_path, "mla"))
    assert len(frame) == 24 and set(frame["status"]) == {"pass"} and set(frame["q_dtype"]) == {"bfloat16"}
    assert frame["graph_replays"].str.startswith("3/3").all()
    gluon = frame["path"].str.contains("; Gluon tile (", regex=False)
    wanted = frame["persist"].astype(str).eq("True") & frame["batch"].eq(32) & (
        frame["kv_dtype"].eq("bfloat16") | frame["nhead"].eq(128))
    assert gluon.tolist() == (wanted & GLUON_HERE).tolist(), frame[["path"]].to_string()
    moe = rocbench("moe", "--model", "deepseek-r1", "--tp", "8", "--tokens", "1,40", "--correctness-only",
                   "--cuda-graph", "--out", str(tmp_path), on_gpu=True)
    assert moe.returncode == 0, moe.stdout[-3000:] + moe.stderr[-2000:]
    frame = results(latest_run(tmp_path, "moe"))
    assert set(frame["status"]) == {"pass"} and set(frame["layouts_bitwise"]) == {"yes"}
    assert frame["graph_replays"].str.startswith("3/3").all()


def test_a_timed_row_has_both_times_and_its_rates(tmp_path):
    proc = rocbench("mla", "--nhead", "64", "--batch", "4", "--ctx", "2048", "--kv-dtype", "bf16", "--ctx-dist",
                    "uniform", "--max-time", "0.2", "--save-samples", "--out", str(tmp_path), on_gpu=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run = latest_run(tmp_path, "mla")
    frame = results(run)
    assert set(frame["status"]) == {"pass"}
    for basis in ("kernel", "graph"):
        assert (frame[f"{basis}_us_median"] > 0).all() and (frame[f"{basis}_us_p10"] <= frame[f"{basis}_us_p90"]).all()
        assert (frame[f"pct_copy_bw_{basis}"] > 0).all() and frame[f"pct_roofline_{basis}"].between(0, 100).all()
    assert frame["kernel_cold"].str.startswith("flush").all() and (frame["kernels_per_call"].astype(str) != "").all()
    assert frame["speedup_vs_split_kv_graph"].notna().iloc[1] and meta(run)["copy_bw_GBps"] > 100
    assert meta(run)["roofline"]["mma_tflops"]["bf16"] > 10 and "8192" in meta(run)["roofline"]["how"]
    assert frame["devices"].tolist() == ["cuda:0", "cuda:0"]
    for row in frame.itertuples():  # each kernel's median own time per call: no more kernels than a call ran,
        parts = [part.rsplit(" ", 2) for part in row.kernel_parts.split(", ")]  # adding up to about the call's time
        most_kernels = int(str(row.kernels_per_call).split("-")[-1])
        assert all(unit == "us" for _, _, unit in parts) and 1 <= len(parts) <= most_kernels
        total = sum(float(us) for _, us, _ in parts)
        assert 0.8 * row.kernel_us_median <= total <= 1.2 * row.kernel_us_median, row.kernel_parts
    # --save-samples: every sample of both times, in order; the row's median is theirs
    samples = pd.read_csv(run / "samples.csv")
    for row in frame.itertuples():
        for basis in ("kernel", "graph"):
            mine = samples[(samples["case"] == row.case) & (samples["backend"] == row.backend) &
                           (samples["time"] == basis)]
            assert mine["index"].tolist() == list(range(len(mine)))
            assert mine["us"].notna().sum() == getattr(row, f"{basis}_samples")
            assert mine["us"].median() == pytest.approx(getattr(row, f"{basis}_us_median"), rel=1e-9)


def test_selfcheck_passes_briefly(tmp_path):
    # One retry: a brief selfcheck (0.2 s per measurement) failed once in a `make test` run on an H200
    # (2026-12-04) and passed in every other run; the log kept only the known-work rows (clocks power-capped to
    # 1515 MHz by then), so the cause is not known; GPU tests on the other xdist worker may have shared the GPU then
    # (the group meant to prevent that never took effect; gpu_exclusive does). A selfcheck that is wrong fails both times.
    for attempt in (1, 2):
        out = tmp_path / f"attempt{attempt}"
        proc = rocbench("selfcheck", "--max-time", "0.2", "--out", str(out), on_gpu=True)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
    spin = pd.read_csv(latest_run(out, "selfcheck") / "spin.csv")
    assert spin["kernel_ok"].all()


def test_fault_matrix_gpu_entries_are_all_caught(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/fault_injection.py", "--gpu", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env=cli_env({"ROCBENCH_ALLOW_INJECT": "1"}, on_gpu=True))
    table = pd.read_csv(tmp_path / "catch_rate.csv", keep_default_na=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert (table["caught"] == "yes").all() and (table["orphans"] == 0).all()
    assert {"graph-only", "device-fault", "hang"} <= set(table["mutation"])


def test_the_cpu_path_holds_after_cuda_was_initialised_in_this_process(tmp_path):
    """What the CPU tests rely on here: ROCBENCH_PLATFORM=cpu, where hiding the GPU no longer can."""
    from tests.helpers import invoke

    torch.zeros(1, device="cuda")
    proc = invoke("allgather", "--tp", "2", "--shapes", "2x8", "--dtypes", "int8", "--dims", "0", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    frame = results(latest_run(tmp_path, "allgather"))
    assert frame["status"].tolist() == ["pass"] and frame["devices"].tolist() == ["cpu"]


def test_a_sigkilled_gpu_run_leaves_no_process_holding_the_gpu(tmp_path):
    tag = f"gpu-kill-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-m", "rocbench", "mla", "--nhead", "16", "--batch", "1,8", "--ctx", "600,1200",
                             "--kv-dtype", "bf16", "--correctness-only", "--skip-batch-probes", "--out", str(tmp_path)],
                            cwd=REPO, env=cli_env({"ROCBENCH_TEST_TAG": tag}, on_gpu=True),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        csvs = list(tmp_path.glob("*/results.csv"))
        if csvs and sum(1 for _ in open(csvs[0])) - 1 >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert wait_until_gone("ROCBENCH_TEST_TAG", tag) == [], "a rank or fork server outlived its run"
    assert 2 <= len(results(latest_run(tmp_path, "mla"))) < 16
