"""Is this process one rank of a job that a launcher started (torchrun, srun)? Then rocbench joins that world
instead of starting a rank pool of its own.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, GROUP_RANK (the node) and MASTER_ADDR/MASTER_PORT. srun sets
SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID and SLURM_NODEID; the master is the first host of the step's
node list on port 15000 + (job id mod 20000) unless MASTER_ADDR/MASTER_PORT say otherwise. A batch script itself
(no srun step) is not a launched rank. ROCBENCH_LAUNCHER=none ignores every launcher.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from rocbench.core.errors import InputError

LAUNCHER_ENV = "ROCBENCH_LAUNCHER"
SLURM_BASE_PORT = 15000


@dataclass(frozen=True)
class LaunchedRank:
    """This process's place in the launcher's world."""

    launcher: str  # "torchrun" | "srun"
    rank: int
    world_size: int
    local_rank: int  # the device this rank uses on its node
    node_rank: int
    master_addr: str
    master_port: int

    @property
    def is_recorder(self) -> bool:
        """Rank 0 writes the results; the others only run their share."""
        return self.rank == 0

    def rendezvous_env(self) -> dict[str, str]:
        """What torch.distributed's env:// initialisation reads."""
        return {"RANK": str(self.rank), "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": str(self.local_rank),
                "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)}


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise InputError(f"{name}={env[name]!r} is not an integer (set by the launcher?)") from None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: "gpu[03-05,9],cpu1" -> "gpu03"."""
    depth, end = 0, len(nodelist)
    for i, char in enumerate(nodelist):  # the first item ends at a comma outside brackets
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = i
            break
    item = nodelist[:end].strip()
    if "[" not in item:
        return item
    prefix, rest = item.split("[", 1)
    ranges, suffix = rest.split("]", 1)
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def from_torchrun(env: Mapping[str, str]) -> LaunchedRank:
    return LaunchedRank("torchrun", _int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK"),
                        _int(env, "GROUP_RANK") if "GROUP_RANK" in env else 0, env["MASTER_ADDR"],
                        _int(env, "MASTER_PORT"))


def from_srun(env: Mapping[str, str]) -> LaunchedRank:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    addr = env.get("MASTER_ADDR") or (first_host(nodelist) if nodelist else None)
    if not addr:
        raise InputError("srun: no node list (SLURM_STEP_NODELIST / SLURM_JOB_NODELIST) and no MASTER_ADDR")
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT")
    else:  # every rank derives the same port from the job
        port = SLURM_BASE_PORT + (_int(env, "SLURM_JOB_ID") % 20000 if "SLURM_JOB_ID" in env else 0)
    return LaunchedRank("srun", _int(env, "SLURM_PROCID"), _int(env, "SLURM_STEP_NUM_TASKS"),
                        _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
                        _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0, addr, port)


def detect(env: Mapping[str, str] | None = None) -> LaunchedRank | None:
    """This process's rank in a launcher's world, or None when nothing launched it (rocbench starts its own ranks)."""
    env = os.environ if env is None else env
    choice = env.get(LAUNCHER_ENV, "auto").strip().lower()
    if choice not in ("auto", "none", "torchrun", "srun"):
        raise InputError(f"{LAUNCHER_ENV}={choice!r}: expected auto, none, torchrun or srun")
    if choice == "none":
        return None
    torchrun = all(name in env for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))
    srun = "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env
    # torchrun inside an srun allocation: torchrun's own variables describe the processes it started.
    if torchrun and choice in ("auto", "torchrun"):
        return from_torchrun(env)
    if srun and choice in ("auto", "srun"):
        return from_srun(env)
    if choice != "auto":
        raise InputError(f"{LAUNCHER_ENV}={choice}: this process was not started by {choice}")
    return None
