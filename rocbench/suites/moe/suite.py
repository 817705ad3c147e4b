"""MXFP4 MoE (a16w4) semantics: routed experts with bf16 activations and MXFP4 weights in AITER's
two shuffle layouts, gated against an fp32 reference.

Padding (--pad) is SGLang's on ROCm: the per-rank hidden and intermediate sizes are rounded up and the
extra weight rows/columns, biases and activation columns are zero, so the padded block computes the
same function; a backend may skip the padded columns (AITER's hidden_pad / intermediate_pad), and only
the real output columns are judged."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from rocbench.core.harness import gate
from rocbench.core.axes import Case, product, reindex
from rocbench.core.errors import InputError
from rocbench.core.params import Param, choices, dtypes, flag, integer, ints, one_of
from rocbench.core.suite import Backends, InterpreterCost, RankContext, Speedup, Suite, Tolerance, Verdict, Work
from rocbench.formats.moe_layouts import INTERLEAVE, LAYOUTS, shuffle_scale, shuffle_weight
from rocbench.formats.mxfp4 import dequantize_mxfp4, mxfp4_bytes, quantize_mxfp4
from rocbench.suites.moe.reference import ACTIVATIONS, MODELS, moe_reference, rocm_padded_dims, route, shard_inter
from rocbench.suites.moe.probes import moe_probes

X_DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # fp16/fp32: CPU-interpreter paths
# Stated tolerance: bf16 activations, exact fp4 x e8m0 weights, fp32 accumulation, the intermediate
# rounded to the activation dtype before the down projection (the reference does the same).
TOLERANCE = Tolerance(atol=3e-2, rtol=3e-2, min_cosine=0.999)
CUSTOM = "custom"


@dataclass
class LayoutWeights:
    w13: torch.Tensor  # shuffled packed fp4 [E, 2I, H/2]
    w13_scale: torch.Tensor
    w2: torch.Tensor  # shuffled packed fp4 [E, H, I/2]
    w2_scale: torch.Tensor


@dataclass
class MoeIO:
    x: torch.Tensor  # [T, H]
    topk_weights: torch.Tensor  # [T, k] fp32
    topk_ids: torch.Tensor  # [T, k] int32
    layouts: dict  # layout name -> LayoutWeights (every layout this case or its twin needs)
    w13_packed: torch.Tensor  # unshuffled quantized weights: the reference dequantizes these
    w13_scales: torch.Tensor
    w2_packed: torch.Tensor
    w2_scales: torch.Tensor
    b13: torch.Tensor | None
    b2: torch.Tensor | None
    out: torch.Tensor  # [T, H]


def interleave_twin(case: Case, backend: str) -> tuple[str, str] | None:
    """A separated row's speedup is over the same backend's interleave run of the shape."""
    return (case.replaced(layout=INTERLEAVE).id, backend) if case["layout"] != INTERLEAVE else None


QUANTIZE_CHUNK_BYTES = 256 << 20  # fp32 weights padded and quantized at a time


def _quantize_padded(w: torch.Tensor, pad: tuple[int, ...], shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_mxfp4(pad(w).reshape(experts, *shape)), a few experts at a time: the same bytes (every MX block is
    quantized on its own) without a padded fp32 copy of every expert and the quantizer's temporaries of all of them
    (several fp32-sized tensors: DeepSeek-R1 TP8's build peaked at 16 GB, gpt-oss-120b TP1's passed 24 GB)."""
    experts = w.shape[0]
    step = max(1, QUANTIZE_CHUNK_BYTES // (4 * shape[0] * shape[1]))
    parts = [quantize_mxfp4(torch.nn.functional.pad(w[e:e + step], pad).reshape(-1, *shape))
             for e in range(0, experts, step)]
    return torch.cat([p for p, _ in parts]), torch.cat([s for _, s in parts])


def _build_peak_bytes(case: Case) -> int:
    """What build_io holds at its peak, by its phases: w13 drawn in fp32 (and its packed bytes growing), then w2
    drawn beside w13's packed bytes, then both shuffled into the two layouts; plus a chunk's quantizer temporaries
    (a few fp32 copies; a chunk is one expert's w13 where that exceeds QUANTIZE_CHUNK_BYTES). Checked on CPU by
    peak RSS less the process's start: DeepSeek-R1 TP8 5.05 GiB (model 4.96), gpt-oss-120b TP1 padded 10.3 GiB
    (model 10.1)."""
    E, H, I = case["experts"], case["hidden"], case["inter"]
    h, i = H - case["hidden_pad"], I - case["inter_pad"]
    packed13, packed2 = E * mxfp4_bytes(2 * I, H), E * mxfp4_bytes(H, I)
    phases = (4 * E * 2 * i * h + packed13, 4 * E * h * i + packed13 + packed2, 3 * (packed13 + packed2))
    return max(phases) + 4 * max(QUANTIZE_CHUNK_BYTES, 4 * 2 * I * H)


class MoeSuite(Suite):
    name = "moe"
    input_axes = ("model", "tp", "tokens", "layout", "x_dtype", "experts", "topk", "hidden", "inter", "hidden_pad",
                  "inter_pad", "activation", "bias", "renormalize")
    help = "MXFP4 MoE (bf16 x mxfp4): layouts x TP shards x token counts; gated vs fp32."
    params = (
        Param("model", "Model shapes: gpt-oss-120b, deepseek-r1.", choices(tuple(MODELS)), "gpt-oss-120b", axis=True),
        Param("tp", "TP sizes: each shards the intermediate dim (one GPU runs one rank's share).",
              ints(allowed=(1, 2, 4, 8)), "1,2,4,8", axis=True),
        Param("tokens", "Token counts: decode 1..256, prefill 1024..8192.", ints(minimum=1), "1,16,64,1024", axis=True),
        Param("layout", "Weight shuffle layouts: interleave, separated.", choices(LAYOUTS), "interleave,separated",
              axis=True),
        Param("x_dtype", "Activation dtype: bf16 (the real path); fp16/fp32 for runs under Triton's CPU "
                         "interpreter, whose bf16 dot products are wrong.", dtypes(X_DTYPES), "bf16", axis=True,
              cpu_default="fp16"),
        Param("activation", "Override the model's activation: silu (DeepSeek) or swiglu (gpt-oss).", one_of(ACTIVATIONS)),
        Param("experts", "Explicit shape instead of --model: experts.", integer(1)),
        Param("topk", "Explicit shape: experts per token.", integer(1)),
        Param("hidden", "Explicit shape: hidden size.", integer(1)),
        Param("inter", "Explicit shape: intermediate size before TP sharding.", integer(1)),
        flag("pad", "Pad per-rank hidden to 256 and inter to 128 as SGLang does for AITER on ROCm (zero weights; "
                    "shown in the hidden_pad / inter_pad columns)."),
        flag("renormalize", "Renormalize the top-k router weights to sum 1.", default=True),
    )
    derived_columns = ("experts", "topk", "hidden", "inter", "hidden_pad", "inter_pad", "activation")
    twin_columns = ("layouts_bitwise",)
    baseline = "triton"
    extra_speedups = (Speedup("speedup_vs_interleave", "same backend's interleave run of the shape", interleave_twin),)
    backends = Backends()
    interpreter_cost = InterpreterCost(per_row_s=5.5, per_mib_s=23.0)  # fitted: 4 and 8 experts, hidden 128/512

    def finish(self, params: dict) -> dict:
        explicit = [params[k] for k in ("experts", "topk", "hidden", "inter")]
        activation = params["activation"]
        if any(v is not None for v in explicit):
            experts, topk, hidden, inter = explicit
            if any(v is None for v in explicit):
                raise InputError("--experts, --topk, --hidden and --inter go together (all four, or use --model)")
            if topk > experts:
                raise InputError(f"--topk {topk} exceeds --experts {experts}")
            if hidden % 32 or inter % 32:
                raise InputError(f"--hidden {hidden} and --inter {inter} must be multiples of the MX block (32)")
            params["model"] = [CUSTOM]
            params["shapes"] = {CUSTOM: dict(experts=experts, topk=topk, hidden=hidden, inter=inter,
                                             activation=activation or "silu", bias=False)}
        else:
            params["shapes"] = {m: dict(MODELS[m]) for m in params["model"]}
        for shape in params["shapes"].values():
            shape["activation"] = activation or shape["activation"]
        for m in params["model"]:
            for t in params["tp"]:
                try:
                    shard_inter(params["shapes"][m]["inter"], t)
                except ValueError as err:
                    raise InputError(f"--tp {t}: {m}: {err}") from None
        return params

    def cases(self, params: dict) -> list[Case]:
        cases = []
        for m in params["model"]:
            shape = params["shapes"][m]
            for c in product({"model": [m], "tp": params["tp"], "tokens": params["tokens"], "layout": params["layout"],
                              "x_dtype": params["x_dtype"]}):
                real_hidden, real_inter = shape["hidden"], shard_inter(shape["inter"], c["tp"])
                # explicit, and shown in the hidden_pad / inter_pad columns: never silent
                hidden, inter = rocm_padded_dims(real_hidden, real_inter) if params["pad"] else (real_hidden, real_inter)
                values = dict(c.values, experts=shape["experts"], topk=shape["topk"], hidden=hidden, inter=inter,
                              hidden_pad=hidden - real_hidden, inter_pad=inter - real_inter,
                              activation=shape["activation"], bias=shape["bias"], renormalize=params["renormalize"])
                cases.append(values)
        # interleave comes before separated for every (model, tp, tokens): separated rows find their twin timed
        return reindex((Case(tuple(v.items())) for v in cases), self.input_axes)

    @staticmethod
    def generator(case: Case, ctx: RankContext, what: str, data_seed: int = 0) -> torch.Generator:
        # the weights do not depend on the layout: both layouts shuffle the same quantized bytes
        key = case.replaced(layout=INTERLEAVE).input_key
        return torch.Generator(device=ctx.device).manual_seed(zlib.crc32(f"{ctx.seed}/{what}/{key}/{data_seed}".encode()))

    def build_io(self, case: Case, ctx: RankContext) -> MoeIO:
        E, H, I, T, k = case["experts"], case["hidden"], case["inter"], case["tokens"], case["topk"]
        h, i = H - case["hidden_pad"], I - case["inter_pad"]  # the real (unpadded) sizes
        gen = self.generator(case, ctx, "weights")
        # gate rows, then up rows; zero padding; each matrix quantized before the next is drawn (same draws, in order)
        w13 = torch.randn(E, 2, i, h, generator=gen, device=ctx.device).mul_(h ** -0.5)  # in place: one fp32 copy
        w13_packed, w13_scales = _quantize_padded(w13, (0, H - h, 0, I - i), (2 * I, H))
        del w13
        w2 = torch.randn(E, h, i, generator=gen, device=ctx.device).mul_(i ** -0.5)
        w2_packed, w2_scales = _quantize_padded(w2, (0, I - i, 0, H - h), (H, I))
        del w2
        b13 = b2 = None
        if case["bias"]:
            b13 = torch.randn(E, 2, i, generator=gen, device=ctx.device) * 0.1
            b13 = torch.nn.functional.pad(b13, (0, I - i)).reshape(E, 2 * I)
            b2 = torch.nn.functional.pad(torch.randn(E, h, generator=gen, device=ctx.device) * 0.1, (0, H - h))
        layouts = {}
        for layout in LAYOUTS:  # both: a backend may check its layouts against each other
            if self.layout_reason(case.replaced(layout=layout)):
                continue
            layouts[layout] = LayoutWeights(
                shuffle_weight(w13_packed, layout, True, E), shuffle_scale(w13_scales, layout, True, E),
                shuffle_weight(w2_packed, layout, False, E), shuffle_scale(w2_scales, layout, False, E))
        return MoeIO(
            x=torch.empty(T, H, dtype=case["x_dtype"], device=ctx.device),
            topk_weights=torch.empty(T, k, dtype=torch.float32, device=ctx.device),
            topk_ids=torch.empty(T, k, dtype=torch.int32, device=ctx.device),
            layouts=layouts, w13_packed=w13_packed, w13_scales=w13_scales, w2_packed=w2_packed, w2_scales=w2_scales,
            b13=b13, b2=b2, out=torch.empty(T, H, dtype=case["x_dtype"], device=ctx.device))

    @staticmethod
    def layout_reason(case: Case) -> str | None:
        from rocbench.formats.moe_layouts import layout_unsupported_reason

        E, H, I = case["experts"], case["hidden"], case["inter"]
        reason = layout_unsupported_reason(case["layout"], E, 2 * I, H, True)
        if reason:
            return f"w13: {reason}"
        reason = layout_unsupported_reason(case["layout"], E, H, I, False)
        return f"w2: {reason}" if reason else None

    def routing(self, case: Case, device: torch.device, data_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits depend on the case and data seed only (generated on CPU), so bytes are known up front."""
        key = case.replaced(layout=INTERLEAVE).input_key
        gen = torch.Generator().manual_seed(zlib.crc32(f"router/{key}/{data_seed}".encode()))
        logits = torch.randn(case["tokens"], case["experts"], generator=gen)
        weights, ids = route(logits, case["topk"], case["renormalize"])
        return weights.to(device), ids.to(device)

    def fill(self, case: Case, io: MoeIO, ctx: RankContext, data_seed: int) -> torch.Tensor:
        gen = self.generator(case, ctx, "x", data_seed)
        io.x.copy_(torch.randn(io.x.shape, generator=gen, device=ctx.device))
        io.x[:, io.x.shape[1] - case["hidden_pad"]:] = 0  # padded activation columns are zero, as SGLang pads
        weights, ids = self.routing(case, ctx.device, data_seed)
        io.topk_weights.copy_(weights)
        io.topk_ids.copy_(ids)
        io.out.fill_(float("nan"))  # poison
        return self.reference(case, io)

    def batch_probes(self, case: Case, io: MoeIO, ctx: RankContext) -> list:
        return moe_probes(case, io, ctx)

    def reference(self, case: Case, io: MoeIO) -> torch.Tensor:
        """fp32 reference over the experts actually selected (dequantized on the fly, compactly)."""
        used, compact_ids = torch.unique(io.topk_ids.long(), return_inverse=True)
        w13 = dequantize_mxfp4(io.w13_packed[used], io.w13_scales[used])
        w2 = dequantize_mxfp4(io.w2_packed[used], io.w2_scales[used])
        b13 = io.b13[used] if io.b13 is not None else None
        b2 = io.b2[used] if io.b2 is not None else None
        return moe_reference(io.x, w13, w2, io.topk_weights, compact_ids.to(torch.int32), case["activation"],
                             b13, b2, intermediate_dtype=case["x_dtype"])

    def judge(self, case: Case, output: str, got: torch.Tensor, expected: torch.Tensor,
              tolerance: Tolerance | None = None) -> Verdict:
        real = got.shape[-1] - case["hidden_pad"]  # a backend that skips padding leaves those columns unwritten
        return gate.tolerance(got[..., :real], expected[..., :real], tolerance or TOLERANCE)

    def work(self, case: Case, world_size: int) -> Work:
        H, I, T, k = case["hidden"], case["inter"], case["tokens"], case["topk"]
        _, ids = self.routing(case, torch.device("cpu"), 0)
        # the packed weights and scales of the experts the tokens select: what a call must read once
        experts_used = int(torch.unique(ids).numel())
        return Work(bytes=experts_used * (mxfp4_bytes(2 * I, H) + mxfp4_bytes(H, I)), flops=2.0 * T * k * 3 * H * I,
                    build_bytes=_build_peak_bytes(case))

    def plot_specs(self) -> list[dict]:
        per_tp = dict(x=["tokens"], facet="tp")  # every other axis that varies (layout, model) makes its own line
        return [
            dict(file="bandwidth.png", title="MXFP4 MoE: weight GB/s (kernel time) vs tokens", y="algbw_kernel_GBps",
                 ylabel="weight GB/s", **per_tp),
            dict(file="pct_copy_bw.png", title="MXFP4 MoE: % of measured copy bandwidth (kernel time)",
                 y="pct_copy_bw_kernel", ylabel="% copy bw", **per_tp),
            dict(file="latency.png", title="MXFP4 MoE latency",
                 y=["kernel_us_median", "graph_us_median"], ylabel="us", logy=True, **per_tp),
        ]

    def heatmap_specs(self) -> list[dict]:
        return [
            dict(file="heatmap_separated_vs_interleave.png", title="separated over interleave (kernel time), tokens x TP",
                 where={"layout": "separated"}, index="tokens", columns="tp", value="speedup_vs_interleave_kernel",
                 ratio=True),
            dict(file="heatmap_pct_roofline.png", title="% of roofline (kernel time), tokens x TP",
                 index="tokens", columns="tp", value="pct_roofline_kernel", center=50.0, fmt="{:.0f}"),
        ]
