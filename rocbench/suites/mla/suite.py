"""MLA decode semantics: DeepSeek absorbed attention over a paged latent KV cache, fp32 reference."""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

from rocbench.core.harness import gate
from rocbench.core.axes import Case, parse_ints
from rocbench.core.errors import InputError
from rocbench.core.params import Param, choices, dtypes, flag, ints, tristate
from rocbench.core.platform import detect
from rocbench.core.suite import Backends, InterpreterCost, RankContext, Speedup, Suite, Tolerance, Verdict, Work
from rocbench.formats.fp8 import E4M3_DTYPES, fp8_for_arch
from rocbench.formats.paged_kv import (HEAD_DIM, KV_LORA_RANK, SEQ_LEN_DISTS, PagedKV, build_paged_kv,
                                          make_query, make_seq_lens)
from rocbench.suites.mla.reference import mla_decode_reference
from rocbench.suites.mla.probes import mla_probes

# "fp8" means the platform's e4m3 flavour (fnuz on gfx942); fp16/fp32: CPU-interpreter paths
KV_DTYPES = (torch.bfloat16, *E4M3_DTYPES, torch.float16, torch.float32)
Q_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
NHEADS = (16, 32, 64, 128)  # DeepSeek-R1's 128 heads at TP 8/4/2/1
# DeepSeek's softmax scale is 1/sqrt(192) times yarn's mscale^2; any fixed scale is fair when the
# reference uses the same one.
SM_SCALE = 1.0 / math.sqrt(192)
# Stated tolerance: bf16 q and P@V in bf16 MMAs with fp32 accumulation, bf16 output.
TOLERANCE = Tolerance(atol=1e-2, rtol=2e-2, min_cosine=0.9999)


@dataclass
class MlaIO:
    q: torch.Tensor  # [batch*qlen, nhead, 576]
    kv: PagedKV
    out: torch.Tensor  # [batch*qlen, nhead, 512]


def power_of_two_ints(text: str, what: str) -> list[int]:
    values = parse_ints(text, what, minimum=1)
    for value in values:
        if value & (value - 1):
            raise InputError(f"{what}: {value} is not a power of two")
    return values


def platform_fp8() -> torch.dtype:
    return fp8_for_arch(detect().arch)


def explain(values: dict) -> int | None:
    if not values["explain"]:
        return None
    from tabulate import tabulate

    from rocbench.rocm.mla_policy import policy_table

    print("AITER MLA decode path per SGLang's policy (what the aiter backend runs):")
    print(tabulate(policy_table(), headers="keys", tablefmt="simple"))
    print()
    print("Batch invariance (deterministic inference): which paths change a request's result with the batch.")
    rows = [(backend.name, path, "yes" if invariant else "no", why)
            for backend in MlaSuite.backends for path, invariant, why in backend.batch_invariance]
    print(tabulate(rows, headers=("backend", "path", "batch-invariant", "why"), tablefmt="simple",
                   maxcolwidths=[None, None, None, 90]))
    print("Every row's batch_invariant column checks it: the same request alone, last, and beside longer ones.")
    return 0


def split_kv_twin(case: Case, backend: str) -> tuple[str, str] | None:
    """A persistent row's speedup is over the same backend's non-persistent run of the case."""
    if not case["persist"]:
        return None
    return Case(tuple((k, False if k == "persist" else v) for k, v in case.values)).id, backend


