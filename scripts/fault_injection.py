"""Fault-injection matrix: every mutation against every suite where it applies; prints the catch rate.

    ROCBENCH_ALLOW_INJECT=1 python scripts/fault_injection.py [--gpu] [--out DIR]

A mutation is caught when every mutated row ends `fail`, `fault` or `timeout` as expected, rows it did
not touch still `pass`, the exit code is non-zero, and no rank process is left behind. CPU entries run
in CI (gloo ranks; Triton under the interpreter); --gpu adds the entries that need a GPU.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent

ALLGATHER = ["allgather", "--tp", "2", "--shapes", "4x64", "--dtypes", "bfloat16,int32", "--dims", "0,-1"]
MLA_CPU = ["mla", "--nhead", "16", "--batch", "2", "--ctx", "40", "--page-size", "16", "--kv-dtype", "fp16",
           "--q-dtype", "fp16", "--ctx-dist", "uniform"]
MOE_CPU = ["moe", "--experts", "4", "--topk", "2", "--hidden", "128", "--inter", "256", "--tp", "1", "--tokens", "3",
           "--x-dtype", "fp16"]
MLA_GPU = ["mla", "--nhead", "16,64", "--batch", "8", "--ctx", "1024", "--ctx-dist", "uniform", "--kv-dtype", "bf16"]
MOE_GPU = ["moe", "--model", "deepseek-r1", "--tp", "8", "--tokens", "4,16"]
ALLGATHER_GPU = ["allgather", "--tp", "2", "--shapes", "4x64,64x16160", "--dtypes", "bfloat16", "--dims", "0,-1",
                 "--correctness-only"]
CUSTOM, NCCL = ["--backends", "custom"], ["--backends", "torch"]

# (suite args, mutation, expected status of mutated rows, extra args)
CPU_MATRIX = [
    *[(ALLGATHER, m, "fail", []) for m in ("flip-byte", "nan", "ulp", "stale", "nondeterministic")],
    (ALLGATHER, "hang", "timeout", ["--timeout", "8"]),
    (ALLGATHER, "absent-rank", "timeout", ["--timeout", "8"]),
    (ALLGATHER, "crash", "fault", []),
    *[(MLA_CPU, m, "fail", []) for m in ("flip-byte", "nan", "stale", "nondeterministic")],
    (MLA_CPU, "hang", "timeout", ["--timeout", "20"]),
    (MLA_CPU, "crash@0", "fault", ["--persist"]),
    *[(MOE_CPU, m, "fail", []) for m in ("flip-byte", "nan", "ulp", "stale", "nondeterministic")],
    (MOE_CPU, "crash@0", "fault", []),
]
# The GPU matrix: what needs a real GPU (graphs, device faults) plus the real bf16 paths.
GPU_MATRIX = [
    *[(MLA_GPU, m, "fail", ["--correctness-only"]) for m in ("flip-byte", "nan", "stale", "nondeterministic")],
    (MLA_GPU, "graph-only", "fail", ["--cuda-graph", "--correctness-only"]),
    (MLA_GPU, "device-fault@0", "fault", ["--correctness-only"]),
    (MLA_GPU, "hang@1", "timeout", ["--timeout", "30", "--correctness-only"]),
    (MOE_GPU, "ulp", "fail", ["--correctness-only"]),
    (MOE_GPU, "graph-only", "fail", ["--cuda-graph", "--correctness-only"]),
    (MOE_GPU, "device-fault@0", "fault", ["--correctness-only"]),
]
# Needs >= 2 GPUs: the custom (symmetric-memory) all-gather under graphs, and faults inside NCCL collectives.
GPU_MULTI_MATRIX = [
    (ALLGATHER_GPU, "flip-byte", "fail", CUSTOM),
    (ALLGATHER_GPU, "nondeterministic", "fail", CUSTOM),
    (ALLGATHER_GPU, "graph-only", "fail", CUSTOM + ["--cuda-graph"]),
    (ALLGATHER_GPU, "absent-rank@1", "timeout", CUSTOM + ["--timeout", "20"]),
    (ALLGATHER_GPU, "device-fault@0", "fault", CUSTOM),
    *[(ALLGATHER_GPU, m, "fail", CUSTOM) for m in ("nan", "ulp", "stale")],
    (ALLGATHER_GPU, "hang@1", "timeout", CUSTOM + ["--timeout", "20"]),
    (ALLGATHER_GPU, "crash@0", "fault", CUSTOM),
    (ALLGATHER_GPU, "graph-only", "fail", NCCL + ["--cuda-graph"]),
    (ALLGATHER_GPU, "absent-rank@1", "timeout", NCCL + ["--timeout", "20"]),
    (ALLGATHER_GPU, "device-fault@0", "fault", NCCL),
]
# Not applicable, and why (reported, never silently dropped):
NOT_APPLICABLE = [
    ("mla", "ulp", "one ulp in one element is inside MLA's stated tolerance by design, and MLA has no bitwise twin"),
]


def leftover_ranks(tag: str) -> list[int]:
    """Processes still alive that inherited this entry's tag (ranks outlive nothing they should)."""
    alive = []
    for environ in glob.glob("/proc/[0-9]*/environ"):
        try:
            if f"ROCBENCH_INJECT_TAG={tag}".encode() in Path(environ).read_bytes():
                alive.append(int(environ.split("/")[2]))
        except OSError:
            continue
    return alive


