"""All-gather backends: torch.distributed (NCCL/RCCL/gloo), a symmetric-memory one-shot kernel (CUDA),
and AITER's custom all-gather (ROCm)."""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from rocbench.core.axes import Case, dtype_name
from rocbench.core.suite import Backend, RankContext, Runner
from rocbench.suites.allgather.suite import AllGatherIO, AllGatherSuite, rank_bytes

REGISTRY = AllGatherSuite.backends


def byte_view(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8).view(-1) if t.element_size() == 1 else t.view(-1).view(torch.uint8)


def collective_takes_dtype(ctx: RankContext, dtype: torch.dtype) -> bool:
    """Whether the process group's all-gather accepts this dtype, agreed by all ranks (cached)."""
    key = ("dtype_ok", dtype)
    if key not in ctx.cache:
        from rocbench.core.harness import exchange

        probe = torch.zeros(2, dtype=dtype, device=ctx.device)
        out = torch.empty(2 * ctx.world_size, dtype=dtype, device=ctx.device)
        try:
            dist.all_gather_into_tensor(out, probe, group=ctx.group)
            ctx.synchronize()
            ok = True
        except (RuntimeError, TypeError, ValueError):
            ok = False
        ctx.cache[key] = all(exchange(ctx, ok))
    return ctx.cache[key]


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


@REGISTRY.register
class TorchAllGather(Backend):
    name = "torch"
    platforms = ("cpu", "cuda", "rocm")
    description = "torch.distributed.all_gather_into_tensor (NCCL on CUDA, RCCL on ROCm, gloo on CPU)"

    def prepare(self, case: Case, io: AllGatherIO, ctx: RankContext) -> Runner:
        return torch_runner(case, io, ctx)

    def describe(self, case: Case, ctx: RankContext) -> str:
        lib = {"cuda": "nccl", "rocm": "rccl"}.get(ctx.platform.kind, "gloo")
        dim = case["dim"] % len(case["shape"])
        path = lib if collective_takes_dtype(ctx, case["dtype"]) else f"{lib} on a uint8 view ({dtype_name(case['dtype'])} not accepted)"
        return path + (" + rearrange" if dim != 0 else "")


class SymmetricPool:
    """One symmetric-memory staging buffer per rank, visible to every peer, grown on demand."""

    def __init__(self, ctx: RankContext, nbytes: int):
        import torch.distributed._symmetric_memory as symm_mem

        self.nbytes = nbytes
        self.buffer = symm_mem.empty(nbytes, dtype=torch.uint8, device=ctx.device)
        self.handle = symm_mem.rendezvous(self.buffer, ctx.group)
        self.peer_ptrs = torch.tensor(self.handle.buffer_ptrs, dtype=torch.int64, device=ctx.device)

    @staticmethod
    def get(ctx: RankContext, nbytes: int) -> "SymmetricPool":
        pool = ctx.cache.get("symm_pool")
        if pool is None or pool.nbytes < nbytes:
            size = max(1 << 20, 1 << (nbytes - 1).bit_length())
            # Old pools stay alive: a captured graph may still point at them.
            ctx.cache.setdefault("symm_pools_old", []).append(pool)
            pool = SymmetricPool(ctx, size)
            ctx.cache["symm_pool"] = pool
        return pool


@REGISTRY.register
class CustomAllGather(Backend):
    name = "custom"
    platforms = ("cuda",)
    description = "one-shot pull over symmetric memory: stage, barrier, one Triton kernel reads every peer, barrier"
    requires = ("torch.distributed._symmetric_memory", "triton")
    max_bytes_per_rank = 512 << 20

    def unsupported_reason(self, case: Case) -> str | None:
        if rank_bytes(case) > self.max_bytes_per_rank:
            return f"{rank_bytes(case)} bytes per rank exceed the {self.max_bytes_per_rank >> 20} MiB staging pool"
        return None

    def prepare(self, case: Case, io: AllGatherIO, ctx: RankContext) -> Runner:
        from rocbench.kernels.allgather import gather_from_peers

        nbytes = rank_bytes(case)
        pool = SymmetricPool.get(ctx, nbytes)
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
        return run

    def describe(self, case: Case, ctx: RankContext) -> str:
        return "symm-mem pull, 1 kernel" + (" (last-dim layout fused)" if case["dim"] % len(case["shape"]) else "")


AITER_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@REGISTRY.register
class AiterAllGather(Backend):
    """AITER's CustomAllreduce all-gather, dispatched the way SGLang does (seed PR #25093)."""

    name = "aiter"
    platforms = ("rocm",)
    description = "AITER CustomAllreduce.all_gather_reg (graph capture) / all_gather_unreg (eager)"
    requires = ("aiter.dist.device_communicators.custom_all_reduce",)

    @staticmethod
    def communicator(ctx: RankContext):
        if "aiter_ca" not in ctx.cache:
            from aiter.dist.device_communicators.custom_all_reduce import CustomAllreduce

            # Its IPC handshake must run over a CPU (gloo) group, never the RCCL one.
            ctx.cache["aiter_ca"] = CustomAllreduce(ctx.cpu_group, ctx.device)
        return ctx.cache["aiter_ca"]

    def fallback_reason(self, case: Case, io: AllGatherIO, ctx: RankContext) -> str | None:
        ca = self.communicator(ctx)
        if getattr(ca, "disabled", True):
            return "communicator disabled (library or topology unsupported)"
        if case["dtype"] not in AITER_DTYPES:
            return f"{dtype_name(case['dtype'])} is not a dtype AITER's all-gather takes"
        if not ca.should_custom_ag(io.inp):
            return "should_custom_ag is false (size, alignment or topology)"
        return None

    def prepare(self, case: Case, io: AllGatherIO, ctx: RankContext) -> Runner:
        reason = self.fallback_reason(case, io, ctx)
        ctx.cache[("aiter_fallback", case.id)] = reason
        if reason:
            return torch_runner(case, io, ctx)
        ca = self.communicator(ctx)
        dim = case["dim"]

        def run() -> torch.Tensor:
            if getattr(ca, "_IS_CAPTURING", False):
                if torch.cuda.is_current_stream_capturing():
                    ca.all_gather_reg(io.inp, out=io.out, dim=dim)
                else:
                    io.out.zero_()  # warm-up inside ca.capture(): no collective, as SGLang does
            else:
                ca.all_gather_unreg(io.inp, out=io.out, dim=dim)
            return io.out
        return run

    def graph_context(self, ctx: RankContext):
        """Graph capture must sit inside ca.capture() so AITER registers the graph's buffers on exit."""
        ca = ctx.cache.get("aiter_ca")
        return ca.capture() if ca is not None and not getattr(ca, "disabled", True) else contextlib.nullcontext()

    def describe(self, case: Case, ctx: RankContext) -> str:
        reason = ctx.cache.get(("aiter_fallback", case.id))
        return f"fallback torch: {reason}" if reason else "aiter custom all-gather (reg under capture, unreg eager)"
