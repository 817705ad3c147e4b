"""Batch-invariance probes for all-gather: row 0 of every rank's input, gathered alone and inside a taller
input. A copy cannot depend on the rest of the batch; the probe checks that the backend's copy does not
either (e.g. a path chosen by size that drops or reorders rows)."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from rocbench.core.axes import Case
from rocbench.core.harness.invariance import BatchProbe
from rocbench.core.suite import RankContext

TALLER = 4  # rows of the taller batch, in multiples of the case's


def probe_rows(case: Case, rows: int):
    """Every rank's row 0 in the gathered output."""
    if case["dim"] == 0:
        return lambda outputs: {k: t.reshape(case["tp"], rows, *t.shape[1:])[:, 0] for k, t in outputs.items()}
    return lambda outputs: {k: t[0] for k, t in outputs.items()}


def probe_batch(case: Case, base, ctx: RankContext, out_shape: Callable[[Case], tuple[int, ...]]):
    """This rank's row 0 on top of random rows, in a fresh input of the variant case's shape."""
    shape = case["shape"]
    inp = torch.empty(shape, dtype=base.inp.dtype, device=ctx.device)
    inp.view(torch.uint8).random_(0, 256, generator=torch.Generator(device=ctx.device).manual_seed(ctx.rank + 1))
    inp[0] = base.inp[0]
    out = torch.empty(out_shape(case), dtype=base.inp.dtype, device=ctx.device)
    return dataclasses.replace(base, inp=inp, out=out), probe_rows(case, shape[0])


def allgather_probes(case: Case, io, ctx: RankContext, out_shape: Callable[[Case], tuple[int, ...]]) -> list[BatchProbe]:
    shape = case["shape"]
    if len(shape) < 2:
        return []  # a 1-D input has no rows to hold a request
    probes = [BatchProbe(f"in its {shape[0]} rows, first", case, lambda: (io, probe_rows(case, shape[0])))]
    for rows, name in ((1, "alone"), (TALLER * shape[0], f"first of {TALLER * shape[0]} rows")):
        if rows != shape[0]:
            variant = case.replaced(shape=(rows, *shape[1:]))
            probes.append(BatchProbe(name, variant, lambda variant=variant: probe_batch(variant, io, ctx, out_shape)))
    return probes
