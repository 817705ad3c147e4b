"""`make bench`: the main job on whatever hardware is here (timed on GPUs, correctness-only on CPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def jobs() -> list[list[str]]:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == 0:
        # CPU: prove the gates (gloo ranks; Triton under the interpreter on tiny fp16 shapes); nothing is timed.
        return [
            ["allgather", "--tp", "2", "--correctness-only", "--shapes", "1x16160,8x16160,8x7168"],
            ["mla", "--nhead", "16", "--batch", "2", "--ctx", "64", "--page-size", "16", "--kv-dtype", "fp16",
             "--q-dtype", "fp16", "--correctness-only"],
            ["moe", "--experts", "4", "--topk", "2", "--hidden", "128", "--inter", "256", "--tp", "1,2",
             "--tokens", "4", "--x-dtype", "fp16", "--correctness-only"],
        ]
    work = [
        ["mla", "--cuda-graph"],
        ["moe", "--model", "gpt-oss-120b", "--pad", "--tp", "1,2,4,8", "--tokens", "1,16,64,1024", "--cuda-graph"],
        ["moe", "--model", "deepseek-r1", "--tp", "8", "--tokens", "1,16,64,1024", "--cuda-graph"],
    ]
    if gpus >= 2:
        work.insert(0, ["allgather", "--tp", str(min(gpus, 8)), "--cuda-graph"])
    return work


def main() -> int:
    failed = 0
    cpu_only = not torch.cuda.is_available()
    env = dict(os.environ, TRITON_INTERPRET="1") if cpu_only else None
    for args in jobs():
        print("+ rocbench " + " ".join(args), flush=True)
        code = subprocess.call([sys.executable, "-m", "rocbench", *args], cwd=REPO, env=env)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
