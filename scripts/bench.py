"""`make bench`: the main job on whatever hardware is here (timed on GPUs, correctness-only on CPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def configs() -> list[str]:
    """The sweep that suits this machine: model configs on a GPU, the small correctness-only one on CPU."""
    if not torch.cuda.is_available():
        return ["configs/ci.yaml"]
    return ["configs/deepseek-r1-mxfp4.yaml", "configs/gpt-oss-120b.yaml"]


def main() -> int:
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"  # Triton kernels run on the CPU interpreter (tiny fp16 shapes)
    failed = 0
    for config in configs():
        print(f"+ rocbench sweep {config}", flush=True)  # each sweep ends by writing its report.md
        failed += subprocess.call([sys.executable, "-m", "rocbench", "sweep", config], cwd=REPO, env=env) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
