"""Rank processes: one per tensor-parallel rank, each with its device and process groups.

A pool of ranks is started once and fed (case, backend) tasks, so process groups and compiled kernels
are reused across cases; rocbench.core.harness.isolate restarts the pool when a task faults or hangs.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import os
import signal
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from rocbench.core.options import RunOptions
from rocbench.core.harness import measure, timing
from rocbench.core.roofline import Roofline
from rocbench.core.platform import detect
from rocbench.core.results import FAULT
from rocbench.core.suite import RankContext

# NVLink multicast can take a shared host's GPUs down; never let a rank use it.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


class Task(NamedTuple):
    """One (case, backend) to run, by the case's index in the suite's case list."""

    case: int
    backend: str


@dataclass
class PoolSpec:
    suite: str  # the suite's registered name
    suite_module: str  # the module whose import registers it (rank processes start empty)
    params: dict
    options: RunOptions
    world_size: int
    port: int
    env: dict = field(default_factory=dict)  # the launching process's environment, for the ranks


GATE_STAGE, KERNEL_STAGE = "gate", "kernel"  # a row's gate and graph time; later, its kernel time


@dataclass
class RankWorker:
    """What one rank needs to run tasks: the suite, its cases and where this rank runs. The same for a rank of
    rocbench's own pool and for a process a launcher (torchrun, srun) started."""

    suite: Any
    cases: list
    ctx: RankContext
    options: RunOptions

    @classmethod
    def create(cls, suite_name: str, suite_module: str, params: dict, options: RunOptions,
               ctx: RankContext) -> "RankWorker":
        from rocbench.core import plugins, registry

        suite = registry.get(suite_name, suite_module)
        plugins.load_all(params.get("plugins"))  # a rank process starts with the built-in backends only
        return cls(suite, suite.cases(params), ctx, options)

    def run(self, task: Task, stage: str) -> measure.RankResult:
        """The task's row on this rank (rank 0's is recorded), and whether this rank can run another task."""
        if task.backend not in self.suite.backends.names():
            return measure.RankResult({"status": FAULT, "gate": "fault",
                    "detail": f"backend {task.backend!r} is not registered in the rank processes: a backend from outside "
                              "rocbench must come from --plugin FILE or a rocbench.backends entry point, which every "
                              "rank loads"})
        backend, case = self.suite.backends.get(task.backend), self.cases[task.case]
        if stage == KERNEL_STAGE:
            return measure.kernel_pass(self.suite, backend, case, self.ctx, self.options)
        return measure.run_case(self.suite, backend, case, self.ctx, self.options)


def rank_device(platform, local_rank: int) -> torch.device:
    """The device of a rank: its GPU by local rank, or the CPU."""
    if not platform.has_gpu:
        return torch.device("cpu")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def machine_roofline(device: torch.device) -> Roofline | None:
    """The device's measured copy bandwidth and MMA rates (the % columns' reference), or None on a CPU."""
    if device.type != "cuda":
        return None
    return Roofline(timing.measure_copy_bandwidth(device), timing.measure_mma_tflops(device, "bf16"),
                    timing.measure_mma_tflops(device, "fp8"))


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies, so no orphan keeps a GPU (or a fork server)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def init_groups(spec: PoolSpec, rank: int, device: torch.device):
    if spec.world_size == 1:
        return None, None
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{spec.port}", rank=rank,
                            world_size=spec.world_size, timeout=dt.timedelta(seconds=max(60, spec.options.timeout_s)), **kwargs)
    cpu_group = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    return dist.group.WORLD, cpu_group


def quiet_rank() -> None:
    """What every rank process sets first: no NVLink multicast, interrupts left to whoever started it, and no
    warning torch 2.13 prints for all_gather_into_tensor (deprecated there for a name older releases lack)."""
    os.environ.update(SAFE_ENV)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")


def worker_main(rank: int, spec: PoolSpec, tasks, results) -> None:
    die_with_parent()
    if spec.env:  # forked from the fork server: take the launcher's environment (before any GPU use)
        os.environ.clear()
        os.environ.update(spec.env)
    quiet_rank()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means

    try:
        platform = detect()
        device = rank_device(platform, rank)
        group, cpu_group = init_groups(spec, rank, device)
        ctx = RankContext(rank, spec.world_size, device, platform, spec.options.seed, group, cpu_group,
                          graph_mode=spec.options.cuda_graph, hosts=(platform.host,))
        worker = RankWorker.create(spec.suite, spec.suite_module, spec.params, spec.options, ctx)
        info = {"roofline": spec.options.roofline}  # measured once per run: a later pool gets the first one's
        if info["roofline"] is None and not spec.options.correctness_only and rank == 0:
            info["roofline"] = machine_roofline(device)
        if spec.world_size > 1:  # every rank needs the numbers for its % columns
            info = measure.exchange(ctx, info)[0]
        ctx.roofline = info["roofline"]
        results.put(("ready", rank, info))
    except Exception as exc:  # noqa: BLE001 - report why the rank could not start
        results.put(("startfail", rank, f"{type(exc).__name__}: {exc}"))
        return

    while True:
        task = tasks.get()
        if task is None:
            break
        task, stage = Task(*task[:2]), task[2]
        result = worker.run(task, stage)
        results.put(("row", rank, (*task, stage), result if rank == 0 else measure.RankResult({}, result.fatal)))
        if result.fatal:
            break  # the parent replaces this pool before the next task
    if spec.world_size > 1 and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - teardown of a broken group is best effort
            pass
