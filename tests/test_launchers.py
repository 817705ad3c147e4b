"""Under a launcher (torchrun, srun) rocbench joins the launcher's world: one run, rank 0 records, the TP groups
share the cases; a planted fault is caught, a killed node leaves a valid CSV that --resume finishes. CPU (gloo)."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rocbench.core.options import RunOptions
from rocbench.core.harness import launcher, measure
from rocbench.core.axes import Case
from rocbench.core.errors import InputError
from rocbench.core.harness.isolate import free_port
from rocbench.core.platform import detect
from rocbench.core.suite import RankContext
from tests.helpers import REPO, cli_env, invoke, meta, results

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # torchrun, wherever its script was installed
ALL_DTYPES_TP4 = ["allgather", "--tp", "4", "--shapes", "3x40,2x8", "--dims", "0,-1", "--correctness-only",
                  "--skip-batch-probes"]  # two shapes x ten dtypes (the default) x dims 0/-1: 40 cases


def test_torchrun_variables():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.1",
           "MASTER_PORT": "29500"}
    assert launcher.detect(env) == launcher.LaunchedRank("torchrun", 3, 4, 1, 1, "10.0.0.1", 29500)
    assert launcher.detect({**env, "ROCBENCH_LAUNCHER": "none"}) is None
    assert launcher.detect({}) is None


def test_srun_variables():
    env = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2",
           "SLURM_STEP_NODELIST": "gpu[07-09,12],cpu1", "SLURM_JOB_ID": "123456"}
    me = launcher.detect(env)
    assert me == launcher.LaunchedRank("srun", 5, 8, 1, 2, "gpu07", 15000 + 123456 % 20000)
    assert launcher.detect({**env, "MASTER_ADDR": "head", "MASTER_PORT": "4242"}).master_addr == "head"
    # a batch script inside an allocation (no srun step) is not a rank
    assert launcher.detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "1"}) is None
    with pytest.raises(InputError, match="was not started by srun"):
        launcher.detect({"ROCBENCH_LAUNCHER": "srun"})


def test_tp_must_fit_the_launchers_world(tmp_path):
    env = {"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    proc = invoke("allgather", "--tp", "2", "--shapes", "2x8", "--out", str(tmp_path), env=env)
    assert proc.returncode == 2 and "world has 3 processes; tp must equal it or divide it" in proc.stderr


def test_a_sweep_under_a_launcher_is_refused_in_one_line(tmp_path):
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    proc = invoke("sweep", str(REPO / "configs" / "ci.yaml"), "--out", str(tmp_path), env=env)
    assert proc.returncode == 2 and "launch one suite command per run" in proc.stderr and not list(tmp_path.iterdir())


def test_a_one_host_backend_is_unsupported_across_nodes():
    from rocbench.suites.allgather.backends import CustomAllGather
    from rocbench.suites.allgather.suite import AllGatherSuite

    case = AllGatherSuite().cases({"tp": 2, "shapes": [(2, 8)], "dtypes": [torch.int8], "dims": [0]})[0]
    ctx = RankContext(0, 2, torch.device("cpu"), detect(), 0, hosts=("a", "b"))
    row = measure.run_case(AllGatherSuite(), CustomAllGather(), case, ctx, RunOptions()).row
    assert row["status"] == "unsupported" and "span a, b" in row["detail"]
    assert isinstance(case, Case)


def torchrun_nodes(args: list[str], port: int, env: dict) -> list[subprocess.Popen]:
    """Two launcher processes on this host as two nodes (node ranks 0 and 1), two ranks each."""
    return [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "2",
                              "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "rocbench", *args],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
            for node in (0, 1)]


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (torchrun starts its ranks in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            ppid = int(Path(stat).read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.split("/")[2]))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def wait_rows(out: Path, rows: int, procs: list[subprocess.Popen], timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for csv in out.glob("*/results.csv"):
            if sum(1 for _ in open(csv)) - 1 >= rows:
                return csv.parent
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
        time.sleep(0.2)
    raise AssertionError(f"no {rows} rows within {timeout} s")


def test_two_nodes_tp4_catch_a_flipped_byte_and_resume_after_a_killed_node(tmp_path):
    env = cli_env({"ROCBENCH_ALLOW_INJECT": "1"})
    first = torchrun_nodes([*ALL_DTYPES_TP4, "--inject", "flip-byte@1", "--out", str(tmp_path)], free_port(), env)
    run_dir = wait_rows(tmp_path, 4, first)
    for pid in process_tree(first[1].pid):  # node 1 dies: its launcher and both its ranks
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out0 = first[0].communicate(timeout=120)[0]
    first[1].wait(timeout=60)
    assert first[0].returncode != 0 and "the job ended early" in out0, out0[-3000:]
    killed = results(run_dir)  # parses: every row written is whole
    assert 4 <= len(killed) < 40 and not killed.duplicated(["case", "backend"]).any()
    assert "ended" in meta(run_dir) and len(list(tmp_path.iterdir())) == 1

    second = torchrun_nodes([*ALL_DTYPES_TP4, "--resume", str(run_dir)], free_port(), env)
    outs = [p.communicate(timeout=300)[0] for p in second]
    frame = results(run_dir)
    assert len(frame) == 40 and not frame.duplicated(["case", "backend"]).any(), outs[0][-3000:]
    assert frame.iloc[:len(killed)]["case"].tolist() == killed["case"].tolist()  # finished rows untouched
    assert sorted(frame["dtype"].unique()) == sorted(["float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
                                                      "int8", "uint8", "int32", "int64", "bool"])
    flipped = frame.iloc[1]
    assert flipped["status"] == "fail" and "rank 3: 1/" in flipped["detail"] and "elements differ" in flipped["detail"]
    assert (frame.drop(index=1)["status"] == "pass").all()
    assert set(frame["hosts"]) == {f"{os.uname().nodename}/node0,{os.uname().nodename}/node1"}
    assert set(frame["devices"]) == {"cpu (ranks 0,1,2,3)"}
    info = meta(run_dir)
    assert info["launcher"]["world_size"] == 4 and [n["ranks"] for n in info["launcher"]["nodes"]] == [[0, 1], [2, 3]]
    assert "ended" not in info and info["earlier_ends"]
    assert second[0].returncode == 1, outs[0][-2000:]  # rank 0 exits 1: the flipped byte failed its gate


def srun_ranks(args: list[str], env: dict, port: int) -> list[subprocess.Popen]:
    """What srun would start: two tasks of one step on this host, told who they are by SLURM_* variables."""
    return [subprocess.Popen([sys.executable, "-m", "rocbench", *args], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env={**env, "SLURM_PROCID": str(rank), "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": str(rank),
                                  "SLURM_NODEID": "0", "SLURM_STEP_NODELIST": "localhost", "SLURM_JOB_ID": "77",
                                  "MASTER_PORT": str(port)})
            for rank in (0, 1)]


def test_srun_ranks_join_one_run_a_hang_ends_it_with_a_timeout_row_and_resume_finishes(tmp_path):
    args = ["allgather", "--tp", "2", "--shapes", "2x8", "--dtypes", "int32,bfloat16", "--dims", "0,-1",
            "--correctness-only", "--skip-batch-probes", "--timeout", "4"]
    env = cli_env({"ROCBENCH_ALLOW_INJECT": "1"})
    procs = srun_ranks([*args, "--inject", "absent-rank@1", "--out", str(tmp_path)], env, free_port())
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [1, 4], outs[0][-3000:]  # rank 0: a timeout row; rank 1: cut short
    (run_dir,) = tmp_path.iterdir()  # one run for both ranks
    frame = results(run_dir)
    assert frame["status"].tolist() == ["pass", "timeout"], outs[0][-2000:]
    assert "no result within 4 s" in frame["detail"][1] and "rank 1 in 'run'" in frame["detail"][1]
    assert "time limit" in meta(run_dir)["ended"] and meta(run_dir)["launcher"]["kind"] == "srun"
    assert outs[1].strip() == "", "only rank 0 prints"

    procs = srun_ranks([*args, "--resume", str(run_dir)], env, free_port())
    outs = [p.communicate(timeout=120)[0] for p in procs]
    frame = results(run_dir)
    assert frame["status"].tolist() == ["pass", "timeout", "pass", "pass"], outs[0][-2000:]
    assert json.loads((run_dir / "meta.json").read_text())["summary"] == {"pass": 3, "timeout": 1}
