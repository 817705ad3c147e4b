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

from rocbench.core.harness import gate
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
    """None if every output is bitwise equal; else the output, how many elements differ and the first one,
    with both values."""
    for name, want in reference.items():
        same_layout = got[name].shape == want.shape and got[name].dtype == want.dtype
        mismatch = gate.first_mismatch(got[name], want) if same_layout else None
        if same_layout and mismatch is None:
            continue
        detail = gate.exact(got[name], want).detail  # only on a difference: its words, as the gate says them
        if mismatch is not None:
            detail += f" ({float(got[name][mismatch[1]]):.7g} vs {float(want[mismatch[1]]):.7g})"
        return f"{name}: {detail}" if len(reference) > 1 else detail
    return None
