"""GPU clock and throttle state, read through NVML (nvidia-ml-py) or amdsmi, for the timing columns.

A sample taken while the clock is below 75% of the default clock is dropped and counted (as NVBench
does): it times the card's power state, not the kernel."""
from __future__ import annotations

import functools
from dataclasses import dataclass

THROTTLE_FLOOR = 0.75  # of the default clock


@dataclass(frozen=True)
class ClockState:
    mhz: float | None  # current SM (NVIDIA) / GFX (AMD) clock
    default_mhz: float | None
    throttle: str  # active reasons, "none", or why it could not be read

    @property
    def low(self) -> bool:
        """Below the floor (False when the clock cannot be read: nothing is dropped then)."""
        return bool(self.mhz and self.default_mhz and self.mhz < THROTTLE_FLOOR * self.default_mhz)


UNREADABLE = ClockState(None, None, "n/a")


class NvmlClocks:
    def __init__(self, device_index: int, pci_bus_id: str | None):
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handle = (pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id) if pci_bus_id
                       else pynvml.nvmlDeviceGetHandleByIndex(device_index))
        try:
            self.default_mhz = float(pynvml.nvmlDeviceGetDefaultApplicationsClock(self.handle, pynvml.NVML_CLOCK_SM))
        except pynvml.NVMLError:  # not every board has application clocks: its maximum then
            self.default_mhz = float(pynvml.nvmlDeviceGetMaxClockInfo(self.handle, pynvml.NVML_CLOCK_SM))
        prefix = "nvmlClocksEventReason" if hasattr(pynvml, "nvmlClocksEventReasonGpuIdle") else "nvmlClocksThrottleReason"
        self.reasons: dict[int, str] = {}
        for name in sorted(dir(pynvml)):  # a bit with two names (an alias) keeps the first, alphabetically
            if name.startswith(prefix) and not name.endswith(("All", "None", "Unknown")):
                self.reasons.setdefault(getattr(pynvml, name), name.removeprefix(prefix))
        self.read_reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons",
                                    getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))

    def read(self) -> ClockState:
        mhz = float(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
        mask = self.read_reasons(self.handle) if self.read_reasons else 0
        active = [name for bit, name in sorted(self.reasons.items()) if mask & bit]
        return ClockState(mhz, self.default_mhz, "+".join(active) or "none")


class AmdSmiClocks:
    def __init__(self, device_index: int):
        import amdsmi

        self.amdsmi = amdsmi
        amdsmi.amdsmi_init()
        self.handle = amdsmi.amdsmi_get_processor_handles()[device_index]

    def read(self) -> ClockState:
        info = self.amdsmi.amdsmi_get_clock_info(self.handle, self.amdsmi.AmdSmiClkType.GFX)
        try:
            throttle = str(self.amdsmi.amdsmi_get_gpu_metrics_info(self.handle).get("throttle_status", "n/a"))
        except Exception:  # noqa: BLE001 - older amdsmi / firmware without metrics
            throttle = "n/a"
        return ClockState(float(info["clk"]), float(info["max_clk"]), throttle)


@functools.lru_cache(maxsize=None)
def reader(device_kind: str, device_index: int, pci_bus_id: str | None = None):
    """The clock reader for one GPU, or None where neither library answers (CPU, missing package)."""
    try:
        if device_kind == "cuda":
            return NvmlClocks(device_index, pci_bus_id)
        if device_kind == "rocm":
            return AmdSmiClocks(device_index)
    except Exception:  # noqa: BLE001 - no library, no permission: the row says n/a
        return None
    return None


def read(clock_reader) -> ClockState:
    if clock_reader is None:
        return UNREADABLE
    try:
        return clock_reader.read()
    except Exception:  # noqa: BLE001 - a transient library error must not fault a case
        return UNREADABLE


def for_device(device, platform_kind: str):
    """The reader for a torch device (None on CPU or a simulated platform)."""
    import torch

    if getattr(device, "type", None) != "cuda" or platform_kind not in ("cuda", "rocm"):
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    bus = None
    if platform_kind == "cuda" and hasattr(props, "pci_bus_id"):  # NVML numbers GPUs ignoring CUDA_VISIBLE_DEVICES
        bus = f"{getattr(props, 'pci_domain_id', 0):04x}:{props.pci_bus_id:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
    return reader(platform_kind, index, bus)
