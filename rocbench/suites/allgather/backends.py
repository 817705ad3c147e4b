"""All-gather backends: torch.distributed (NCCL/RCCL/gloo), a symmetric-memory one-shot kernel (CUDA),
and AITER's custom all-gather (ROCm)."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from rocbench.core.axes import Case, dtype_name
from rocbench.core.platform import PlatformInfo
from rocbench.core.suite import Backend, Prepared, RankContext, Runner
from rocbench.suites.allgather.suite import AllGatherIO, AllGatherSuite, rank_bytes

if TYPE_CHECKING:  # AITER imports only on ROCm; the name is for readers and the AITER contract checker
    from aiter.dist.device_communicators.custom_all_reduce import CustomAllreduce

REGISTRY = AllGatherSuite.backends


def byte_view(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8).view(-1) if t.element_size() == 1 else t.view(-1).view(torch.uint8)


@dataclass
class GroupCapabilities:
    """The torch backend's state: which dtypes this rank's process group's all-gather accepts (probed once each)."""

    takes_dtype: dict[torch.dtype, bool] = field(default_factory=dict)


def collective_takes_dtype(ctx: RankContext, dtype: torch.dtype) -> bool:
    """Whether the process group's all-gather accepts this dtype, agreed by all ranks (probed once per rank)."""
    known = ctx.state(REGISTRY.get("torch")).takes_dtype
    if dtype not in known:
        from rocbench.core.harness.measure import exchange

        probe = torch.zeros(2, dtype=dtype, device=ctx.device)
        out = torch.empty(2 * ctx.world_size, dtype=dtype, device=ctx.device)
        try:
            dist.all_gather_into_tensor(out, probe, group=ctx.group)
            ctx.synchronize()
            ok = True
        except (RuntimeError, TypeError, ValueError):
            ok = False
        known[dtype] = all(exchange(ctx, ok))
    return known[dtype]


def torch_runner(case: Case, io: AllGatherIO, ctx: RankContext) -> Runner:
    """all_gather_into_tensor gathers along dim 0; a last-dim gather then rearranges in one copy."""
    native = collective_takes_dtype(ctx, case["dtype"])
    inp = io.inp if native else byte_view(io.inp)
    dim = case["dim"] % io.inp.dim()
    if dim == 0:
        out_flat = io.out if native else byte_view(io.out)

        def run() -> torch.Tensor:
            dist.all_gather_into_tensor(out_flat, inp, group=ctx.group)
            return io.out
        return run

    shape = tuple(io.inp.shape)
    staged = torch.empty((ctx.world_size * shape[0], *shape[1:]), dtype=io.inp.dtype, device=ctx.device)
    staged_flat = staged if native else byte_view(staged)
    # out[..., p*c:(p+1)*c] = slice of rank p: view out as [..., world, c] and move the rank axis there
    by_rank = staged.view(ctx.world_size, *shape).movedim(0, dim)
    out_view = io.out.view(*shape[:dim], ctx.world_size, *shape[dim:])

    def run() -> torch.Tensor:
        dist.all_gather_into_tensor(staged_flat, inp, group=ctx.group)
        out_view.copy_(by_rank)
        return io.out
    return run


def torch_path(case: Case, ctx: RankContext) -> str:
    lib = {"cuda": "nccl", "rocm": "rccl"}.get(ctx.platform.kind, "gloo") if ctx.device.type == "cuda" else "gloo"
    dim = case["dim"] % len(case["shape"])
    path = lib if collective_takes_dtype(ctx, case["dtype"]) else f"{lib} on a uint8 view ({dtype_name(case['dtype'])} not accepted)"
    return path + (" + rearrange" if dim != 0 else "")


@REGISTRY.register
class TorchAllGather(Backend):
    name = "torch"
    platforms = ("cpu", "cuda", "rocm")
    description = "torch.distributed.all_gather_into_tensor (NCCL on CUDA, RCCL on ROCm, gloo on CPU)"
    state_type = GroupCapabilities

    def prepare(self, case: Case, io: AllGatherIO, ctx: RankContext) -> Prepared:
        return Prepared(torch_runner(case, io, ctx), torch_path(case, ctx))


