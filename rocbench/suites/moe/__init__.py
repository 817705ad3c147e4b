"""MXFP4 MoE, a16w4: INTERLEAVE vs SEPARATED weight layouts, gated against an fp32 reference."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from rocbench.core.command import SuiteCommand
from rocbench.suites.moe import backends as _backends  # noqa: F401 - registers the backends
from rocbench.suites.moe.suite import MoeSuite

SUITE = MoeSuite()


COMMAND = SuiteCommand(
    suite="moe",
    help="MXFP4 MoE (bf16 x mxfp4): layouts x TP shards x token counts; gated vs fp32, layouts must agree bitwise.",
    options={
        "layout": (Annotated[str, typer.Option("--layout", help="Weight shuffle layouts: interleave, separated.")], "interleave,separated"),
        "model": (Annotated[str, typer.Option("--model", help="Model shapes: gpt-oss-120b, deepseek-r1.")], "gpt-oss-120b"),
        "tp": (Annotated[str, typer.Option("--tp", help="TP sizes: each shards the intermediate dim (one GPU runs one rank's share).")], "1,2,4,8"),
        "tokens": (Annotated[str, typer.Option("--tokens", help="Token counts: decode 1..256, prefill 1024..8192.")], "1,16,64,1024"),
        "activation": (Annotated[Optional[str], typer.Option("--activation", help="Override the model's activation: silu (DeepSeek) or swiglu (gpt-oss).")], None),
        "experts": (Annotated[Optional[int], typer.Option("--experts", help="Explicit shape instead of --model: experts.")], None),
        "topk": (Annotated[Optional[int], typer.Option("--topk", help="Explicit shape: experts per token.")], None),
        "hidden": (Annotated[Optional[int], typer.Option("--hidden", help="Explicit shape: hidden size.")], None),
        "inter": (Annotated[Optional[int], typer.Option("--inter", help="Explicit shape: intermediate size before TP sharding.")], None),
        "x_dtype": (Annotated[str, typer.Option("--x-dtype", help="Activation dtype: bf16 (the real path); fp16/fp32 for CPU-interpreter runs.")], "bf16"),
        "pad": (Annotated[bool, typer.Option("--pad/--no-pad", help="Pad per-rank hidden to 256 and inter to 128 as SGLang does for AITER on ROCm (shown in the padded column).")], False),
        "renormalize": (Annotated[bool, typer.Option("--renormalize/--no-renormalize", help="Renormalize the top-k router weights to sum 1.")], True),
    },
    build_params=SUITE.parse_params,
)
