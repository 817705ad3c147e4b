"""Correctness verdicts: exact (bitwise) or within a stated tolerance."""
from __future__ import annotations

import torch

from rocbench.core.suite import Tolerance, Verdict

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def as_bits(t: torch.Tensor) -> torch.Tensor:
    """View a tensor's storage as same-width integers, so NaN payloads and -0.0 compare exactly."""
    t = t.contiguous()
    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    return t.view(_INT_VIEW[t.element_size()])


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(as_bits(a), as_bits(b))


def first_mismatch(out: torch.Tensor, expected: torch.Tensor) -> tuple[int, tuple[int, ...]] | None:
    """(how many elements differ bitwise, the index of the first), or None when all agree (same shape and dtype)."""
    diff = as_bits(out).cpu() != as_bits(expected).cpu()
    n_bad = int(diff.sum())
    if n_bad == 0:
        return None
    flat = diff.flatten().nonzero()[0].item()
    return n_bad, tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))


def exact(out: torch.Tensor, expected: torch.Tensor) -> Verdict:
    """Bitwise comparison; the detail names how many elements differ and the first one."""
    if out.shape != expected.shape or out.dtype != expected.dtype:
        return Verdict(False, "exact", f"output {tuple(out.shape)} {out.dtype} != expected {tuple(expected.shape)} {expected.dtype}")
    mismatch = first_mismatch(out, expected)
    if mismatch is None:
        return Verdict(True, "exact", "", max_abs_err=0.0, tolerance="bitwise")
    n_bad, index = mismatch
    width, mask = out.element_size() * 2, (1 << (8 * out.element_size())) - 1
    g = int(as_bits(out[index]).cpu()) & mask
    w = int(as_bits(expected[index]).cpu()) & mask
    return Verdict(
        False, "exact",
        f"{n_bad}/{out.numel()} elements differ, first at {index}: got 0x{g:0{width}x} expected 0x{w:0{width}x}",
        tolerance="bitwise",
    )


def tolerance(out: torch.Tensor, reference: torch.Tensor, tol: Tolerance) -> Verdict:
    """|out - ref| <= atol + rtol*|ref| everywhere and cosine >= min_cosine; NaN never passes."""
    atol, rtol, min_cosine, stated = tol.atol, tol.rtol, tol.min_cosine, tol.describe()
    if out.shape != reference.shape:
        return Verdict(False, "tolerance", f"output {tuple(out.shape)} != reference {tuple(reference.shape)}", tolerance=stated)
    o = out.detach().double().cpu()  # float64: a cosine over millions of elements stays <= 1
    r = reference.detach().double().cpu()
    nonfinite = int((~torch.isfinite(o)).sum())
    err = (o - r).abs()
    max_err = float(torch.nan_to_num(err, nan=float("inf")).max()) if err.numel() else 0.0
    denom = float(o.norm() * r.norm())
    cosine = float((o * r).sum() / denom) if denom > 0 else (1.0 if float(o.norm()) == float(r.norm()) == 0 else 0.0)
    if nonfinite:
        return Verdict(False, "tolerance", f"{nonfinite} non-finite output elements", max_err, cosine, stated)
    bad = err > atol + rtol * r.abs()
    n_bad = int(bad.sum())
    if n_bad:
        flat = int(bad.flatten().nonzero()[0])
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), bad.shape))
        detail = (f"{n_bad}/{bad.numel()} elements outside tolerance, first at {index}: "
                  f"got {float(o.flatten()[flat]):.6g} ref {float(r.flatten()[flat]):.6g}")
        return Verdict(False, "tolerance", detail, max_err, cosine, stated)
    if cosine < min_cosine:
        return Verdict(False, "tolerance", f"cosine {cosine:.6f} < {min_cosine}", max_err, cosine, stated)
    return Verdict(True, "tolerance", "", max_err, cosine, stated)
