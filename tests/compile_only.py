"""Compile rocbench's Triton kernels for a GPU this machine does not have: a Triton driver whose target is that GPU
(AMD gfx942 / gfx950 through Triton's HIP backend, or an NVIDIA sm_XX) and whose launches compile, check the resource
limits Triton checks before a launch (shared memory per block), and run nothing. Calls go through the product's own
entry points, so the kernels are specialized as they would be there. What it shows: the same source compiles for the
target and fits its limits. What it cannot show: that the results are right or how fast (no GPU runs anything).

Triton's JIT decorator returns interpreted functions when TRITON_INTERPRET is set at import, so run this in a process
without it:  python -m tests.compile_only gfx942   (every MLA and MoE config the product picks, one line each;
with --tune, every `--tune` candidate too). tests/kernel_digest.py hashes what that compiles, to show that a change
compiled to the same code.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    backend: str  # Triton's: "hip" or "cuda"
    arch: str | int
    warp_size: int
    shared_bytes: int  # per block / workgroup, the most a kernel may ask for
    sms: int  # SMs / CUs, for grids sized by them

    @property
    def nvidia(self) -> bool:
        return self.backend == "cuda"


TARGETS = {
    "gfx942": Target("hip", "gfx942", 64, 64 * 1024, 304),  # MI300X
    "gfx950": Target("hip", "gfx950", 64, 160 * 1024, 256),  # MI355X
    "sm80": Target("cuda", 80, 32, 163 * 1024, 108),  # A100
    "sm89": Target("cuda", 89, 32, 99 * 1024, 142),  # L40S
    "sm90": Target("cuda", 90, 32, 227 * 1024, 132),  # H100 / H200
}


def _loads_max_threads() -> bool:
    """Whether this Triton's CompiledKernel expects load_binary to return the max threads per block too."""
    import inspect

    from triton.compiler.compiler import CompiledKernel

    return "n_max_threads" in inspect.getsource(CompiledKernel._init_handles)


_LOADS_MAX_THREADS = _loads_max_threads()


class _Utils:
    def __init__(self, target: Target):
        self.target = target

    def get_device_properties(self, device) -> dict:
        return {"max_shared_mem": self.target.shared_bytes, "multiprocessor_count": self.target.sms}

    def load_binary(self, name, kernel, shared, device):
        # module, function, registers, spills (and, from Triton 3.4 or so, max threads per block)
        return (None, None, 0, 0, 1024)[:5 if _LOADS_MAX_THREADS else 4]


class CompileOnlyDriver:
    """Enough of a Triton driver for JIT launches to compile for `target` and stop before running anything."""

    def __init__(self, target: Target):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget(target.backend, target.arch, target.warp_size)
        self.utils = _Utils(target)
        self.launched: list[str] = []

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_current_target(self):
        return self.target

    def launcher_cls(self, src, metadata):
        def launch(*args):
            self.launched.append(metadata.name)
        return launch


@contextlib.contextmanager
def compile_only(name: str) -> Iterator[CompileOnlyDriver]:
    from triton.runtime import driver

    fake = CompileOnlyDriver(TARGETS[name])
    driver.set_active(fake)
    try:
        yield fake
    finally:
        try:
            driver.reset_active()
        except RuntimeError:  # no GPU driver on this machine: leave none active, as before
            driver.set_active(None)


# ---------------------------------------------------------------------------------------------------------------
# The product's calls, on CPU tensors (nothing reads them: nothing runs)
# ---------------------------------------------------------------------------------------------------------------

def _mla_case(name: str, kv_dtype, nhead: int, qlen: int, batch: int, persist: bool) -> tuple:
    """(case, io, ctx) as the MLA suite hands them to a backend, for a GPU of `name`. The inputs hold at most two
    sequences (nothing runs)."""
    import types

    import torch

    from rocbench.core.platform import PlatformInfo
    from rocbench.formats.paged_kv import KV_LORA_RANK, build_paged_kv, make_query

    g = torch.Generator().manual_seed(0)
    kv = build_paged_kv([256] * min(batch, 2), 64, kv_dtype, g, "cpu")
    q = make_query(kv.batch * qlen, nhead, torch.bfloat16, g, "cpu")
    io = types.SimpleNamespace(q=q, kv=kv, out=torch.empty(*q.shape[:2], KV_LORA_RANK, dtype=q.dtype))
    case = {"q_dtype": torch.bfloat16, "kv_dtype": kv_dtype, "nhead": nhead, "qlen": qlen, "persist": persist,
            "batch": batch, "ctx": 256, "page_size": 64}
    target = TARGETS[name]
    platform = PlatformInfo("cuda" if target.nvidia else "rocm", 1, [name], sm_count=target.sms, l2_bytes=None,
                            arch=str(target.arch))
    ctx = types.SimpleNamespace(device=torch.device("cpu"), platform=platform)
    return case, io, ctx


