"""Fault injection for proving the gate works: test-only mutations of a backend's output.

Reachable only through the hidden `--inject` option AND the environment variable
ROCBENCH_ALLOW_INJECT=1, so a production run can never be mutated by accident.
"""
from __future__ import annotations

import os
import time

import torch

from rocbench.core.errors import InputError

ENV_FLAG = "ROCBENCH_ALLOW_INJECT"

MUTATIONS = {
    "flip-byte": "flip one high bit of one output element on the last rank",
    "nan": "write NaN (or the max integer) into one output element",
    "ulp": "move one output element by one unit in the last place",
    "stale": "right on the first call only; later calls return the first output",
    "graph-only": "right in eager mode, wrong when captured in a CUDA graph",
    "nondeterministic": "every other call perturbs one element",
    "hang": "never returns",
    "absent-rank": "the last rank never joins the collective (it stalls); its peers wait for it",
    "crash": "kills its own process (a fault that takes the rank down)",
    "device-fault": "GPU only: a kernel stores far out of bounds (an illegal-address fault kills the context)",
}


def parse(spec: str) -> dict[int | None, str]:
    """'flip-byte' mutates every case; 'device-fault@0' only case 0; 'nan@0,hang@3' one mutation per case,
    so one run proves several mutations are caught. Returns {case index or None: mutation}."""
    plan: dict[int | None, str] = {}
    for item in spec.split(","):
        name, _, index = item.strip().partition("@")
        if index and not index.isdigit():
            raise InputError(f"--inject: {item!r}: the part after @ must be a case index")
        if name not in MUTATIONS:
            raise InputError(f"--inject: unknown mutation {name!r} (choose from {', '.join(MUTATIONS)})")
        key = int(index) if index else None
        if key in plan or (key is None and len(spec.split(",")) > 1):
            raise InputError(f"--inject: {spec!r}: one mutation per case, and a mutation for every case stands alone")
        plan[key] = name
    return plan


def check_allowed(spec: str | None) -> None:
    if spec is None:
        return
    if os.environ.get(ENV_FLAG) != "1":
        raise InputError(f"--inject is a test-only option: set {ENV_FLAG}=1 to use it")
    parse(spec)


def _perturb(out: torch.Tensor, how: str) -> None:
    flat = out.view(-1)
    index = flat.numel() // 2
    if how == "nan":
        if out.dtype.is_floating_point:
            flat[index] = float("nan")
        elif out.dtype == torch.bool:
            flat[index] = ~flat[index]
        else:
            flat[index] = torch.iinfo(out.dtype).max
    elif how == "ulp":
        bits = flat.view(torch.uint8) if out.element_size() == 1 else flat.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[out.element_size()])
        bits[index] += 1
    else:  # one flipped bit in the most significant byte (an exponent bit for floats: a large error)
        raw = flat.view(torch.uint8)
        raw[index * out.element_size() + out.element_size() - 1] ^= 0x40


def wild_store(out: torch.Tensor) -> None:
    """Store one element 1 TiB past a real buffer: an illegal-address fault on the GPU."""
    if out.device.type != "cuda":
        raise RuntimeError("device-fault needs a GPU")
    import triton
    import triton.language as tl

    @triton.jit
    def _store_out_of_bounds(ptr):
        tl.store(ptr + (1 << 40), tl.zeros((), dtype=ptr.dtype.element_ty))

    _store_out_of_bounds[(1,)](out.view(-1))


def wrap(run, spec: str | None, rank: int, world_size: int, case_index: int = 0):
    if spec is None:
        return run
    plan = parse(spec)
    mutation = plan.get(None) or plan.get(case_index)
    if mutation is None:
        return run
    target_rank = world_size - 1
    calls = {"n": 0}
    first: dict[str, torch.Tensor] = {}

    def mutated():
        calls["n"] += 1
        if mutation == "hang" or (mutation == "absent-rank" and rank == target_rank):
            while True:  # a spinning kernel, or a rank that never joins: its peers wait in the collective
                time.sleep(1)
        if mutation == "crash" and rank == target_rank:
            os._exit(17)
        if mutation == "device-fault" and rank == target_rank:
            wild_store(first_output(run()))
        result = run()  # always run: a collective must still be entered by every rank
        out = first_output(result)
        if rank != target_rank:
            return result
        if mutation == "stale":
            if "out" in first:
                out.copy_(first["out"])  # later calls see the first call's result
            else:
                first["out"] = out.clone()
        elif mutation == "graph-only":
            if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
                _perturb(out, "flip")
        elif mutation == "nondeterministic":
            if calls["n"] % 2 == 0:
                _perturb(out, "ulp")
        else:
            _perturb(out, mutation)
        return result

    return mutated


def first_output(result) -> torch.Tensor:
    """The tensor a mutation changes: the call's (first) output."""
    return result if isinstance(result, torch.Tensor) else next(iter(result.values()))
