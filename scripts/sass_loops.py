"""Offline sm_90 SASS of rocbench's Triton kernels: registers, local memory and an instruction histogram of every
loop, the evidence behind the kernel notes in results/examples. Nothing runs. It needs Triton with its NVIDIA backend
(ptxas, cuobjdump), as the device has it (Triton 3.6); a CPU box can install that wheel beside the venv:

    pip install --target /tmp/t36 triton==3.6.0
    PYTHONPATH=/tmp/t36:. .venv/bin/python scripts/sass_loops.py moe "gpt-oss-120b TP1 pad" 64 --kernel gemm1
    PYTHONPATH=/tmp/t36:. .venv/bin/python scripts/sass_loops.py moe "gpt-oss-120b TP1 pad" 64 '{"f16_gemm1": true}' --layout-bytes
    PYTHONPATH=/tmp/t36:. .venv/bin/python scripts/sass_loops.py mla bf16 32 64 '{"tokens_as_m": true}' --persistent

The compile runs with a CPU device, where the NVIDIA-only paths (PTX decodes, the cache prefetch, dependent launches)
are off; they are switched on as on an sm_90 GPU. MoE calls vouch for scale bytes up to 127 (the one-multiply decode)
and live w13 scales 110..127 (the fp16 GEMM1). Shapes: tests/compile_only.MOE_SHAPES."""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHORT_LOOP = 40  # loops below this many instructions (routing, reductions) are left out


@dataclasses.dataclass
class Loop:
    instructions: int
    histogram: collections.Counter


@dataclasses.dataclass
class KernelSass:
    name: str
    registers: str
    stack: str
    local: str
    instructions: int
    loops: list[Loop]

    def lines(self, top: int = 16) -> list[str]:
        out = [f"{self.name}: {self.registers} registers, stack {self.stack}, local {self.local}, "
               f"{self.instructions} instructions"]
        for loop in self.loops:
            ops = ", ".join(f"{op} {n}" for op, n in loop.histogram.most_common(top))
            out.append(f"  loop of {loop.instructions}: {ops}")
        return out


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def read_cubin(cubin: Path) -> KernelSass:
    """A compiled kernel's resources and its loops (a backward branch closes one)."""
    sass = subprocess.run([_tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    usage = subprocess.run([_tool("cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True,
                           check=True).stdout
    code = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4,5})\*/\s+(.*?);", sass)]
    loops = []
    for address, instruction in code:
        target = re.search(r"BRA.*?0x([0-9a-f]+)", instruction)
        if target and int(target.group(1), 16) < address:
            body = [ins for a, ins in code if int(target.group(1), 16) <= a <= address]
            ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", ins).split()[0].split(".")[0] for ins in body)
            if len(body) >= SHORT_LOOP:
                loops.append(Loop(len(body), ops))

    def usage_of(key: str) -> str:
        found = re.search(key + r":(\d+)", usage)
        return found.group(1) if found else "?"

    return KernelSass(cubin.stem, usage_of("REG"), usage_of("STACK"), usage_of("LOCAL"), len(code), loops)


def compile_moe(shape_name: str, tokens: int, overrides: dict, retiled: bool) -> None:
    from rocbench.kernels.moe_plan import heuristic_plan
    from tests.compile_only import MOE_SHAPES, compile_only, moe_call, nvidia_paths

    shape = MOE_SHAPES[shape_name]
    experts, topk, hidden, inter = shape[:4]
    plan = heuristic_plan(tokens, topk, experts, inter, hidden, 132, True, retiled=retiled)
    config = dataclasses.replace(plan, **overrides)
    print(config)
    with nvidia_paths(), compile_only("sm90"):
        moe_call("sm90", shape, tokens, config, scale_max=127, w13_live_scales=(110, 127))


def compile_mla(kv: str, nhead: int, batch: int, persistent: bool, overrides: dict) -> None:
    import torch

    from rocbench.kernels import mla_config
    from rocbench.suites.mla.backends import TritonMla
    from tests.compile_only import _mla_case, compile_only, nvidia_paths

    kv_dtype = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}[kv]
    config = dataclasses.replace(mla_config.builtin_config(kv_dtype, nhead, 1, batch, persistent=persistent),
                                 **overrides)
    print(config)
    with nvidia_paths(), compile_only("sm90"):
        TritonMla.prepare_with(*_mla_case("sm90", kv_dtype, nhead, 1, batch, persistent), config, "candidate").run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    families = parser.add_subparsers(dest="family", required=True)
    moe = families.add_parser("moe", help="the a16w4 MoE kernels of a shape and token count")
    moe.add_argument("shape", help='a tests/compile_only.MOE_SHAPES name, e.g. "gpt-oss-120b TP1 pad"')
    moe.add_argument("tokens", type=int)
    moe.add_argument("--layout-bytes", action="store_true",
                     help="start from the plan that reads AITER's layouts (default: the backend's, fragment order)")
    mla = families.add_parser("mla", help="the MLA decode kernels of a case (qlen 1)")
    mla.add_argument("kv", choices=("bf16", "fp8"))
    mla.add_argument("nhead", type=int)
    mla.add_argument("batch", type=int)
    mla.add_argument("--persistent", action="store_true")
    for sub in (moe, mla):
        sub.add_argument("overrides", nargs="?", default="{}", help="config fields to change, as JSON")
        sub.add_argument("--kernel", default="", help="report only kernels whose name contains this")
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))
    cache = tempfile.mkdtemp(prefix="sass-loops-")
    os.environ["TRITON_CACHE_DIR"] = cache  # a fresh cache: every kernel of this call compiles, and only they
    overrides = json.loads(options.overrides)
    if options.family == "moe":
        compile_moe(options.shape, options.tokens, overrides, retiled=not options.layout_bytes)
    else:
        compile_mla(options.kv, options.nhead, options.batch, options.persistent, overrides)
    for cubin in sorted(Path(cache).rglob("*.cubin")):
        if options.kernel in cubin.stem:
            print("\n".join(read_cubin(cubin).lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
