"""A kernel of known duration: one program spins on the GPU's real-time counter for a given number of ns
and stores how long it spun (the truth `rocbench selfcheck` judges the harness's times against).

Imported only on a GPU (it needs Triton). The counters are Triton's own: %globaltimer (ns) on NVIDIA,
s_memrealtime (100 MHz) on AMD; the AMD path is written from Triton's helper and has not run here (it compiles
for gfx942 offline: tests/test_fit_to_device.py)."""
from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import globaltimer

try:
    from triton.language.extra.hip import memrealtime
except ImportError:  # an older Triton: only the NVIDIA counter
    memrealtime = None

AMD_NS_PER_TICK = tl.constexpr(10)  # s_memrealtime counts at 100 MHz


@triton.jit
def _now_ns(IS_HIP: tl.constexpr):
    if IS_HIP:
        return memrealtime() * AMD_NS_PER_TICK
    else:
        return globaltimer()


@triton.jit
def rocbench_spin(out, slot, duration_ns, IS_HIP: tl.constexpr):
    start = _now_ns(IS_HIP)
    now = start
    while now - start < duration_ns:
        now = _now_ns(IS_HIP)
    tl.store(out + slot, now - start)


def launch(out, slot: int, duration_ns: int, hip: bool) -> None:
    rocbench_spin[(1,)](out, slot, duration_ns, IS_HIP=hip)
