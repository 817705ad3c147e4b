"""All-gather across tensor-parallel ranks: AITER custom vs RCCL (ROCm), symmetric-memory vs NCCL (CUDA), gloo (CPU)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rocbench.core import cli_options as opt
from rocbench.suites.allgather import backends as _backends  # noqa: F401 - registers the backends
from rocbench.suites.allgather.suite import AllGatherSuite

SUITE = AllGatherSuite()


def register(app: typer.Typer) -> None:
    @app.command("allgather", help="All-gather across TP ranks: sweep shapes x dtypes x dims, gate bit-exactness, then time.")
    def allgather(
        tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel ranks (one GPU each; processes on CPU).")] = 8,
        shapes: Annotated[Optional[str], typer.Option("--shapes", help="Per-rank shapes, e.g. 1x16160,64x16160 (default: DeepSeek-R1 logits and hidden states at decode batches 1/8/64/256, plus 2048x16384).")] = None,
        dtypes: Annotated[str, typer.Option("--dtypes", help="Comma list of torch dtype names.")] = "float32,float16,bfloat16,float8_e4m3fn,float8_e5m2,int8,uint8,int32,int64,bool",
        dims: Annotated[str, typer.Option("--dims", help="Gather dimensions; -1 puts each rank's slice side by side along the last dim (vocab-sharded logits).")] = "0,-1",
        backends: opt.Backends = None,
        correctness_only: opt.CorrectnessOnly = False,
        cuda_graph: opt.CudaGraph = False,
        iters: opt.Iters = 30,
        warmup: opt.Warmup = 5,
        out: opt.Out = Path("results"),
        seed: opt.Seed = 0,
        timeout: opt.Timeout = 300.0,
        resume: opt.Resume = None,
        inject: opt.Inject = None,
    ) -> int:
        return opt.run_command(
            "allgather",
            lambda: SUITE.parse_params(tp, shapes, dtypes, dims, opt.backend_list(backends)),
            opt.run_options(correctness_only, cuda_graph, iters, warmup, seed, timeout, inject), out, resume)
