"""Batch invariance: is one request's output bitwise the same whatever else runs in its batch?

Deterministic inference (SGLang's --enable-deterministic-inference) admits only kernels whose result for
a request does not depend on the rest of the batch. A suite that can answer states probes: the same
request (same inputs) placed in several batches -- alone, at another position, beside other requests,
at other batch sizes. The first probe is the reference: the request inside the case's own batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from rocbench.core import gate
from rocbench.core.axes import Case

YES, NO, NOT_APPLICABLE, SKIPPED = "yes", "no", "n/a", "skipped"


@dataclass
class BatchProbe:
    """The probe request in one batch: how the batch differs, its case (what the backend prepares for), and
    how to build it: io with the probe's inputs copied in, and a function from the call's outputs to the
    probe's rows."""

    perturbation: str
    case: Case
    build: Callable[[], tuple[Any, Callable[[dict], dict]]]


def first_difference(reference: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str | None:
    """None if every output is bitwise equal; else the output, how many elements differ and the first one."""
    for name, want in reference.items():
        verdict = gate.exact(got[name], want)
        if not verdict.passed:
            detail = verdict.detail
            if "first at" in detail and got[name].shape == want.shape:
                index = detail.split("first at ")[1].split(":")[0]
                at = tuple(int(i) for i in index.strip("()").split(",") if i.strip())
                detail += f" ({float(got[name][at]):.7g} vs {float(want[at]):.7g})"
            return f"{name}: {detail}" if len(reference) > 1 else detail
    return None
