"""Backend plugins for A/B runs (scripts/device_moe.sh det): `triton_det_dp`, triton_det's fixed batch-invariant plan
in the NVIDIA decode plans' pipeline (moe_plan.CACHE_HINT_DECODE_PIPELINE: L2 prefetch hint, byte scales, one stage,
dependent launches, split pairs), and `triton_det_frag`, the same plan on weights in fragment order
(MoeConfig.fragments, natural K order). Nothing in either depends on the token count, so the batch-invariance gate
applies as to triton_det. Both start from the plan on the layout's bytes; triton_det itself now runs on fragments
with the register prefetch on NVIDIA (moe_plan.deterministic_plan), which triton_det_frag measures against the hint.
Offline sm_90 SASS (Triton 3.6, gpt-oss-120b TP1 x 64): GEMM1's loop 748 -> 589 instructions (dp).

    rocbench moe --plugin scripts/moe_det_pipeline_plugin.py --backends triton,triton_det,triton_det_dp"""
import dataclasses

from rocbench.plugin import backends
from rocbench.suites.moe.backends import TritonMoeDeterministic


@backends("moe").register
class TritonDetDecodePipeline(TritonMoeDeterministic):
    name = "triton_det_dp"
    description = "triton_det's fixed plan in the decode plans' NVIDIA pipeline (an A/B plugin)"
    on_fragments = False  # also the weights in fragment order (MoeConfig.fragments)

    def prepare(self, case, io, ctx):
        from rocbench.kernels.moe_plan import CACHE_HINT_DECODE_PIPELINE, ON_FRAGMENTS, deterministic_plan

        changes = dict(CACHE_HINT_DECODE_PIPELINE, **(ON_FRAGMENTS if self.on_fragments else {}))
        config = dataclasses.replace(deterministic_plan(*self.shape(case), ctx.platform.grid_sms), **changes)
        return self.prepare_with(case, io, ctx, config, "fixed")


@backends("moe").register
class TritonDetFragments(TritonDetDecodePipeline):
    name = "triton_det_frag"
    description = "triton_det's fixed plan on weights in fragment order, in the decode plans' pipeline (an A/B plugin)"
    on_fragments = True
