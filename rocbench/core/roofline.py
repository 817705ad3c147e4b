"""The machine's roofline, measured once per run on rank 0 before the first case and kept in meta.json: every
timed row says how close it came (pct_roofline_<time> = the larger of bytes / copy bandwidth and flops / MMA
rate, over the row's time), so nobody divides by hand."""
from __future__ import annotations

from dataclasses import dataclass

HOW = ("copy bandwidth: eager device-to-device copy of 1 GiB, read + write bytes, median of 10 after ~1 s of "
       "warm-up; MMA rate: torch.matmul of two 8192x8192 bf16 matrices (fp8: torch._scaled_mm, e4m3, per-tensor "
       "scales), 2*8192^3 flops per call, median of back-to-back calls; both on rank 0's device")


@dataclass(frozen=True)
class Roofline:
    copy_bw_GBps: float | None = None
    bf16_tflops: float | None = None  # dense bf16 MMA through torch.matmul (cuBLAS / hipBLASLt)
    fp8_tflops: float | None = None  # dense fp8 e4m3 MMA; None where torch._scaled_mm is unavailable

    def mma_tflops(self, dtype: str) -> float | None:
        return {"bf16": self.bf16_tflops, "fp8": self.fp8_tflops}[dtype]

    def floor_us(self, nbytes: int, flops: float, mma: str = "bf16") -> float | None:
        """The shortest time the work can take here: bytes at the copy bandwidth or flops at the MMA rate, whichever
        is longer. None when a rate the work needs was not measured."""
        if not self.copy_bw_GBps:
            return None
        floor = nbytes / (self.copy_bw_GBps * 1e3)  # GB/s -> bytes per us
        if flops:
            rate = self.mma_tflops(mma)
            if not rate:
                return None
            floor = max(floor, flops / (rate * 1e6))  # TFLOP/s -> flops per us
        return floor

    def to_meta(self) -> dict:
        return {"copy_bw_GBps": self.copy_bw_GBps, "mma_tflops": {"bf16": self.bf16_tflops, "fp8": self.fp8_tflops},
                "how": HOW}

    @staticmethod
    def from_meta(meta: dict) -> "Roofline | None":
        """A run's own roofline (resume keeps it); older runs kept only the copy bandwidth."""
        if not meta.get("copy_bw_GBps"):
            return None
        mma = (meta.get("roofline") or {}).get("mma_tflops") or {}
        return Roofline(meta["copy_bw_GBps"], mma.get("bf16"), mma.get("fp8"))

    def describe(self) -> str:
        parts = [f"copy {self.copy_bw_GBps:.0f} GB/s" if self.copy_bw_GBps else "copy n/a"]
        parts += [f"{name} MMA {rate:.0f} TFLOP/s" for name, rate in (("bf16", self.bf16_tflops),
                                                                        ("fp8", self.fp8_tflops)) if rate]
        return ", ".join(parts)
