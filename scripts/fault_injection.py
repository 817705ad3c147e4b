"""Fault-injection matrix: every mutation against every suite where it applies; prints the catch rate.

    ROCBENCH_ALLOW_INJECT=1 python scripts/fault_injection.py [--gpu] [--out DIR]

Each run puts mutation i on case i (`--inject flip-byte@0,nan@1,...`). A mutation is caught when its row
ends `fail`, `fault` or `timeout` as expected, the rows no mutation touched still `pass`, the exit code is
non-zero, and no rank process is left behind. CPU entries run
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent

ALLGATHER = ["allgather", "--tp", "2", "--shapes", "4x64,2x8,3x16", "--dtypes", "bfloat16,int32", "--dims", "0,-1"]
MLA_CPU = ["mla", "--nhead", "16", "--batch", "1,2,3", "--ctx", "40", "--page-size", "16", "--kv-dtype", "fp16",
           "--q-dtype", "fp16", "--ctx-dist", "uniform"]
MOE_CPU = ["moe", "--experts", "2", "--topk", "1", "--hidden", "128", "--inter", "128", "--tp", "1", "--tokens", "1,2,3,4",
           "--x-dtype", "fp16"]
MLA_GPU = ["mla", "--nhead", "16,64", "--batch", "4,8", "--ctx", "1024", "--ctx-dist", "uniform", "--kv-dtype", "bf16"]
MOE_GPU = ["moe", "--model", "deepseek-r1", "--tp", "8", "--tokens", "4,16"]
ALLGATHER_GPU = ["allgather", "--tp", "2", "--shapes", "4x64,64x16160,8x7168", "--dtypes", "bfloat16,float16",
                 "--dims", "0,-1", "--correctness-only"]
CUSTOM, NCCL = ["--backends", "custom"], ["--backends", "torch"]
FAIL = ("flip-byte", "nan", "ulp", "stale", "nondeterministic")

# One run per (suite, options): mutation i targets case i, so one run proves every mutation in it is
# caught; the cases after the last mutation must still pass. (suite args, extra args, [(mutation, expected)])
CPU_RUNS = [
    (ALLGATHER, ["--timeout", "8"],
     [*[(m, "fail") for m in FAIL], ("hang", "timeout"), ("absent-rank", "timeout"), ("crash", "fault")]),
    # (a hang is the harness's business, proven on the all-gather here and on MLA in the GPU runs)
    (MLA_CPU, [], [*[(m, "fail") for m in FAIL if m != "ulp"], ("crash", "fault")]),
    (MOE_CPU, [], [*[(m, "fail") for m in FAIL], ("crash", "fault")]),
]
# The GPU runs: what needs a real GPU (graphs, device faults) plus the real bf16 paths.
GPU_RUNS = [
    (MLA_GPU, ["--correctness-only", "--cuda-graph", "--timeout", "20"],
     [*[(m, "fail") for m in FAIL if m != "ulp"], ("graph-only", "fail"), ("device-fault", "fault"),
      ("hang", "timeout")]),
    (MOE_GPU, ["--correctness-only", "--cuda-graph"], [("ulp", "fail"), ("graph-only", "fail"),
                                                       ("device-fault", "fault")]),
]
# Needs >= 2 GPUs: the custom (symmetric-memory) all-gather under graphs, and faults inside NCCL collectives.
GPU_MULTI_RUNS = [
    (ALLGATHER_GPU, CUSTOM + ["--cuda-graph", "--timeout", "20"],
     [*[(m, "fail") for m in FAIL], ("graph-only", "fail"), ("absent-rank", "timeout"), ("device-fault", "fault"),
      ("hang", "timeout"), ("crash", "fault")]),
    (ALLGATHER_GPU, NCCL + ["--cuda-graph", "--timeout", "20"],
     [("graph-only", "fail"), ("absent-rank", "timeout"), ("device-fault", "fault")]),
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


def run_entries(args, extra, mutations, out_dir: Path) -> list[dict]:
    """One run with mutation i on case i; a row per mutation: caught when its case ends as expected, the cases
    no mutation touched pass, the exit code is non-zero and no rank process is left behind."""
    backend = extra[extra.index("--backends") + 1] if "--backends" in extra else ""
    tag = f"{os.getpid()}-{args[0]}-{backend}"
    env = dict(os.environ, ROCBENCH_ALLOW_INJECT="1", PYTHONPATH=str(REPO), ROCBENCH_INJECT_TAG=tag)
    if "--gpu" not in sys.argv:  # the CPU matrix is the CPU path on any machine: hide GPUs, interpret Triton
        env.update(ROCBENCH_PLATFORM="cpu", CUDA_VISIBLE_DEVICES="", TRITON_INTERPRET="1")
    target = out_dir / "-".join(filter(None, (args[0], backend)))
    spec = ",".join(f"{mutation}@{i}" for i, (mutation, _) in enumerate(mutations))
    start = time.monotonic()
    # the matrix tests the gate's other checks: the batch-invariance probes (tested on their own) only add time
    proc = subprocess.run([sys.executable, "-m", "rocbench", *args, *extra, "--skip-batch-probes", "--inject", spec,
                           "--out", str(target)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    wall = time.monotonic() - start
    time.sleep(1)  # let the kernel reap what the run killed
    orphans = leftover_ranks(tag)
    runs = sorted(glob.glob(str(target / "*" / "results.csv")))
    frame = pd.read_csv(runs[-1], keep_default_na=False, na_values=[""]) if runs else pd.DataFrame()
    untouched = frame.iloc[len(mutations):] if not frame.empty else frame
    clean = (not untouched.empty and set(untouched["status"]) == {"pass"} and proc.returncode != 0 and not orphans)
    rows = []
    for i, (mutation, expected) in enumerate(mutations):
        row = frame.iloc[i] if i < len(frame) else None
        observed = row["status"] if row is not None else "no row"
        rows.append({
            "suite": args[0], "backend": backend or "all", "mutation": mutation, "case": i, "expected": expected,
            "observed": observed, "caught": "yes" if clean and observed == expected else "NO",
            "untouched rows": ",".join(untouched["status"]) if not untouched.empty else "none",
            "exit": proc.returncode, "orphans": len(orphans), "run_wall_s": round(wall, 1),
            "detail": (row["detail"] if row is not None else proc.stderr.strip()[-200:])[:90],
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="run the GPU matrix (needs a CUDA GPU)")
    parser.add_argument("--out", type=Path, default=None, help="keep run directories and write catch_rate.csv here")
    parser.add_argument("--only", default=None, help="only entries whose suite is this")
    parser.add_argument("--mutations", default=None, help="only these mutations (comma list, as written in the matrix)")
    parser.add_argument("--jobs", type=int, default=3, help="runs at a time (they mostly wait on timeouts and ranks)")
    options = parser.parse_args()
    matrix = GPU_RUNS if options.gpu else CPU_RUNS
    not_applicable = list(NOT_APPLICABLE)
    if options.gpu:
        import torch

        if torch.cuda.device_count() >= 2:
            matrix = matrix + GPU_MULTI_RUNS
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
        matrix = [(args, extra, [m for m in mutations if m[0] in wanted]) for args, extra, mutations in matrix]
        matrix = [entry for entry in matrix if entry[2]]
    out_dir = options.out or Path(tempfile.mkdtemp(prefix="rocbench-inject-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        done = list(pool.map(lambda entry: run_entries(*entry, out_dir), matrix))
    rows = [row for entry_rows in done for row in entry_rows]
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
