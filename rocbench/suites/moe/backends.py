"""MoE backends: the portable Triton a16w4 kernel (reads either layout's shuffled bytes directly) and
AITER's fused_moe (ROCm)."""
from __future__ import annotations

import torch

from rocbench.core.axes import Case
from rocbench.core.suite import Backend, RankContext, Runner
from rocbench.suites.moe.suite import MoeIO, MoeSuite

REGISTRY = MoeSuite.backends


@REGISTRY.register
class TritonMoe(Backend):
    name = "triton"
    platforms = ("cuda", "rocm", "cpu")  # CPU only under TRITON_INTERPRET=1 (tests)
    description = "portable Triton a16w4: expert-grouped GEMMs, in-kernel fp4 x e8m0 dequant from shuffled bytes"
    requires = ("triton",)

    def unsupported_reason(self, case: Case) -> str | None:
        from rocbench.kernels.moe_a16w4 import moe_a16w4_unsupported_reason

        if case["inter"] % 32 or case["hidden"] % 32:
            return (f"per-rank inter {case['inter']} / hidden {case['hidden']} is not a multiple of the MX block (32): "
                    "this TP shard needs padding (--pad pads as SGLang does on ROCm)")
        return moe_a16w4_unsupported_reason(case["layout"], case["experts"], case["inter"], case["hidden"])

    def prepare(self, case: Case, io: MoeIO, ctx: RankContext) -> Runner:
        from rocbench.kernels.moe_a16w4 import moe_a16w4, plan_moe

        config = plan_moe(case["tokens"], case["topk"], case["experts"], case["inter"], case["hidden"],
                          ctx.platform.sm_count or 132)
        ctx.cache[("moe_plan", case.id)] = config
        weights = io.layouts[case["layout"]]

        def run() -> torch.Tensor:
            return moe_a16w4(io.x, weights.w13, weights.w13_scale, weights.w2, weights.w2_scale, io.topk_weights,
                             io.topk_ids, layout=case["layout"], experts=case["experts"], inter=case["inter"],
                             hidden=case["hidden"], activation=case["activation"], b13=io.b13, b2=io.b2,
                             out=io.out, config=config)
        return run

    def describe(self, case: Case, ctx: RankContext) -> str:
        cfg = ctx.cache.get(("moe_plan", case.id))
        if cfg is None:
            return f"triton {case['layout']}"
        return f"triton {case['layout']} bm={cfg.bm} split_k1={cfg.split1} {'inline-route' if cfg.inline else 'aligned'}"


@REGISTRY.register
class AiterMoe(Backend):
    """AITER's fused MoE for bf16 x MXFP4 with the weights in the case's layout (gate_mode)."""

    name = "aiter"
    platforms = ("rocm",)
    description = "AITER fused_moe, QuantType.per_1x32, gate_mode = the case's layout"
    requires = ("aiter.fused_moe",)

    def prepare(self, case: Case, io: MoeIO, ctx: RankContext) -> Runner:
        from aiter import ActivationType, QuantType
        from aiter.fused_moe import fused_moe

        self.check_layout_bytes(case)
        weights = io.layouts[case["layout"]]
        activation = ActivationType.Swiglu if case["activation"] == "swiglu" else ActivationType.Silu
        b13 = io.b13.float() if io.b13 is not None else None  # AITER wants fp32 biases
        b2 = io.b2.float() if io.b2 is not None else None
        extra = {"swiglu_limit": 7.0} if case["activation"] == "swiglu" else {}

        def run() -> torch.Tensor:
            out = fused_moe(io.x, weights.w13, weights.w2, io.topk_weights, io.topk_ids, activation=activation,
                            quant_type=QuantType.per_1x32, w1_scale=weights.w13_scale, w2_scale=weights.w2_scale,
                            bias1=b13, bias2=b2, gate_mode=case["layout"], **extra)
            io.out.copy_(out)
            return io.out
        return run

    @staticmethod
    def check_layout_bytes(case: Case) -> None:
        """Where AITER imports, our shuffles (which the triton backend reads) must equal AITER's bytes
        for this case's w13 and w2 shapes (two experts are enough: the permutation is per expert)."""
        from rocbench.suites.moe.layouts import compare_with_aiter

        shapes = [(2, 2 * case["inter"], case["hidden"]), (2, case["hidden"], case["inter"])]
        result = compare_with_aiter(shapes)
        if result["available"] and not result["all_equal"]:
            bad = [c for c in result["cases"] if not (c["weight_equal"] and c["scale_equal"])]
            raise RuntimeError(f"rocbench's {case['layout']} layout bytes differ from AITER's: {bad[:2]}")

    def describe(self, case: Case, ctx: RankContext) -> str:
        return f"aiter fused_moe gate_mode={case['layout']} (layout bytes checked against AITER's shuffles)"
