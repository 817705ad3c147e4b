"""Rank processes: one per tensor-parallel rank, each with its device and process groups.

A pool of ranks is started once and fed (case, backend) tasks, so process groups and compiled kernels
are reused across cases; rocbench.core.isolate restarts the pool when a task faults or hangs.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import os
import signal
import warnings
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from rocbench.core import harness, timing
from rocbench.core.platform import detect
from rocbench.core.suite import RankContext

# NVLink multicast can take a shared host's GPUs down; never let a rank use it.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass
class PoolSpec:
    suite: str  # the suite's registered name
    suite_module: str  # the module whose import registers it (rank processes start empty)
    params: dict
    options: harness.RunOptions
    world_size: int
    port: int
    measure_copy_bw: bool
    env: dict = field(default_factory=dict)  # the launching process's environment, for the ranks


GATE_STAGE, KERNEL_STAGE = "gate", "kernel"  # a row's gate and graph time; later, its kernel time


def die_with_parent() -> None:
    """Ask Linux to kill this rank if the parent dies, so no orphan keeps a GPU."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def init_groups(spec: PoolSpec, rank: int, device: torch.device):
    if spec.world_size == 1:
        return None, None
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{spec.port}", rank=rank,
                            world_size=spec.world_size, timeout=dt.timedelta(seconds=max(60, spec.options.timeout_s)), **kwargs)
    cpu_group = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    return dist.group.WORLD, cpu_group


def worker_main(rank: int, spec: PoolSpec, tasks, results) -> None:
    die_with_parent()
    if spec.env:  # forked from the fork server: take the launcher's environment (before any GPU use)
        os.environ.clear()
        os.environ.update(spec.env)
    os.environ.update(SAFE_ENV)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    # torch 2.13 deprecates all_gather_into_tensor in favour of a name older releases lack.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    from rocbench.core import registry

    try:
        platform = detect()
        device = torch.device("cuda", rank) if platform.has_gpu else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        group, cpu_group = init_groups(spec, rank, device)
        suite = registry.get(spec.suite, spec.suite_module)
        cases = suite.cases(spec.params)
        ctx = RankContext(rank, spec.world_size, device, platform, spec.options.seed, group, cpu_group,
                          graph_mode=spec.options.cuda_graph)
        info = {}
        if spec.options.extra.get("copy_bw_GBps"):
            info["copy_bw_GBps"] = spec.options.extra["copy_bw_GBps"]
        elif spec.measure_copy_bw and rank == 0 and device.type == "cuda":
            info["copy_bw_GBps"] = timing.measure_copy_bandwidth(device)
        if spec.world_size > 1:  # every rank needs the number for its % column
            info = harness.exchange(ctx, info)[0]
        ctx.cache.update(info)
        results.put(("ready", rank, info))
    except Exception as exc:  # noqa: BLE001 - report why the rank could not start
        results.put(("startfail", rank, f"{type(exc).__name__}: {exc}"))
        return

    while True:
        task = tasks.get()
        if task is None:
            break
        case_index, backend_name, stage = task
        backend, case = suite.backends.get(backend_name), cases[case_index]
        if stage == KERNEL_STAGE:
            row = harness.kernel_pass(suite, backend, case, ctx, spec.options)
        else:
            row = harness.execute(suite, backend, case, ctx, spec.options)
        results.put(("row", rank, task, row if rank == 0 else {"_fatal": row.get("_fatal", False)}))
        if row.get("_fatal"):
            break  # the parent replaces this pool before the next task
    if spec.world_size > 1 and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - teardown of a broken group is best effort
            pass
