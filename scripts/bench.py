"""`make bench`: the main job on whatever hardware is here (timed on GPUs, correctness-only on CPU).

    make bench                      # every config that suits this machine, each ending in its report.md
    make bench BENCH_ARGS=--dry-run # validate them and say what would run
    make bench BENCH_ARGS="--config configs/gpt-oss-120b.yaml"  # one of them (a job with a time limit per call)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def configs(has_gpu: bool) -> list[str]:
    """The sweep that suits this machine: model configs on a GPU, the small correctness-only one on CPU."""
    if not has_gpu:
        return ["configs/ci.yaml"]
    return ["configs/deepseek-r1-mxfp4.yaml", "configs/gpt-oss-120b.yaml"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="validate the configs and say what would run")
    parser.add_argument("--config", action="append", metavar="PATH",
                        help="run this config only (repeatable) instead of the ones that suit the machine")
    options = parser.parse_args()
    from rocbench.core.platform import detect

    has_gpu = detect().has_gpu
    missing = [path for path in options.config or () if not (REPO / path).is_file()]
    if missing:
        print(f"bench: no such config: {', '.join(missing)}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if not has_gpu:
        env["TRITON_INTERPRET"] = "1"  # Triton kernels run on the CPU interpreter (tiny fp16 shapes)
    failed = 0
    for config in options.config or configs(has_gpu):
        args = ["sweep", config] + (["--dry-run"] if options.dry_run else [])
        print(f"+ rocbench {' '.join(args)}", flush=True)  # each sweep ends by writing its report.md
        failed += subprocess.call([sys.executable, "-m", "rocbench", *args], cwd=REPO, env=env) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
