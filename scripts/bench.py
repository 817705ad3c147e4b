"""`make bench`: the main job on whatever hardware is here (timed on GPUs, correctness-only on CPU)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def jobs() -> list[list[str]]:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == 0:
        # CPU: prove the gates on gloo ranks with DeepSeek-R1 decode shapes; nothing is timed.
        return [["allgather", "--tp", "2", "--correctness-only", "--shapes", "1x16160,8x16160,8x7168"]]
    work = []
    if gpus >= 2:
        work.append(["allgather", "--tp", str(min(gpus, 8)), "--cuda-graph"])
    return work


def main() -> int:
    failed = 0
    todo = jobs()
    if not todo:
        print("bench: nothing to run on this machine (one GPU and no single-GPU suite wired yet)")
        return 0
    for args in todo:
        print("+ rocbench " + " ".join(args), flush=True)
        code = subprocess.call([sys.executable, "-m", "rocbench", *args], cwd=REPO)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
