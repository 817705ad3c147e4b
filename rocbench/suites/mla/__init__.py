"""MLA decode (DeepSeek absorbed multi-head latent attention): persistent and non-persistent, gated vs fp32."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from rocbench.core.command import SuiteCommand
from rocbench.suites.mla import backends as _backends  # noqa: F401 - registers the backends
from rocbench.suites.mla.suite import MlaSuite

SUITE = MlaSuite()


def print_policy() -> None:
    from tabulate import tabulate

    from rocbench.suites.mla.policy import policy_table

    print("AITER MLA decode path per SGLang's policy (what the aiter backend runs):")
    print(tabulate(policy_table(), headers="keys", tablefmt="simple"))


def explain(values: dict) -> int | None:
    if values["explain"]:
        print_policy()
        return 0
    return None


COMMAND = SuiteCommand(
    suite="mla",
    help="MLA decode: nhead x batch x ctx x KV dtype, persistent and not; gated vs an fp32 reference, then timed.",
    options={
        "nhead": (Annotated[str, typer.Option("--nhead", help="Heads per rank: 16/32/64/128 = DeepSeek-R1 at TP 8/4/2/1.")], "16,32,64,128"),
        "batch": (Annotated[str, typer.Option("--batch", help="Decode batch sizes.")], "1,64"),
        "ctx": (Annotated[str, typer.Option("--ctx", help="Context lengths (mean per sequence).")], "4096"),
        "ctx_dist": (Annotated[str, typer.Option("--ctx-dist", help="uniform (all = ctx), skewed (a few long among many short, same total) or random.")], "uniform,skewed"),
        "kv_dtype": (Annotated[str, typer.Option("--kv-dtype", help="KV cache dtypes: bf16, fp8 (e4m3 with a per-tensor scale: float8_e4m3fnuz on gfx942, float8_e4m3fn elsewhere).")], "bf16,fp8"),
        "page_size": (Annotated[str, typer.Option("--page-size", help="Tokens per KV page (powers of two).")], "64"),
        "qlen": (Annotated[str, typer.Option("--qlen", help="Query tokens per sequence: 1 (decode) or 2-4 (MTP).")], "1"),
        "q_dtype": (Annotated[str, typer.Option("--q-dtype", help="Query/output dtype: bf16 (the real path); fp16/fp32 exist for CPU-interpreter runs.")], "bf16"),
        "persist": (Annotated[Optional[bool], typer.Option("--persist/--no-persist", help="Only the persistent or only the non-persistent path (default: both).")], None),
        "explain": (Annotated[bool, typer.Option("--explain", help="Print the AITER persistent-path policy for every (nhead, KV dtype, persist) and exit.")], False),
    },
    build_params=lambda explain, **values: SUITE.parse_params(**values),
    before_run=explain,
)
