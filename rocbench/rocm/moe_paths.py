"""Which activation precision AITER's fused_moe runs for MXFP4 weights (QuantType.per_1x32).

AITER does not run the same math for both weight layouts: it quantizes the activations by a rule
(aiter/fused_moe.py:768-797 at e4048607a5, defaults of AITER_BF16_FP8_MOE_BOUND and
GPTOSS_SWIGLU_MXFP4_BF16_BOUND, both 256 tokens):

- SwiGLU + SEPARATED: bf16 activations below 256 tokens, fp4 (a4w4) from 256;
- SwiGLU, or INTERLEAVE: bf16 activations, except fp8 (a8w4) from 256 tokens on gfx950;
- SiLU + SEPARATED: fp4 activations (a4w4) at every token count.

So only some rows are a16w4, and the two layouts of one shape may not agree bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

BF16_BOUND_TOKENS = 256


@dataclass(frozen=True)
class MoePath:
    activations: str  # "bf16" | "fp8" | "fp4"
    why: str

    @property
    def name(self) -> str:
        return {"bf16": "a16w4", "fp8": "a8w4", "fp4": "a4w4"}[self.activations]

    def describe(self) -> str:
        return f"{self.name} ({self.activations} activations: {self.why})"


def activation_path(arch: str | None, layout: str, activation: str, tokens: int) -> MoePath:
    if activation == "swiglu" and layout == "separated":
        if tokens < BF16_BOUND_TOKENS:
            return MoePath("bf16", f"SwiGLU + separated below {BF16_BOUND_TOKENS} tokens")
        return MoePath("fp4", f"SwiGLU + separated at >= {BF16_BOUND_TOKENS} tokens")
    if activation == "swiglu" or layout == "interleave":
        if arch == "gfx950" and tokens >= BF16_BOUND_TOKENS:
            return MoePath("fp8", f"gfx950 at >= {BF16_BOUND_TOKENS} tokens")
        return MoePath("bf16", "SwiGLU or interleave" + ("" if arch == "gfx950" else f" on {arch}")
                       + (f" below {BF16_BOUND_TOKENS} tokens" if arch == "gfx950" else ""))
    return MoePath("fp4", "SiLU + separated quantizes activations to fp4")
