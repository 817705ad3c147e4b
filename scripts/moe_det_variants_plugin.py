"""Backend plugins for A/B runs of triton_det's fixed plan (scripts/device_moe.sh det): `triton_det_full_split`,
GEMM1's K split of the 1-token plan in full instead of half, and `triton_det_wide_y`, GEMM2's y in fp32 (triton_det
stores it in x's dtype, MoeConfig.narrow_y, for every batch). Each changes triton_det's plan by a function of the shape
alone, never of the token count, so the batch-invariance gate applies as to triton_det.

Why: H100, kernel_us, fragments (2026-12-05, results/examples/moe-fragments-ab-h100), triton_det over triton was
1.42x at DeepSeek-R1 TP8 x 1 token (28.9 against 20.3 us: split 4 against the default's 8), over issue 22's 1.3x.
Measured since (H100, 2026-12-05 and 2026-12-06, `det`, results/examples/moe-det-split-h100): the full split 1.39-1.43x
-> 1.21-1.24x there and 1.10 / 1.16x at 64 / 1024 tokens, but at gpt-oss-120b TP1 x 1 token 1.46x and TP8 1.31 / 1.54x
at 64 / 1024 (GEMM1's fp32 partials over 3-step splits): triton_det takes the whole split where half leaves the 1-token
GEMM1 under one wave and the splits stay long (moe_plan.deterministic_split1: DeepSeek-R1 TP8 since), so this plugin
now differs from triton_det on the gpt-oss-120b shapes only. y in x's dtype took 1024 tokens from 1.12-1.34x to
1.05-1.15x and is built in.
`triton_det_split2x2` / `x4`: GEMM2's K split 2 / 4 ways for every batch. triton's 1-token plan at gpt-oss-120b TP1
splits GEMM2's K 4 ways (768 programs); triton_det does not split it (192 programs of 23 K steps each, under 1.5 waves
on 132 SMs), which is where its 1-token price (1.38x) is likely spent; the split's y partials are fp32 for every batch.
Predicted (untimed): gpt-oss-120b TP1 x 1 token 1.38x -> 1.15-1.25x, 64 tokens within +5%, 1024 tokens +5-10% (fp32
y, 100-200 MB more traffic per call there); DeepSeek-R1 and gpt-oss-120b TP8 (896 / 192 programs, 7 / 3 K steps) no
gain at 1 token and a loss at 1024.
H200 (2026-12-06, `det`, results/examples/moe-det-split-h200): split in two took gpt-oss-120b TP1 from 1.36 / 1.23 /
1.08x to 1.15 / 1.24 / 1.13x at 1 / 64 / 1024 tokens (predicted 1.15-1.25x at 1 token) and lost on the other two
shapes (1.25-1.65x); 4 ways lost to 2 everywhere. Built in where it won (moe_plan.deterministic_split2: gpt-oss-120b
TP1), so `triton_det_split2x2` now differs from triton_det on the other two shapes only.
(The variants this file held before, triton_det in the decode pipeline on the layout's bytes and on fragments, lost:
1.44-2.17x and 1.12-1.61x triton's time, where triton_det paid 0.94-1.42x.)

    rocbench moe --plugin scripts/moe_det_variants_plugin.py --backends triton,triton_det,triton_det_split2x2"""
import dataclasses

from rocbench.plugin import backends
from rocbench.suites.moe.backends import TritonMoeDeterministic


@backends("moe").register
class TritonDetFullSplit(TritonMoeDeterministic):
    name = "triton_det_full_split"
    description = "triton_det with the 1-token plan's whole GEMM1 K split for every shape (an A/B plugin)"

    def fixed_plan(self, case, ctx):
        from rocbench.kernels.moe_plan import heuristic_plan

        one_token = heuristic_plan(1, *self.shape(case)[1:], ctx.platform.grid_sms)
        return dataclasses.replace(super().fixed_plan(case, ctx), split1=one_token.split1)


@backends("moe").register
class TritonDetWideY(TritonMoeDeterministic):
    name = "triton_det_wide_y"
    description = "triton_det with GEMM2's y in fp32 for every batch (an A/B plugin: the plan before narrow y)"

    def fixed_plan(self, case, ctx):
        return dataclasses.replace(super().fixed_plan(case, ctx), narrow_y=False)


def _det_gemm2_split(split2: int) -> type:
    """triton_det with GEMM2's K split `split2` ways for every batch (its fp32 partials summed in split order by the
    combine, so still one arithmetic per shape)."""
    def fixed_plan(self, case, ctx):
        return dataclasses.replace(TritonMoeDeterministic.fixed_plan(self, case, ctx), split2=split2)

    name = f"triton_det_split2x{split2}"
    return backends("moe").register(type(name, (TritonMoeDeterministic,), {
        "name": name, "fixed_plan": fixed_plan,
        "description": f"triton_det with GEMM2's K split {split2} ways for every batch (an A/B plugin)"}))


_det_gemm2_split(2)
_det_gemm2_split(4)
