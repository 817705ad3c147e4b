"""MoE backends: the portable Triton a16w4 kernel (on NVIDIA on the weights re-tiled once into wgmma's fragment
order, elsewhere and as `triton_layout` on either layout's shuffled bytes, read directly) and
AITER's fused_moe (ROCm)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from rocbench.core.axes import Case, dtype_name
from rocbench.core.platform import PlatformInfo
from rocbench.core.suite import Backend, Prepared, RankContext, Tolerance, Tuning
from rocbench.rocm.moe_paths import MoePath, activation_path
from rocbench.formats.moe_layouts import LAYOUTS
from rocbench.suites.moe.suite import MoeIO, MoeSuite

REGISTRY = MoeSuite.backends


@REGISTRY.register
class TritonMoe(Backend):
    name = "triton"
    platforms = ("cuda", "rocm", "cpu")  # CPU only under TRITON_INTERPRET=1 (tests)
    description = ("portable Triton a16w4: expert-grouped GEMMs, in-kernel fp4 x e8m0 dequant (NVIDIA: of the weights "
                   "re-tiled once into wgmma fragment order; elsewhere of the layout's shuffled bytes)")
    requires = ("triton",)
    interpreter_wrong_dtypes = {"x_dtype": (torch.bfloat16,)}  # weights are dequantized to the activations' dtype
    # re-tile the weights into wgmma's fragment order before timing where the plan takes it (NVIDIA: heuristic_plan)
    retiles: ClassVar[bool] = True

    def unsupported_reason(self, case: Case, platform: PlatformInfo) -> str | None:
        from rocbench.kernels.moe_a16w4 import moe_a16w4_unsupported_reason

        if case["inter"] % 32 or case["hidden"] % 32:
            return (f"per-rank inter {case['inter']} / hidden {case['hidden']} is not a multiple of the MX block (32): "
                    "this TP shard needs padding (--pad pads as SGLang does on ROCm)")
        return moe_a16w4_unsupported_reason(case["layout"], case["experts"], case["inter"], case["hidden"])

    def twin_checks(self, case: Case) -> list[tuple[str, Case]]:
        """One kernel computes from either layout's bytes (read in the call, or re-tiled from them before it) with the
        same arithmetic: the layouts must agree bitwise."""
        other = next(layout for layout in LAYOUTS if layout != case["layout"])
        return [("layouts_bitwise", case.replaced(layout=other))]

    @staticmethod
    def shape(case: Case) -> tuple:
        return case["tokens"], case["topk"], case["experts"], case["inter"], case["hidden"]

    def heuristic(self, case: Case, ctx: RankContext, retiled: bool | None = None):
        """The plan from the shape and this device alone (plan_moe's choice where nothing is tuned); retiled (default:
        this backend's) takes the fragment-order plans, whose weights prepare_with re-tiles."""
        from rocbench.kernels.moe_plan import cache_hint_available, heuristic_plan

        return heuristic_plan(*self.shape(case), ctx.platform.grid_sms, cache_hint_available(ctx.device),
                              retiled=self.retiles if retiled is None else retiled)

    def prepare(self, case: Case, io: MoeIO, ctx: RankContext) -> Prepared:
        from rocbench.kernels.moe_plan import plan_moe

        heuristic = self.heuristic(case, ctx)
        config = plan_moe(*self.shape(case), ctx.platform.grid_sms, ctx.device, retiled=self.retiles)
        if config.fragments and not self.retiles:  # a tuned config that re-tiles: not this backend's question
            config = heuristic
        source = "heuristic" if config == heuristic else "tuned"
        return self.prepare_with(case, io, ctx, config, source)

    def tuning(self, case: Case, ctx: RankContext) -> Tuning:
        from rocbench.kernels import tuned
        from rocbench.kernels.moe_plan import tune_candidates, tune_key

        key = tune_key(*self.shape(case))
        plan = self.heuristic(case, ctx)

        def remember(name: str, config, evidence: dict) -> str:
            where = tuned.remember("moe_a16w4", ctx.device, key, dataclasses.asdict(config), {"name": name, **evidence})
            return f"{where} [{key}]"

        decode = (*self.shape(case)[:3], ctx.platform.grid_sms)
        candidates = {name: config for name, config in tune_candidates(plan, case["inter"], case["hidden"],
                                                                       decode).items()
                      if self.retiles or not config.fragments}
        if plan.fragments:  # and around the plan that reads the layout's own bytes
            layout_plan = self.heuristic(case, ctx, retiled=False)
            candidates |= {f"layout bytes: {name}": config
                           for name, config in tune_candidates(layout_plan, case["inter"], case["hidden"]).items()
                           if config not in candidates.values()}
        return Tuning(candidates,
                      lambda io, config: self.prepare_with(case, io, ctx, config, "candidate"), remember)

    def prepare_with(self, case: Case, io: MoeIO, ctx: RankContext, config, source: str) -> Prepared:
        from rocbench.kernels.moe_a16w4 import (alloc_counters, largest_scale, live_scale_range, moe_a16w4,
                                                pipeline_description)

        counters = alloc_counters(config, *self.shape(case), ctx.device)
        weights = io.layouts[case["layout"]]
        scale_max = largest_scale(weights.w13_scale, weights.w2_scale)
        live13 = live_scale_range(io.w13_packed, io.w13_scales) if config.f16_gemm1 else None
        fragments = self.fragment_weights(case, io) if config.fragments else None

        def run() -> torch.Tensor:
            return moe_a16w4(io.x, weights.w13, weights.w13_scale, weights.w2, weights.w2_scale, io.topk_weights,
                             io.topk_ids, layout=case["layout"], experts=case["experts"], inter=case["inter"],
                             hidden=case["hidden"], activation=case["activation"], b13=io.b13, b2=io.b2,
                             out=io.out, config=config, counters=counters, scale_max=scale_max,
                             w13_live_scales=live13, fragments=fragments)
        # the fused combine acts on inline routing only (moe_a16w4): named where it runs
        route = ("inline-route fused-combine" if config.fused_combine else "inline-route") if config.inline else "aligned"
        pipeline = pipeline_description(config, ctx.device, io.x.dtype, scale_max, live13)
        if fragments is not None:
            pipeline += f" (weights re-tiled from the {case['layout']} bytes before timing)"
        return Prepared(run, f"triton {case['layout']} bm={config.bm} split_k1={config.split1} {route} {pipeline} "
                             f"({source})")

    @staticmethod
    def fragment_weights(case: Case, io: MoeIO):
        """MoeConfig.fragments' copy of the weights, re-tiled from this case's layout (its shuffled bytes, unshuffled):
        once per prepared config, not timed, as a server converts weights when it loads them."""
        from rocbench.formats.moe_layouts import unshuffle_scale, unshuffle_weight
        from rocbench.kernels.moe_a16w4 import moe_fragments

        weights, layout, experts = io.layouts[case["layout"]], case["layout"], case["experts"]
        return moe_fragments(
            unshuffle_weight(weights.w13, layout, True, experts),
            unshuffle_scale(weights.w13_scale, layout, True, experts, io.w13_scales.shape),
            unshuffle_weight(weights.w2, layout, False, experts),
            unshuffle_scale(weights.w2_scale, layout, False, experts, io.w2_scales.shape))


@REGISTRY.register
class TritonMoeLayoutBytes(TritonMoe):
    """The same kernel reading the layout's own shuffled bytes in every call, where `triton` on NVIDIA re-tiles
    them once into fragment order: what each layout costs the kernel that reads it as stored (the plans ROCm runs,
    and `triton`'s before fragments). Its layouts_bitwise twin checks the kernel's address math for both layouts."""

    name = "triton_layout"
    description = "the Triton a16w4 kernel on the layout's own shuffled bytes (no re-tiling before the calls)"
    on_request = True
    retiles = False


@REGISTRY.register
class TritonMoeDeterministic(TritonMoe):
    """The same kernel with one arithmetic for every batch (moe_plan.deterministic_plan): a token's output is
    bitwise the same whatever else is in its batch. Not tuned: a config picked per shape and token count is
    what makes the default backend batch-variant."""

    name = "triton_det"
    description = "batch-invariant fixed plan of the Triton a16w4 kernel: one arithmetic for every token count"
    deterministic_of = "triton"

    def fixed_plan(self, case: Case, ctx: RankContext):
        """The one plan for every batch of this shape (a plugin may change it by the shape alone)."""
        from rocbench.kernels.moe_plan import cache_hint_available, deterministic_plan

        return deterministic_plan(*self.shape(case), ctx.platform.grid_sms, cache_hint_available(ctx.device),
                                  retiled=self.retiles)

    def prepare(self, case: Case, io: MoeIO, ctx: RankContext) -> Prepared:
        config = self.fixed_plan(case, ctx)
        prepared = self.prepare_with(case, io, ctx, config, "fixed")
        from rocbench.kernels.moe_a16w4 import narrow_y

        route = "inline routing" if config.inline else "block-table routing"
        y = ", per-pair outputs in x's dtype" if narrow_y(config) else ""
        weights = f", weights re-tiled from the {case['layout']} bytes before timing" if config.fragments else ""
        return dataclasses.replace(prepared, description=(
            f"batch-invariant fixed plan: triton {case['layout']} bm={config.bm}, GEMM1 K split {config.split1}"
            f"{f', GEMM2 K split {config.split2}' if config.split2 > 1 else ''} for every batch, {route}{y}, "
            f"top-k sum in slot order{weights}"))

    def tuning(self, case: Case, ctx: RankContext) -> Tuning | None:
        return None


# What each activation precision AITER may pick costs against the fp32 reference (bf16 x fp4 weights),
# for this suite's outputs (RMS 0.25-0.5): quantizing both GEMMs' activations to fp8 e4m3 gives ~4.5%
# relative error (max 0.1, cosine 0.999), to MX fp4 ~20% (max 0.5, cosine 0.977), measured on the CPU
# with exact emulation of the quantization. The bounds leave ~2x margin; a wrong kernel lands far below.
PATH_TOLERANCES = {
    "fp8": Tolerance(atol=0.25, rtol=0.1, min_cosine=0.995, why="a8w4: AITER quantizes activations to fp8"),
    "fp4": Tolerance(atol=1.0, rtol=0.5, min_cosine=0.95, why="a4w4: AITER quantizes activations to MX fp4"),
}


def aiter_moe_path(case: Case, platform: PlatformInfo) -> MoePath:
    return activation_path(platform.arch, case["layout"], case["activation"], case["tokens"])


@REGISTRY.register
class AiterMoe(Backend):
    """AITER's fused_moe for bf16 activations x MXFP4 weights, called as SGLang calls it: the shuffled
    bytes viewed as float4_e2m1fn_x2 with is_shuffled set, gate_mode = the case's layout, fp32 biases,
    hidden_pad / intermediate_pad for padded shapes. It declares no bitwise twin: AITER runs different
    kernels (and activation precisions) per layout and token count."""

    name = "aiter"
    platforms = ("rocm",)
    description = "AITER fused_moe, QuantType.per_1x32, gate_mode = the case's layout, preshuffled fp4x2 weights"
    requires = ("aiter.fused_moe", "aiter.ops.enum")

    def unsupported_reason(self, case: Case, platform: PlatformInfo) -> str | None:
        if case["x_dtype"] != torch.bfloat16:
            return f"AITER's a16w4 MoE takes bf16 activations, not {dtype_name(case['x_dtype'])}"
        return MoeSuite.layout_reason(case)

    def tolerance(self, case: Case, platform: PlatformInfo) -> Tolerance | None:
        return PATH_TOLERANCES.get(aiter_moe_path(case, platform).activations)

    def prepare(self, case: Case, io: MoeIO, ctx: RankContext) -> Prepared:
        from aiter.fused_moe import fused_moe
        from aiter.ops.enum import ActivationType, QuantType

        self.check_layout_bytes(case)
        weights = io.layouts[case["layout"]]
        w13, w2 = self.preshuffled(weights.w13), self.preshuffled(weights.w2)
        activation = ActivationType.Swiglu if case["activation"] == "swiglu" else ActivationType.Silu
        b13 = io.b13.float() if io.b13 is not None else None  # AITER wants fp32 biases
        b2 = io.b2.float() if io.b2 is not None else None
        limit = 7.0 if case["activation"] == "swiglu" else None

        def run() -> torch.Tensor:
            return fused_moe(io.x, w13, w2, io.topk_weights, io.topk_ids, activation=activation,
                             quant_type=QuantType.per_1x32, doweight_stage1=False, w1_scale=weights.w13_scale,
                             w2_scale=weights.w2_scale, hidden_pad=case["hidden_pad"],
                             intermediate_pad=case["inter_pad"], bias1=b13, bias2=b2, swiglu_limit=limit,
                             gate_mode=case["layout"])
        pads = (f", hidden_pad={case['hidden_pad']} intermediate_pad={case['inter_pad']}"
                if case["hidden_pad"] or case["inter_pad"] else "")
        return Prepared(run, f"aiter fused_moe gate_mode={case['layout']}: "
                             f"{aiter_moe_path(case, ctx.platform).describe()}{pads}")

    @staticmethod
    def preshuffled(packed: torch.Tensor) -> torch.Tensor:
        """The shuffled bytes as SGLang hands them to AITER, which picks kernels from the dtype and the flag
        (aiter/fused_moe.py:747, 3949): float4_e2m1fn_x2 where torch has it, is_shuffled=True."""
        view = packed.view(getattr(torch, "float4_e2m1fn_x2", torch.uint8))
        view.is_shuffled = True
        return view

    @staticmethod
    def check_layout_bytes(case: Case) -> None:
        """Where AITER imports, our shuffles (which the triton backend reads) must equal AITER's bytes
        for this case's w13 and w2 shapes (two experts are enough: the permutation is per expert)."""
        from rocbench.rocm.shuffle_check import compare_with_aiter

        shapes = [(2, 2 * case["inter"], case["hidden"]), (2, case["hidden"], case["inter"])]
        result = compare_with_aiter(shapes)
        if result["available"] and not result["all_equal"]:
            bad = [c for c in result["cases"] if not (c["weight_equal"] and c["scale_equal"])]
            raise RuntimeError(f"rocbench's {case['layout']} layout bytes differ from AITER's: {bad[:2]}")

    def paths_here(self, platform: PlatformInfo) -> list[dict]:
        rows = []
        for layout in LAYOUTS:
            for activation in ("silu", "swiglu"):
                for tokens in (1, 255, 256, 8192):
                    case = Case((("layout", layout), ("activation", activation), ("tokens", tokens)))
                    path = aiter_moe_path(case, platform)
                    tol = PATH_TOLERANCES.get(path.activations)
                    rows.append({"layout": layout, "activation": activation, "tokens": tokens, "path": path.describe(),
                                 "judged with": tol.describe() if tol else "the suite's a16w4 tolerance"})
        return rows
