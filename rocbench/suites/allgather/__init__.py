"""All-gather across tensor-parallel ranks: AITER custom vs RCCL (ROCm), symmetric-memory vs NCCL (CUDA), gloo (CPU)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from rocbench.core.command import SuiteCommand
from rocbench.suites.allgather import backends as _backends  # noqa: F401 - registers the backends
from rocbench.suites.allgather.suite import ALL_DTYPES, AllGatherSuite

SUITE = AllGatherSuite()

COMMAND = SuiteCommand(
    suite="allgather",
    help="All-gather across TP ranks: sweep shapes x dtypes x dims, gate bit-exactness, then time.",
    options={
        "tp": (Annotated[int, typer.Option("--tp", help="Tensor-parallel ranks (one GPU each; processes on CPU).")], 8),
        "shapes": (Annotated[Optional[str], typer.Option("--shapes", help="Per-rank shapes, e.g. 1x16160,64x16160 (default: DeepSeek-R1 logits and hidden states at decode batches 1/8/64/256, plus 2048x16384).")], None),
        "dtypes": (Annotated[str, typer.Option("--dtypes", help="Comma list of torch dtype names.")],
                   ",".join(str(d).removeprefix("torch.") for d in ALL_DTYPES)),
        "dims": (Annotated[str, typer.Option("--dims", help="Gather dimensions; -1 puts each rank's slice side by side along the last dim (vocab-sharded logits).")], "0,-1"),
    },
    build_params=SUITE.parse_params,
)