class MlaSuite(Suite):
    name = "mla"
    input_axes = ("nhead", "batch", "ctx", "ctx_dist", "kv_dtype", "q_dtype", "page_size", "qlen", "persist")
    help = "MLA decode: nhead x batch x ctx x KV dtype, persistent and not; gated vs an fp32 reference, then timed."
    params = (
        Param("nhead", "Heads per rank: 16/32/64/128 = DeepSeek-R1 at TP 8/4/2/1.", ints(allowed=NHEADS),
              "16,32,64,128", axis=True),
        Param("batch", "Decode batch sizes.", ints(minimum=1), "1,64", axis=True),
        Param("ctx", "Context lengths (mean per sequence).", ints(minimum=4), "4096", axis=True),
        Param("ctx_dist", "uniform (all = ctx), skewed (a few long among many short, same total) or random.",
              choices(SEQ_LEN_DISTS), "uniform,skewed", axis=True),
        Param("kv_dtype", "KV cache dtypes: bf16, fp8 (e4m3 with a per-tensor scale: float8_e4m3fnuz on gfx942, "
                          "float8_e4m3fn elsewhere).", dtypes(KV_DTYPES, platform_fp8), "bf16,fp8", axis=True,
              cpu_default="fp16,fp8"),
        Param("q_dtype", "Query/output dtype: bf16 (the real path); fp16/fp32 for runs under Triton's CPU "
                         "interpreter, whose bf16 dot products are wrong.", dtypes(Q_DTYPES), "bf16", axis=True,
              cpu_default="fp16"),
        Param("page_size", "Tokens per KV page (powers of two).", power_of_two_ints, "64", axis=True),
        Param("qlen", "Query tokens per sequence: 1 (decode) or 2-4 (MTP).", ints(allowed=(1, 2, 3, 4)), "1",
              axis=True),
        tristate("persist", "Only the persistent or only the non-persistent path (default: both).", axis=True),
        flag("explain", "Print the AITER persistent-path policy for every (nhead, KV dtype, persist) and exit."),
    )
    baseline = "triton"
    extra_speedups = (Speedup("speedup_vs_split_kv", "same backend's non-persistent (split-KV) run of the case",
                              split_kv_twin),)
    backends = Backends()
    interpreter_cost = InterpreterCost(per_row_s=0.4, per_mib_s=0.8)  # fitted: batch 2/8, ctx 64/256

    def before_run(self, values: dict) -> int | None:
        return explain(values)

    def finish(self, params: dict) -> dict:
        # persist varies fastest, so each persistent row lands right after its non-persistent twin
        params["persist"] = [False, True] if params["persist"] is None else [params["persist"]]
        return params

    def seq_lens(self, case: Case) -> list[int]:
        """Context lengths depend on the case alone, so bytes and flops are known without a rank."""
        gen = torch.Generator().manual_seed(zlib.crc32(f"lens/{case.input_key}".encode()))
        lens = make_seq_lens(case["batch"], case["ctx"], case["ctx_dist"], gen)
        return [max(length, case["qlen"]) for length in lens]

    def build_io(self, case: Case, ctx: RankContext) -> MlaIO:
        kv = self.make_kv(case, ctx, data_seed=0)
        tokens = case["batch"] * case["qlen"]
        q = torch.empty(tokens, case["nhead"], HEAD_DIM, dtype=case["q_dtype"], device=ctx.device)
        out = torch.empty(tokens, case["nhead"], KV_LORA_RANK, dtype=case["q_dtype"], device=ctx.device)
        return MlaIO(q, kv, out)

    def make_kv(self, case: Case, ctx: RankContext, data_seed: int) -> PagedKV:
        gen = torch.Generator(device=ctx.device).manual_seed(zlib.crc32(f"{ctx.seed}/kv/{case.input_key}/{data_seed}".encode()))
        return build_paged_kv(self.seq_lens(case), case["page_size"], case["kv_dtype"], gen, ctx.device)

    def fill(self, case: Case, io: MlaIO, ctx: RankContext, data_seed: int) -> torch.Tensor:
        fresh = self.make_kv(case, ctx, data_seed)
        for name in ("kv_buffer", "kv_indptr", "kv_indices", "kv_last_page_lens", "seq_lens"):
            getattr(io.kv, name).copy_(getattr(fresh, name))  # same buffers, so captured graphs see new data
        if fresh.kv_scale is not None:
            io.kv.kv_scale.copy_(fresh.kv_scale)
        gen = torch.Generator(device=ctx.device).manual_seed(zlib.crc32(f"{ctx.seed}/q/{case.input_key}/{data_seed}".encode()))
        io.q.copy_(make_query(io.q.shape[0], case["nhead"], case["q_dtype"], gen, ctx.device))
        io.out.fill_(float("nan"))  # poison: an unwritten element fails the gate
        expected, _ = mla_decode_reference(io.q, io.kv, SM_SCALE, case["qlen"])
        return expected

    def batch_probes(self, case: Case, io: MlaIO, ctx: RankContext) -> list:
        return mla_probes(case, io, ctx)

    def judge(self, case: Case, output: str, got: torch.Tensor, expected: torch.Tensor,
              tolerance: Tolerance | None = None) -> Verdict:
        return gate.tolerance(got, expected, tolerance or TOLERANCE)

    def work(self, case: Case, world_size: int) -> Work:
        lens = self.seq_lens(case)
        kv_bytes = sum(lens) * HEAD_DIM * torch.empty((), dtype=case["kv_dtype"]).element_size()
        nhead, qlen = case["nhead"], case["qlen"]
        # each query row j of a sequence of length L sees L - qlen + j + 1 tokens: QK^T over 576, PV over 512
        visible = sum(length - qlen + j + 1 for length in lens for j in range(qlen))
        flops = 2.0 * nhead * visible * (HEAD_DIM + KV_LORA_RANK)
        return Work(bytes=kv_bytes, flops=flops)  # GB/s counts the KV bytes read, as kernel engineers quote it

    def plot_specs(self) -> list[dict]:
        per_nhead = dict(facet="nhead")  # every other axis that varies makes its own line
        return [
            dict(file="bandwidth.png", title="MLA decode: KV GB/s (kernel time)", x=["ctx", "batch"],
                 y="algbw_kernel_GBps", ylabel="GB/s", **per_nhead),
            dict(file="latency.png", title="MLA decode latency", x=["ctx", "batch"],
                 y=["kernel_us_median", "graph_us_median"], ylabel="us", logy=True, **per_nhead),
            dict(file="pct_copy_bw.png", title="MLA decode: % of measured copy bandwidth (kernel time)",
                 x=["batch", "ctx"], y="pct_copy_bw_kernel", ylabel="% of copy bw", **per_nhead),
        ]

    def heatmap_specs(self) -> list[dict]:
        return [
            dict(file="heatmap_persistent_speedup.png", title="persistent over non-persistent (kernel time), nhead x batch",
                 where={"persist": True}, index="nhead", columns="batch", value="speedup_vs_split_kv_kernel", ratio=True),
            dict(file="heatmap_pct_roofline.png", title="% of roofline (kernel time), nhead x batch (persistent)",
                 where={"persist": True}, index="nhead", columns="batch", value="pct_roofline_kernel",
                 center=50.0, fmt="{:.0f}"),
        ]