class SymmetricPool:
    """One symmetric-memory staging buffer per rank, visible to every peer, grown on demand."""

    def __init__(self, ctx: RankContext, nbytes: int):
        import torch.distributed._symmetric_memory as symm_mem

        self.nbytes = nbytes
        self.buffer = symm_mem.empty(nbytes, dtype=torch.uint8, device=ctx.device)
        self.handle = symm_mem.rendezvous(self.buffer, ctx.group)
        self.peer_ptrs = torch.tensor(self.handle.buffer_ptrs, dtype=torch.int64, device=ctx.device)



@dataclass
class SymmetricPools:
    """The custom backend's state: the staging pool in use, and the ones it outgrew (kept alive: a captured graph
    may still point at them)."""

    current: SymmetricPool | None = None
    outgrown: list[SymmetricPool] = field(default_factory=list)

    def at_least(self, ctx: RankContext, nbytes: int) -> SymmetricPool:
        if self.current is None or self.current.nbytes < nbytes:
            if self.current is not None:
                self.outgrown.append(self.current)
            self.current = SymmetricPool(ctx, max(1 << 20, 1 << (nbytes - 1).bit_length()))
        return self.current


@REGISTRY.register
class CustomAllGather(Backend):
    name = "custom"
    platforms = ("cuda",)
    description = "one-shot pull over symmetric memory: stage, barrier, one Triton kernel reads every peer, barrier"
    requires = ("torch.distributed._symmetric_memory", "triton")
    single_host = True
    max_bytes_per_rank = 512 << 20
    state_type = SymmetricPools

    def unsupported_reason(self, case: Case, platform: PlatformInfo) -> str | None:
        if rank_bytes(case) > self.max_bytes_per_rank:
            return f"{rank_bytes(case)} bytes per rank exceed the {self.max_bytes_per_rank >> 20} MiB staging pool"
        return None

    def prepare(self, case: Case, io: AllGatherIO, ctx: RankContext) -> Prepared:
        from rocbench.kernels.allgather import gather_from_peers

        nbytes = rank_bytes(case)
        pool = ctx.state(self).at_least(ctx, nbytes)
        stage = pool.handle.get_buffer(ctx.rank, (nbytes,), torch.uint8)
        inp, out = byte_view(io.inp), byte_view(io.out)
        dim = case["dim"] % io.inp.dim()
        rows = 1
        for d in io.inp.shape[:dim]:
            rows *= d
        chunk = nbytes // rows  # bytes each rank contributes to one output row

        def run() -> torch.Tensor:
            stage.copy_(inp)
            pool.handle.barrier(channel=0)  # every peer has staged its slice
            gather_from_peers(pool.peer_ptrs, out, rows, chunk, ctx.world_size)
            pool.handle.barrier(channel=0)  # every peer is done reading my stage before it is reused
            return io.out
        return Prepared(run, "symm-mem pull, 1 kernel" + (" (last-dim layout fused)" if dim else ""))


AITER_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # SGLang sends only these to AITER
# The all-gather kernel (csrc custom_all_reduce.cuh) has cases for these world sizes; at 6, which the
# communicator accepts, it prints an error and launches nothing: the output is never written.
AITER_KERNEL_WORLD_SIZES = (2, 4, 8)
ALLOC_CONF_ENV = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def expandable_segments_on() -> bool:
    """PyTorch's expandable_segments allocator hands out pointers hipIpcGetMemHandle cannot export, so
    buffers captured in a graph cannot be registered (AITER issue #4174)."""
    for name in ALLOC_CONF_ENV:
        for entry in os.environ.get(name, "").split(","):
            key, _, value = entry.partition(":")
            if key.strip() == "expandable_segments":
                return value.strip().lower() in ("1", "true", "yes", "on")
    return False


def aiter_gather_dim(case: Case) -> int | None:
    """The dim to hand AITER: 0, or -1 for the last dim; None where AITER would misread it (its kernel
    gathers every dim != 0 as the last one)."""
    dim = case["dim"] % len(case["shape"])
    if dim == 0:
        return 0
    return -1 if dim == len(case["shape"]) - 1 else None


@dataclass
class AiterCommunicator:
    """The aiter backend's state: one CustomAllreduce per rank (its IPC buffers are registered once)."""

    communicator: Any = None


