"""Shared test helpers: run the CLI in-process (Typer's CliRunner) or, where a separate process is the
point, as a subprocess; read what a run wrote."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


# The CLI tests are the CPU path (gloo ranks, Triton interpreter) on every machine: on a GPU box they would
# otherwise become GPU runs and fail for want of a second GPU. ROCBENCH_PLATFORM=cpu holds in this process
# even after CUDA was initialised here (hiding devices would not); the rank processes start with the GPUs
# hidden as well. GPU tests pass on_gpu=True.
CPU_ONLY = {"ROCBENCH_PLATFORM": "cpu", "CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1"}


def cli_env(env: dict | None = None, on_gpu: bool = False) -> dict:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    if not on_gpu:
        full_env.update(CPU_ONLY)
    full_env.update(env or {})
    return full_env


# Suite commands skip the batch-invariance probes unless a test asks for them (probes=True): under the CPU
# interpreter they multiply a run's work, and most CLI tests test something else.
SUITE_COMMANDS = ("allgather", "mla", "moe", "addrmsnorm")


def invoke(*args: str, env: dict | None = None, on_gpu: bool = False, probes: bool = False) -> SimpleNamespace:
    """`rocbench ARGS` in this process; rank processes it starts see `env`. Returns returncode/stdout/stderr."""
    from typer.testing import CliRunner

    from rocbench.cli import app
    from rocbench.core import platform

    if args and args[0] in SUITE_COMMANDS and not probes and "--skip-batch-probes" not in args:
        args = (*args, "--skip-batch-probes")

    extra = {"COLUMNS": "200", **({} if on_gpu else CPU_ONLY), **(env or {})}
    platform.detect.cache_clear()  # the platform may be simulated (ROCBENCH_SIMULATE_PLATFORM)
    try:
        result = CliRunner().invoke(app, list(args), env=extra, catch_exceptions=False)
    finally:
        platform.detect.cache_clear()
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def rocbench(*args: str, env: dict | None = None, timeout: float = 600, on_gpu: bool = False) -> subprocess.CompletedProcess:
    """`python -m rocbench ARGS` as its own process: for what only a separate process shows (signals,
    concurrent runs, the console entry point)."""
    return subprocess.run([sys.executable, "-m", "rocbench", *args], capture_output=True, text=True,
                          env=cli_env(env, on_gpu), timeout=timeout, cwd=REPO)


def latest_run(out_dir: Path, suite: str) -> Path:
    runs = sorted(glob.glob(str(out_dir / f"{suite}-*")))
    assert runs, f"no {suite} run under {out_dir}"
    return Path(runs[-1])


def results(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results.csv", keep_default_na=False, na_values=[""])


def meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "meta.json").read_text())


def needs_interpreter(on_cpu_only: bool = False):
    """Skip (saying why) where the Triton interpreter is broken; on_cpu_only: the test runs on the GPU when there is one."""
    import pytest
    import torch

    from rocbench.core.interpreter import interpreter_problem_in_child

    problem = None if on_cpu_only and torch.cuda.is_available() else interpreter_problem_in_child()
    return pytest.mark.skipif(problem is not None, reason=f"Triton interpreter unusable here: {problem}")


def processes_with_env(name: str, value: str) -> list[int]:
    """PIDs whose environment holds name=value: what a run started with it has left alive."""
    needle = f"{name}={value}".encode()

    def holds(environ: Path) -> bool:
        try:
            return needle in environ.read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            return False
    return [int(environ.parent.name) for environ in Path("/proc").glob("[0-9]*/environ") if holds(environ)]


def wait_until_gone(name: str, value: str, timeout: float = 10.0) -> list[int]:
    """Processes still tagged name=value after up to `timeout` s (the kernel reaps killed ones quickly)."""
    import time

    deadline = time.monotonic() + timeout
    while (left := processes_with_env(name, value)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
