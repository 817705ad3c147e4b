"""All-gather semantics: per-rank inputs from (seed, rank, case), the locally computed gather, bitwise gate."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from rocbench.core.harness import gate
from rocbench.core.axes import Case, dtype_name, parse_shapes, reindex, shape_name
from rocbench.core.errors import InputError
from rocbench.core.params import Param, dtypes, integer, ints, shapes
from rocbench.core.suite import Backends, RankContext, Suite, Tolerance, Verdict, Work
from rocbench.suites.allgather.probes import allgather_probes

ALL_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
              torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool)
DEEPSEEK_VOCAB = 129280
DEEPSEEK_HIDDEN = 7168
DECODE_BATCHES = (1, 8, 64, 256)


def default_shapes(tp: int) -> str:
    """DeepSeek-R1 decode shapes: vocab-sharded logits (gathered along -1) and hidden states, plus one
    64 MiB-per-rank bf16 message for the bandwidth end of the curve."""
    logits = [f"{b}x{DEEPSEEK_VOCAB // tp}" for b in DECODE_BATCHES]
    hidden = [f"{b}x{DEEPSEEK_HIDDEN}" for b in DECODE_BATCHES]
    return ",".join(logits + hidden + ["2048x16384"])


@dataclass
class AllGatherIO:
    inp: torch.Tensor  # this rank's slice
    out: torch.Tensor  # the gathered tensor


def place(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, offset_bytes: int) -> torch.Tensor:
    """A tensor that starts `offset_bytes` into a larger allocation (0: a plain allocation)."""
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if offset_bytes == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    backing = torch.empty(nbytes + offset_bytes + 256, dtype=torch.uint8, device=device)
    return backing[offset_bytes:offset_bytes + nbytes].view(dtype).view(shape)


def special_values(dtype: torch.dtype) -> torch.Tensor:
    """NaN (two payloads), -0.0, +-inf and subnormals, as they come out in this dtype."""
    info = torch.finfo(dtype)
    values = torch.tensor([float("nan"), -0.0, float("inf"), float("-inf"), info.smallest_normal / 2,
                           -info.smallest_normal / 4, info.max, info.tiny], dtype=torch.float32).to(dtype)
    bits = gate.as_bits(values)
    bits[0] ^= 1  # a NaN with a payload other than the canonical one
    return values


def ranks(text: str, what: str) -> int:
    tp = integer()(text, what)
    if tp < 2:
        raise InputError(f"{what} {tp}: an all-gather needs at least 2 ranks")
    return tp


class AllGatherSuite(Suite):
    name = "allgather"
    input_axes = ("tp", "shape", "dtype", "dim", "bytes_per_rank")
    help = "All-gather across TP ranks: sweep shapes x dtypes x dims, gate bit-exactness, then time."
    params = (
        Param("tp", "Tensor-parallel ranks (one GPU each; processes on CPU).", ranks, "8", column="tp"),
        Param("shapes", "Per-rank shapes, e.g. 1x16160,64x16160 (default: DeepSeek-R1 logits and hidden states at "
                        "decode batches 1/8/64/256, plus 2048x16384).", shapes(), axis=True, column="shape"),
        Param("dtypes", "Comma list of torch dtype names.", dtypes(ALL_DTYPES), ",".join(map(dtype_name, ALL_DTYPES)),
              axis=True, column="dtype"),
        Param("dims", "Gather dimensions; -1 puts each rank's slice side by side along the last dim (vocab-sharded "
                      "logits).", ints(), "0,-1", axis=True, column="dim"),
    )
    derived_columns = ("bytes_per_rank",)
    baseline = "torch"
    backends = Backends()

    def finish(self, params: dict) -> dict:
        if params["shapes"] is None:
            params["shapes"] = parse_shapes(default_shapes(params["tp"]))
        for shape in params["shapes"]:
            for dim in params["dims"]:
                if not -len(shape) <= dim < len(shape):
                    raise InputError(f"--dims: dim {dim} is out of range for shape {shape_name(shape)}")
        return params

    def world_size(self, params: dict) -> int:
        return params["tp"]

    def cases(self, params: dict) -> list[Case]:
        return reindex((Case(c.values + (("bytes_per_rank", rank_bytes(c)),)) for c in super().cases(params)),
                       self.input_axes)

    @staticmethod
    def out_shape(case: Case) -> tuple[int, ...]:
        shape, dim = list(case["shape"]), case["dim"] % len(case["shape"])
        shape[dim] *= case["tp"]
        return tuple(shape)

    def build_io(self, case: Case, ctx: RankContext) -> AllGatherIO:
        # --cuda-graph: rank-dependent non-zero offsets inside larger allocations, the layout that made
        # AITER's registered-buffer all-gather fault only under graph replay.
        offset = 512 * (ctx.rank + 1) if ctx.graph_mode else 0
        return AllGatherIO(place(case["shape"], case["dtype"], ctx.device, offset),
                           place(self.out_shape(case), case["dtype"], ctx.device, offset * 2))

    def rank_input(self, case: Case, rank: int, seed: int, data_seed: int, device: torch.device) -> torch.Tensor:
        key = zlib.crc32(f"{seed}/{rank}/{case.input_key}/{data_seed}".encode())
        gen = torch.Generator(device=device).manual_seed(key)
        dtype, shape = case["dtype"], case["shape"]
        numel = 1
        for d in shape:
            numel *= d
        if dtype == torch.bool:
            return torch.randint(0, 2, shape, generator=gen, device=device, dtype=torch.uint8).bool()
        size = torch.empty((), dtype=dtype).element_size()
        raw = torch.randint(0, 256, (numel * size,), generator=gen, device=device, dtype=torch.uint8)
        values = raw.view(dtype).view(shape)  # every bit pattern is possible: NaN payloads included
        if dtype.is_floating_point:
            specials = special_values(dtype).to(device)
            flat = values.view(-1)
            start = (rank * 3) % max(1, numel - len(specials)) if numel > len(specials) else 0
            count = min(len(specials), numel - start)
            flat[start:start + count] = specials[:count]
        return values

    def fill(self, case: Case, io: AllGatherIO, ctx: RankContext, data_seed: int) -> torch.Tensor:
        inputs = [self.rank_input(case, r, ctx.seed, data_seed, ctx.device) for r in range(case["tp"])]
        io.inp.copy_(inputs[ctx.rank])
        io.out.view(torch.uint8).fill_(0x5A)  # poison: an element the backend never writes cannot pass
        return gathered(inputs, case["dim"])

    def batch_probes(self, case: Case, io: AllGatherIO, ctx: RankContext) -> list:
        return allgather_probes(case, io, ctx, self.out_shape)

    def judge(self, case: Case, output: str, got: torch.Tensor, expected: torch.Tensor,
              tolerance: Tolerance | None = None) -> Verdict:
        return gate.exact(got, expected)  # all-gather moves bytes: always bitwise

    def work(self, case: Case, world_size: int) -> Work:
        n = case["tp"]
        return Work(bytes=rank_bytes(case) * n, busbw_factor=(n - 1) / n)

    def plot_specs(self) -> list[dict]:
        common = dict(x=["bytes"], along=["shape"], xlabel="all-gather output bytes", facet="dtype")
        return [
            dict(common, file="latency.png", title="all-gather latency",
                 y=["kernel_us_median", "graph_us_median"], ylabel="us", logy=True),
            dict(common, file="busbw.png", title="all-gather bus bandwidth (kernel time)", y="busbw_kernel_GBps",
                 ylabel="busbw GB/s"),
            dict(common, file="speedup.png", title="speedup over torch (NCCL/RCCL)",
                 y=["speedup_vs_torch_kernel", "speedup_vs_torch_graph"], ylabel="x over torch", hline=1.0),
        ]

    def heatmap_specs(self) -> list[dict]:
        return [dict(file="heatmap_speedup.png", title="custom all-gather speedup over torch (NCCL) in graph time, shape x dtype",
                     where={"backend": "custom"}, index="shape", columns="dtype", value="speedup_vs_torch_graph", ratio=True)]


def gathered(inputs: list[torch.Tensor], dim: int) -> torch.Tensor:
    """What an all-gather must produce: the ranks' bytes side by side along `dim`. Concatenated as bytes because a
    gather moves bytes; torch.cat of fp8 along the last dim does not keep every NaN payload in every torch version
    (2.11's CPU kernel differs from 2.13's), and the gate is bitwise."""
    return torch.cat([t.view(torch.uint8) for t in inputs], dim=dim % inputs[0].dim()).view(inputs[0].dtype)


def rank_bytes(case: Case) -> int:
    numel = 1
    for d in case["shape"]:
        numel *= d
    return numel * torch.empty((), dtype=case["dtype"]).element_size()
