"""Digests of the inputs every suite builds for a fixed set of cases (each rank's buffers after fill, and the expected
output): tests/data/input_digests.json holds what a2c4e27, the main before the typed core, built, so a change that moves
inputs (a seed taken from the id's text, a renamed axis) fails test_inputs_stay_bitwise_what_they_were. (Remade on
2026-12-05 on another machine, from 11eb0b5, which had passed against a2c4e27's digests where they were made, and
which builds there the same bits as that day's HEAD.)

    python -m tests.input_digests <commit> > tests/data/input_digests.json   # only for a deliberate change

They hold on the torch that made them and where its CPU random numbers and float math give the same bits (both
recorded in the file: `environment_probe`). A machine with another CPU or math library draws other normals from the
same seed (seen on 2026-12-05: 11eb0b5, whose digests had passed where they were made, built other MLA and MoE inputs
on an AMX-capable Xeon, where HEAD built the same bits as 11eb0b5), so there the digests cannot say anything.
"""
from __future__ import annotations

import hashlib
import json
import sys

import torch

CASES = {
    "allgather": [{"tp": tp, "shapes": "2x8,3x40,1x7", "dtypes": None, "dims": "0,-1"} for tp in ("2", "3")],
    "mla": [{"nhead": "16,64", "batch": "1,3", "ctx": "40", "ctx_dist": "skewed,random",
             "kv_dtype": "bf16,fp8,fp16", "q_dtype": "bf16,fp16", "page_size": "16", "qlen": "1,2"}],
    "moe": [{"experts": "4", "topk": "2", "hidden": "128", "inter": "256", "tp": "1,2", "tokens": "1,3",
             "layout": "interleave,separated", "x_dtype": "bf16,fp16", "activation": activation}
            for activation in ("silu", "swiglu")],
}


def tensors(obj, depth: int = 3):
    """Every tensor an io object holds (nested objects and dicts too), in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict) and depth:
        for key in sorted(obj):
            yield from tensors(obj[key], depth - 1)
    elif hasattr(obj, "__dict__") and depth:
        for key in sorted(vars(obj)):
            yield from tensors(vars(obj)[key], depth - 1)


def digest(*objects) -> str:
    sha = hashlib.sha256()
    for obj in objects:
        for tensor in tensors(obj):
            sha.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
            sha.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]


def environment_probe() -> str:
    """What this machine's torch makes of a fixed seed and a few float operations on the CPU, hashed: equal probes
    mean the inputs' random draws and the expected outputs' float math give the same bits here."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, generator=g)
    square = x.reshape(64, 64)
    return digest(x, torch.rand(4096, generator=g), x.exp(), square @ square.T, torch.softmax(square, dim=-1),
                  x.to(torch.bfloat16))


def input_digests() -> dict:
    from rocbench.core import registry
    from rocbench.core.cli.command import suite_params
    from rocbench.core.platform import detect
    from rocbench.core.suite import RankContext

    registry.discover("rocbench.suites")
    platform = detect()
    out: dict = {}
    for name, param_sets in CASES.items():
        suite = registry.get(name)
        for raw in param_sets:
            params = suite_params(suite, raw)
            world = suite.world_size(params)
            for case in suite.cases(params):
                for rank in range(world):
                    ctx = RankContext(rank, world, torch.device("cpu"), platform, 0)
                    io = suite.build_io(case, ctx)
                    expected = suite.fill(case, io, ctx, data_seed=0)
                    out.setdefault(name, {})[f"{case.id}#{rank}"] = digest(io, expected)
    return out


if __name__ == "__main__":
    made_with = {"torch": torch.__version__, "probe": environment_probe(),
                 "commit": sys.argv[1] if len(sys.argv) > 1 else "?"}
    json.dump({"made_with": made_with, **input_digests()}, sys.stdout, indent=1)
    print()
