"""Join the world a launcher made (torchrun, srun): the process groups, this rank's TP group, and a description of
every node for meta.json.

The launcher's world of W processes is cut into W / tp TP groups of consecutive ranks (a launcher numbers a node's
processes consecutively, so a group stays on one node while tp <= processes per node). Every group gets a device
group (NCCL/RCCL, or gloo on CPUs) and a gloo side group for the harness's handshakes; the whole world gets two
gloo groups: one for task lists and rows, one for the watchdog thread alone.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from rocbench.core.errors import InputError
from rocbench.core.harness.launcher import LaunchedRank
from rocbench.core.platform import PlatformInfo, driver_version
from rocbench.core.harness.ranks import machine_roofline, quiet_rank, rank_device
from rocbench.core.suite import RankContext

WATCHDOG_TIMEOUT_S = 60.0  # how long watchdogs wait for each other once a case passed its time limit


@dataclass(frozen=True)
class RankInfo:
    """One rank as meta.json and the rows' hosts/devices columns describe it."""

    rank: int
    node: int
    host: str
    local_rank: int
    device: str
    gpu: str | None
    driver: str | None
    collectives: str | None  # "nccl 2.28.9", "rccl ...", "gloo"


@dataclass
class LaunchedWorld:
    me: LaunchedRank
    tp: int
    ranks: list[RankInfo]  # every rank of the world, in rank order
    world_cpu: Any  # gloo over every rank: task lists and rows
    watchdog: Any  # gloo over every rank, for the watchdog thread only
    ctx: RankContext  # this rank inside its TP group

    @property
    def groups(self) -> int:
        return self.me.world_size // self.tp

    @property
    def group(self) -> int:
        return self.me.rank // self.tp

    @property
    def is_leader(self) -> bool:
        """Rank 0 of its TP group: its row is the group's."""
        return self.me.rank % self.tp == 0

    def members(self, group: int) -> list[RankInfo]:
        return self.ranks[group * self.tp:(group + 1) * self.tp]

    def node_label(self, info: RankInfo) -> str:
        """The host name, with the launcher's node number where two nodes share a host name (localhost tests)."""
        shared = len({r.node for r in self.ranks if r.host == info.host}) > 1
        return f"{info.host}/node{info.node}" if shared else info.host

    def placement(self, group: int) -> dict[str, str]:
        """The hosts and devices columns of a row the group ran."""
        members = self.members(group)
        devices = [r.device for r in members]
        if set(devices) == {"cpu"}:  # processes, not devices: name the world's ranks
            devices = [f"cpu (rank{'s' if len(members) > 1 else ''} {','.join(str(r.rank) for r in members)})"]
        return {"hosts": ",".join(dict.fromkeys(self.node_label(r) for r in members)), "devices": ",".join(devices)}

    def nodes(self) -> list[dict]:
        """meta.json's `nodes`: each node's host, GPUs, driver and collectives library."""
        out: dict[int, dict] = {}
        for r in self.ranks:
            node = out.setdefault(r.node, {"node": r.node, "host": r.host, "ranks": [], "gpus": [],
                                           "driver": r.driver, "collectives": r.collectives})
            node["ranks"].append(r.rank)
            if r.gpu:
                node["gpus"].append(f"{r.device}: {r.gpu}")
        return list(out.values())


def check_tp(tp: int, me: LaunchedRank, platform: PlatformInfo) -> None:
    if me.world_size % tp:
        raise InputError(f"tp {tp}: the {me.launcher} world has {me.world_size} processes; tp must equal it or divide it")
    if platform.has_gpu and me.local_rank >= platform.device_count:
        raise InputError(f"{me.launcher}: local rank {me.local_rank} but this node has {platform.device_count} GPUs "
                         "(one process per GPU)")


def describe_rank(me: LaunchedRank, platform: PlatformInfo, device: torch.device, backend: str) -> RankInfo:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    library = backend if backend == "gloo" else ("rccl" if platform.kind == "rocm" else "nccl")
    version = platform.versions.get(library)
    return RankInfo(me.rank, me.node_rank, platform.host, me.local_rank, str(device), gpu,
                    driver_version(platform.kind) if device.type == "cuda" else None,
                    f"{library} {version}" if version else library)


def join(me: LaunchedRank, tp: int, platform: PlatformInfo, seed: int, graph_mode: bool, timeout_s: float,
         measure_roofline: bool) -> LaunchedWorld:
    """Initialise torch.distributed from the launcher's rendezvous and build every group (all ranks call this)."""
    check_tp(tp, me, platform)
    quiet_rank()
    os.environ.update(me.rendezvous_env())
    device = rank_device(platform, me.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = dt.timedelta(seconds=max(60.0, timeout_s))
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, init_method="env://", rank=me.rank, world_size=me.world_size, timeout=timeout,
                            **kwargs)
    world_cpu = dist.new_group(backend="gloo", timeout=timeout)
    watchdog = dist.new_group(backend="gloo", timeout=dt.timedelta(seconds=WATCHDOG_TIMEOUT_S))
    group = cpu_group = None  # a group of one rank needs none
    for index in range(me.world_size // tp if tp > 1 else 0):  # every rank creates every group, in the same order
        members = list(range(index * tp, (index + 1) * tp))
        device_group = dist.new_group(members, backend=backend, timeout=timeout)
        side_group = dist.new_group(members, backend="gloo", timeout=timeout)
        if me.rank in members:
            group, cpu_group = device_group, side_group
    ranks: list[Any] = [None] * me.world_size
    dist.all_gather_object(ranks, describe_rank(me, platform, device, backend), group=world_cpu)
    roofline = [machine_roofline(device) if measure_roofline and me.rank == 0 else None]
    dist.broadcast_object_list(roofline, src=0, group=world_cpu)  # every rank needs it for its % columns
    ctx = RankContext(me.rank % tp, tp, device, platform, seed, group, cpu_group, graph_mode=graph_mode)
    world = LaunchedWorld(me, tp, ranks, world_cpu, watchdog, ctx)
    ctx.hosts = tuple(world.node_label(r) for r in world.members(world.group))
    ctx.roofline = roofline[0]
    return world


def leave() -> None:
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - teardown of a broken world is best effort
            pass
