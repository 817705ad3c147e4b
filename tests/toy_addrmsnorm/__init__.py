"""A fourth kernel family in one package, touching nothing else: in-place fused add + RMSNorm.

    residual += x          (in place: the call changes its input, so the suite declares a reset)
    out = rmsnorm(residual) * weight

Two outputs, judged differently: the updated residual bitwise, the normalized output within a tolerance.
rocbench finds it through ROCBENCH_SUITES=tests.toy_addrmsnorm (or an entry point) and then offers
`rocbench addrmsnorm` with its options, YAML keys and CSV columns.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from rocbench.core.harness import gate

from rocbench.core import registry
from rocbench.core.params import Param, dtypes, ints
from rocbench.core.suite import Backend, Backends, Prepared, Suite, Tolerance, Work

EPS = 1e-6


@dataclass
class AddNormIO:
    x: torch.Tensor
    residual: torch.Tensor
    weight: torch.Tensor
    out: torch.Tensor
    residual_before: torch.Tensor  # what `reset` restores


class AddRmsNormSuite(Suite):
    name = "addrmsnorm"
    help = "Fused add + RMSNorm, in place: residual += x; out = rmsnorm(residual) * weight."
    params = (
        Param("tokens", "Rows.", ints(minimum=1), "1,7", axis=True),
        Param("hidden", "Columns.", ints(minimum=1), "64", axis=True),
        Param("dtype", "Activation dtype.", dtypes((torch.float32, torch.float16, torch.bfloat16)), "fp32", axis=True),
    )
    outputs = ("out", "residual")
    input_axes = ("tokens", "hidden", "dtype")
    baseline = "eager"
    backends = Backends()

    def build_io(self, case, ctx):
        def empty(*shape):
            return torch.empty(*shape, dtype=case["dtype"], device=ctx.device)
        t, h = case["tokens"], case["hidden"]
        return AddNormIO(empty(t, h), empty(t, h), empty(h), empty(t, h), empty(t, h))

    def fill(self, case, io, ctx, data_seed):
        gen = torch.Generator().manual_seed(zlib.crc32(f"{ctx.seed}/{case.input_key}/{data_seed}".encode()))
        for t in (io.x, io.residual, io.weight):
            t.copy_(torch.randn(t.shape, generator=gen))
        io.residual_before.copy_(io.residual)
        io.out.fill_(float("nan"))
        summed = (io.x + io.residual).float()
        normed = summed * torch.rsqrt(summed.pow(2).mean(-1, keepdim=True) + EPS) * io.weight.float()
        return {"out": normed, "residual": (io.x + io.residual)}

    def reset(self, case, io, ctx):
        io.residual.copy_(io.residual_before)

    def judge(self, case, output, got, expected, tolerance=None):
        if output == "residual":
            return gate.exact(got, expected)
        return gate.tolerance(got, expected, tolerance or Tolerance(1e-2, 1e-2, 0.9999))

    def work(self, case, world_size):
        t, h = case["tokens"], case["hidden"]
        size = torch.empty((), dtype=case["dtype"]).element_size()
        return Work(bytes=(4 * t * h + h) * size, flops=5.0 * t * h)


SUITE = registry.register(AddRmsNormSuite())


def _add_then_norm(io, norm):
    """Both backends share the family's in-place contract: residual += x, out = norm(residual)."""
    def run():
        io.residual.add_(io.x)
        io.out.copy_(norm(io.residual.float(), io.weight.float()))
        return {"out": io.out, "residual": io.residual}
    return run


@SUITE.backends.register
class Eager(Backend):
    name = "eager"
    platforms = ("cpu", "cuda", "rocm")
    description = "torch ops: add in place, then the norm in fp32"

    def prepare(self, case, io, ctx):
        return Prepared(_add_then_norm(io, lambda r, w: r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + EPS) * w),
                        "add_ + fp32 norm")


@SUITE.backends.register
class Rsqrt(Backend):
    name = "rsqrt"
    platforms = ("cpu", "cuda", "rocm")
    description = "norm through torch.rms_norm"

    def prepare(self, case, io, ctx):
        hidden = (case["hidden"],)
        return Prepared(_add_then_norm(io, lambda r, w: torch.nn.functional.rms_norm(r, hidden, w, EPS)),
                        "add_ + torch.rms_norm")