def mla_prepare(name: str, kv_dtype, nhead: int, qlen: int, batch: int, persist: bool, backend: str = "triton"):
    """The MLA `triton` backend's (or `triton_det`'s, `triton_fp8q`'s) prepared call for a case on a GPU of `name`:
    its own prepare, config choice and fallback to a config that fits."""
    from rocbench.suites.mla.backends import TritonMla, TritonMlaDeterministic, TritonMlaFp8Query

    backends = {"triton": TritonMla, "triton_det": TritonMlaDeterministic, "triton_fp8q": TritonMlaFp8Query}
    return backends[backend]().prepare(*_mla_case(name, kv_dtype, nhead, qlen, batch, persist))


MOE_SHAPES = {  # per-rank (experts, topk, hidden, inter, activation, bias), as the moe suite states them
    "gpt-oss-120b TP1 pad": (128, 4, 3072, 2944, "swiglu", True),
    "gpt-oss-120b TP8 pad": (128, 4, 3072, 384, "swiglu", True),
    "deepseek-r1 TP8": (256, 8, 7168, 256, "silu", False),
}


def run_offline(script: str, timeout: float = 240) -> str:
    """Run a Python script that compiles through compile_only in a fresh process without TRITON_INTERPRET (Triton
    decides at import whether its JIT interprets), from the repository root; its stdout, or an AssertionError with
    the end of its stderr."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(root)
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@contextlib.contextmanager
def nvidia_paths():
    """The NVIDIA-only code paths (PTX decodes and prefetch, dependent launches, the e4m3 conversion) on, as an sm_90
    GPU takes them: the calls here run with a CPU device, where the product leaves them off."""
    from unittest import mock

    from rocbench.kernels import mla_decode, moe_a16w4

    on = lambda *args: True  # noqa: E731
    with contextlib.ExitStack() as stack:
        for module in (moe_a16w4, mla_decode):
            for name in ("nvidia_gpu", "cache_hint_available", "dependent_launch_supported",
                         "e4m3_conversion_available"):
                if hasattr(module, name):
                    stack.enter_context(mock.patch.object(module, name, on))
        yield


def moe_call(name: str, shape: tuple, tokens: int, config, layout: str = "interleave", scale_max: int | None = None,
             w13_live_scales: tuple[int, int] | None = None) -> None:
    import torch

    from rocbench.formats import moe_layouts
    from rocbench.kernels import mxfp4_fragments as frag
    from rocbench.kernels.moe_a16w4 import MoeFragments, moe_a16w4

    experts, topk, hidden, inter, activation, bias = shape
    u8 = torch.uint8
    bf16 = torch.bfloat16
    fragments = None
    if config.fragments:  # nothing runs: tensors of the fragments' shapes will do
        tiles = lambda rows, k, size: torch.empty(experts, rows // frag.TILE_ROWS, k // frag.STEP_K, size, dtype=u8)  # noqa: E731
        fragments = MoeFragments(tiles(2 * inter, hidden, frag.STEP_BYTES), tiles(2 * inter, hidden, frag.STEP_SCALES),
                                 tiles(hidden, inter, frag.STEP_BYTES), tiles(hidden, inter, frag.STEP_SCALES))
    moe_a16w4(torch.zeros(tokens, hidden, dtype=bf16),
              torch.empty(experts, 2 * inter, hidden // 2, dtype=u8),
              torch.empty(moe_layouts.shuffled_scale_shape(layout, experts, 2 * inter, hidden // 32), dtype=u8),
              torch.empty(experts, hidden, inter // 2, dtype=u8),
              torch.empty(moe_layouts.shuffled_scale_shape(layout, experts, hidden, inter // 32), dtype=u8),
              torch.full((tokens, topk), 1.0 / topk), torch.randint(0, experts, (tokens, topk), dtype=torch.int32),
              layout=layout, experts=experts, inter=inter, hidden=hidden, activation=activation,
              b13=torch.zeros(experts, 2 * inter, dtype=bf16) if bias else None,
              b2=torch.zeros(experts, hidden, dtype=bf16) if bias else None, config=config, scale_max=scale_max,
              w13_live_scales=w13_live_scales, fragments=fragments)


def _outcome(call) -> str:
    try:
        call()
    except Exception as err:  # noqa: BLE001 -- the line reports whatever the compile raised
        return f"{type(err).__name__}: {str(err).splitlines()[-1][:160]}"
    return "ok"


def every_config(name: str) -> Iterator[dict]:
    """One record per MLA case shape (both kernels, batch-invariant too) and MoE plan the product picks."""
    import torch

    from rocbench.formats.fp8 import fp8_for_arch
    from rocbench.kernels.moe_plan import deterministic_plan, heuristic_plan

    fp8 = fp8_for_arch(name)
    for kv_dtype, nhead, qlen, batch, persist in itertools.product(
            (torch.bfloat16, fp8), (16, 32, 64, 128), (1, 2), (1, 4, 8, 64), (False, True)):
        backends = ["triton"] + ["triton_det"] * (batch == 64) + ["triton_fp8q"] * (kv_dtype == fp8)
        for backend in backends:
            path = []

            def call():
                path.append(mla_prepare(name, kv_dtype, nhead, qlen, batch, persist, backend).description)
            status = _outcome(call)
            yield {"family": "mla", "backend": backend, "kv_dtype": str(kv_dtype).removeprefix("torch."),
                   "nhead": nhead, "qlen": qlen, "batch": batch, "persist": persist, "status": status,
                   "path": path[0] if path else ""}
    for shape_name, shape in MOE_SHAPES.items():
        experts, topk, hidden, inter = shape[:4]
        for tokens in (1, 64, 1024, 8192):  # 8192: 256 rows per expert, the fragment plans' 128-row blocks
            # the PTX prefetch: NVIDIA's decode plans take it
            nvidia = TARGETS[name].nvidia
            heuristic = functools.partial(heuristic_plan, cache_hint=nvidia)
            plans = [("plan", heuristic), ("deterministic", deterministic_plan)]
            if nvidia:  # the backend re-tiles the weights: on NVIDIA its plans take fragment order
                plans += [("fragments", functools.partial(heuristic, retiled=True)),
                          ("deterministic fragments", functools.partial(deterministic_plan, cache_hint=True,
                                                                         retiled=True))]
            for plan_name, plan in plans:
                config = plan(tokens, topk, experts, inter, hidden, TARGETS[name].sms)
                yield {"family": "moe", "shape": shape_name, "tokens": tokens, "plan": plan_name,
                       "status": _outcome(lambda: moe_call(name, shape, tokens, config))}


def every_tune_candidate(name: str) -> Iterator[dict]:
    """One record per `--tune` candidate (MLA: per KV dtype, heads, q length, batch 1 / 64 and kernel; MoE: per plan
    above), launched with the candidate as it is: no fallback to a smaller config, so a candidate too large for the
    target shows as OutOfResources (`--tune` itself counts such a candidate as failed)."""
    import torch

    from rocbench.formats.fp8 import fp8_for_arch
    from rocbench.kernels import mla_config, moe_plan
    from rocbench.suites.mla.backends import TritonMla

    for kv_dtype, nhead, qlen, batch, persist in itertools.product(
            (torch.bfloat16, fp8_for_arch(name)), (16, 32, 64, 128), (1, 2), (1, 64), (False, True)):
        for candidate, config in mla_config.tune_candidates(kv_dtype, nhead, qlen, batch, persistent=persist).items():
            def call():  # the backend's own launch of a candidate, without its fallback to smaller configs
                TritonMla.prepare_with(*_mla_case(name, kv_dtype, nhead, qlen, batch, persist), config,
                                       "candidate").run()
            yield {"family": "mla-tune", "kv_dtype": str(kv_dtype).removeprefix("torch."), "nhead": nhead,
                   "qlen": qlen, "batch": batch, "persist": persist, "candidate": candidate, "status": _outcome(call)}
    for shape_name, shape in MOE_SHAPES.items():
        experts, topk, hidden, inter = shape[:4]
        for tokens in (1, 64, 1024):
            plan = moe_plan.heuristic_plan(tokens, topk, experts, inter, hidden, TARGETS[name].sms,
                                           TARGETS[name].nvidia)
            decode = (tokens, topk, experts, TARGETS[name].sms)
            for candidate, config in moe_plan.tune_candidates(plan, inter, hidden, decode).items():
                yield {"family": "moe-tune", "shape": shape_name, "tokens": tokens, "candidate": candidate,
                       "status": _outcome(lambda: moe_call(name, shape, tokens, config))}


if __name__ == "__main__":  # python -m tests.compile_only TARGET [--tune]
    target_name = sys.argv[1] if len(sys.argv) > 1 else "gfx942"
    with compile_only(target_name):
        records = every_config(target_name)
        if "--tune" in sys.argv[2:]:
            records = itertools.chain(records, every_tune_candidate(target_name))
        for record in records:
            print(json.dumps({"target": target_name, **record}), flush=True)