def run_entry(args, mutation, expected, extra, out_dir: Path) -> dict:
    backend = extra[extra.index("--backends") + 1] if "--backends" in extra else ""
    tag = f"{os.getpid()}-{args[0]}-{backend}-{mutation}"
    env = dict(os.environ, ROCBENCH_ALLOW_INJECT="1", PYTHONPATH=str(REPO), ROCBENCH_INJECT_TAG=tag)
    if "--gpu" not in sys.argv:  # the CPU matrix is the CPU path on any machine: hide GPUs, interpret Triton
        env.update(CUDA_VISIBLE_DEVICES="", TRITON_INTERPRET="1")
    target = out_dir / "-".join(filter(None, (args[0], backend, mutation, "graph" if "--cuda-graph" in extra else "")))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rocbench", *args, *extra, "--inject", mutation, "--out", str(target)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    wall = time.monotonic() - start
    time.sleep(1)  # let the kernel reap what the run killed
    orphans = leftover_ranks(tag)
    runs = sorted(glob.glob(str(target / "*" / "results.csv")))
    frame = pd.read_csv(runs[-1], keep_default_na=False, na_values=[""]) if runs else pd.DataFrame()
    only = int(mutation.split("@")[1]) if "@" in mutation else None
    if frame.empty:
        mutated, untouched = frame, frame
    else:
        index = frame.index.to_series()
        mutated = frame if only is None else frame[index == only]
        untouched = frame.iloc[0:0] if only is None else frame[index != only]
    caught = (not mutated.empty and set(mutated["status"]) == {expected} and proc.returncode != 0
              and (untouched.empty or set(untouched["status"]) == {"pass"}) and not orphans)
    return {
        "suite": args[0], "backend": backend or "all", "mutation": mutation, "expected": expected,
        "observed": ",".join(mutated["status"]) if not frame.empty else "no rows",
        "untouched rows": ",".join(untouched["status"]) if not untouched.empty else "",
        "exit": proc.returncode, "orphans": len(orphans), "caught": "yes" if caught else "NO", "wall_s": round(wall, 1),
        "detail": (mutated["detail"].iloc[0] if not mutated.empty else proc.stderr.strip()[-200:])[:90],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="run the GPU matrix (needs a CUDA GPU)")
    parser.add_argument("--out", type=Path, default=None, help="keep run directories and write catch_rate.csv here")
    parser.add_argument("--only", default=None, help="only entries whose suite is this")
    parser.add_argument("--mutations", default=None, help="only these mutations (comma list, as written in the matrix)")
    options = parser.parse_args()
    matrix = GPU_MATRIX if options.gpu else CPU_MATRIX
    not_applicable = list(NOT_APPLICABLE)
    if options.gpu:
        import torch

        if torch.cuda.device_count() >= 2:
            matrix = matrix + GPU_MULTI_MATRIX
        else:
            not_applicable.append(("allgather", "GPU entries", f"need >= 2 GPUs, this machine has {torch.cuda.device_count()}"))
    else:
        sys.path.insert(0, str(REPO))
        from rocbench.core.interpreter import interpreter_problem_in_child

        problem = interpreter_problem_in_child()
        if problem:  # the Triton suites cannot run on the CPU here; say so rather than count interpreter faults
            matrix = [m for m in matrix if m[0][0] not in ("mla", "moe")]
            not_applicable.append(("mla, moe", "CPU entries", problem))
    if options.only:
        matrix = [m for m in matrix if m[0][0] == options.only]
    if options.mutations:
        wanted = set(options.mutations.split(","))
        matrix = [m for m in matrix if m[1] in wanted]
    out_dir = options.out or Path(tempfile.mkdtemp(prefix="rocbench-inject-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [run_entry(*entry, out_dir) for entry in matrix]
    frame = pd.DataFrame(rows)
    frame.to_csv(out_dir / "catch_rate.csv", index=False)
    print(tabulate(frame, headers="keys", tablefmt="github", showindex=False))
    for suite, mutation, why in not_applicable:
        print(f"n/a: {suite} {mutation}: {why}")
    caught = int((frame["caught"] == "yes").sum())
    print(f"catch rate: {caught}/{len(frame)} = {100.0 * caught / len(frame):.0f}%")
    return 0 if caught == len(frame) else 1


if __name__ == "__main__":
    sys.exit(main())