@REGISTRY.register
class AiterAllGather(Backend):
    """AITER's CustomAllreduce all-gather, dispatched the way SGLang does (seed PRs #25093, #27163)."""

    name = "aiter"
    platforms = ("rocm",)
    description = "AITER CustomAllreduce.all_gather_reg (graph capture) / all_gather_unreg (eager)"
    requires = ("aiter.dist.device_communicators.custom_all_reduce",)
    single_host = True
    state_type = AiterCommunicator

    def unsupported_reason(self, case: Case, platform: PlatformInfo) -> str | None:
        if case["tp"] not in AITER_KERNEL_WORLD_SIZES:
            return (f"AITER's all-gather kernel has cases for {'/'.join(map(str, AITER_KERNEL_WORLD_SIZES))} ranks; at "
                    f"{case['tp']} it launches nothing (its communicator still accepts {case['tp']})")
        return None

    def communicator(self, ctx: RankContext) -> "CustomAllreduce":
        from aiter.dist.device_communicators.custom_all_reduce import CustomAllreduce

        state = ctx.state(self)
        if state.communicator is None:
            # Its IPC handshake must run over a CPU (gloo) group, never the RCCL one.
            state.communicator = CustomAllreduce(ctx.cpu_group, ctx.device)
        return state.communicator

    def fallback_reason(self, case: Case, io: AllGatherIO, ctx: RankContext) -> str | None:
        ca = self.communicator(ctx)
        if ca.disabled:
            return "communicator disabled (library or topology unsupported)"
        if case["dtype"] not in AITER_DTYPES:
            return f"{dtype_name(case['dtype'])} is not a dtype SGLang hands AITER's all-gather"
        if aiter_gather_dim(case) is None:
            return f"dim {case['dim']}: AITER's kernel gathers every dim != 0 as the last one"
        if aiter_gather_dim(case) == -1 and (case["shape"][-1] * io.inp.element_size()) % 16:
            return f"last dim of {case['shape'][-1] * io.inp.element_size()} bytes: AITER needs a multiple of 16"
        if not ca.should_custom_ag(io.inp):
            return "should_custom_ag is false (size, alignment or topology)"
        return None

    def registers_in_capture(self, ctx: RankContext) -> bool:
        """Whether graph capture can use the registered path (AITER >= its issue #4174 says so itself)."""
        ca = self.communicator(ctx)
        return getattr(ca, "enable_register_for_capturing", True) and not expandable_segments_on()

    def prepare(self, case: Case, io: AllGatherIO, ctx: RankContext) -> Prepared:
        reason = self.fallback_reason(case, io, ctx)
        if reason:
            return Prepared(torch_runner(case, io, ctx), f"fallback torch ({torch_path(case, ctx)}): {reason}")
        ca = self.communicator(ctx)
        dim = aiter_gather_dim(case)
        register = self.registers_in_capture(ctx)

        def run() -> torch.Tensor:
            if ca._IS_CAPTURING:
                if torch.cuda.is_current_stream_capturing():
                    if register:
                        ca.all_gather_reg(io.inp, out=io.out, dim=dim)
                    else:  # expandable_segments: the copy-in path, as AITER's own custom_all_gather does
                        ca.all_gather_unreg(io.inp, out=io.out, dim=dim)
                else:
                    io.out.zero_()  # warm-up inside ca.capture(): no collective, as SGLang does
            else:
                ca.all_gather_unreg(io.inp, out=io.out, dim=dim)
            return io.out

        if register:
            return Prepared(run, f"aiter custom all-gather dim={dim} (reg under capture, unreg eager)")
        return Prepared(run, f"aiter custom all-gather dim={dim}: expandable_segments is on, so graph capture uses "
                             "the copy-in path (all_gather_unreg); SGLang's all_gather_reg could not register these buffers")

    def graph_context(self, ctx: RankContext):
        """Graph capture must sit inside ca.capture() so AITER registers the graph's buffers on exit."""
        ca = self.communicator(ctx)
        return ca.capture() if not ca.disabled else contextlib.nullcontext()

    def paths_here(self, platform: PlatformInfo) -> list[dict]:
        registration = ("off: expandable_segments is on, capture uses all_gather_unreg" if expandable_segments_on()
                        else "all_gather_reg under capture, all_gather_unreg eager")
        return [{"tp": tp, "path": self.unsupported_reason(Case((("tp", tp),)), platform)
                 or f"dtypes {', '.join(dtype_name(d) for d in AITER_DTYPES)} (others fall back to torch); dim 0 and "
                    f"the last dim (16-byte rows); {registration}"} for tp in (2, 4, 6, 8)]
