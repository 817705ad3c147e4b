"""Options every suite command shares, and the one place user errors become exit code 2."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from rocbench.core.axes import split_list
from rocbench.core.harness import RunOptions

Backends = Annotated[Optional[str], typer.Option("--backends", help="Comma list of backends to run (default: every backend available on this platform; the baseline always runs first).")]
CorrectnessOnly = Annotated[bool, typer.Option("--correctness-only", help="Gate every backend, time nothing; exit 0 only if every case passed.")]
CudaGraph = Annotated[bool, typer.Option("--cuda-graph/--no-cuda-graph", help="Also capture each backend in a CUDA graph (inputs at non-zero offsets) and check every replay with fresh data.")]
Iters = Annotated[int, typer.Option("--iters", min=1, help="Timed samples per case (each sample replays a graph of many calls).")]
Warmup = Annotated[int, typer.Option("--warmup", min=0, help="Untimed graph replays before the samples.")]
Out = Annotated[Path, typer.Option("--out", help="Directory that receives <suite>-<timestamp>/ with results.csv, meta.json and plots.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of every generated input.")]
Timeout = Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds one (case, backend) may take before it is recorded as a timeout.")]
Resume = Annotated[Optional[Path], typer.Option("--resume", help="Finish an interrupted run in this directory: only the missing (case, backend) rows run.")]
Inject = Annotated[Optional[str], typer.Option("--inject", hidden=True, help="Test only: mutate backend outputs (needs ROCBENCH_ALLOW_INJECT=1).")]


def backend_list(text: str | None) -> list[str] | None:
    return [name.lower() for name in split_list(text, "--backends")] if text else None


def run_options(correctness_only: bool, cuda_graph: bool, iters: int, warmup: int, seed: int, timeout: float,
                inject: str | None) -> RunOptions:
    return RunOptions(correctness_only=correctness_only, cuda_graph=cuda_graph, iters=iters, warmup=warmup,
                      seed=seed, timeout_s=timeout, inject=inject)


def run_command(suite_name: str, make_params: Callable[[], dict], opts: RunOptions, out: Path,
                resume: Path | None = None) -> int:
    """Validate, then sweep. Input errors propagate as InputError; rocbench.cli turns them into exit 2."""
    from rocbench.core.sweep import run_suite
    from rocbench.suites import load_suite

    suite = load_suite(suite_name)
    params = make_params()
    return run_suite(suite, params, opts, out, resume=resume)
