"""Which platform this is (ROCm, CUDA or CPU), its devices and library versions."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform as pyplatform
import subprocess
from dataclasses import asdict, dataclass, field

import torch

from rocbench.core.errors import InputError

# Test only: "rocm:gfx942" or "rocm:gfx950" makes a CPU machine report that platform, so the ROCm
# backends run end to end against a stand-in AITER (tests/aiter_standin) on CI's CPUs.
SIMULATE_ENV = "ROCBENCH_SIMULATE_PLATFORM"
SIMULATED_ARCHS = ("gfx942", "gfx950")


@dataclass
class PlatformInfo:
    kind: str  # "rocm" | "cuda" | "cpu"
    device_count: int
    device_names: list[str]
    sm_count: int | None
    l2_bytes: int | None
    versions: dict[str, str] = field(default_factory=dict)
    host: str = ""
    arch: str | None = None  # gfx942 / gfx950 on ROCm, sm_90 on CUDA
    simulated: bool = False  # test only: a CPU machine posing as `kind`/`arch` (ROCBENCH_SIMULATE_PLATFORM)

    @property
    def has_gpu(self) -> bool:
        """A real GPU runs the kernels (a simulated platform computes on the CPU)."""
        return self.kind in ("cuda", "rocm") and not self.simulated

    @property
    def label(self) -> str:
        text = self.kind + (f" {self.arch}" if self.arch else "")
        return text + (f" (simulated on this CPU: {SIMULATE_ENV})" if self.simulated else "")

    @property
    def cache_bytes(self) -> int | None:
        """Bytes of device-side cache a cold measurement must evict: L2, plus on MI300X/MI355X the 256 MB
        Infinity Cache that sits in front of HBM (torch reports only the L2)."""
        if not self.l2_bytes:
            return None
        return self.l2_bytes + (256 << 20 if self.arch in ("gfx942", "gfx950") else 0)

    def as_dict(self) -> dict:
        return asdict(self)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def simulated_platform() -> tuple[str, str] | None:
    value = os.environ.get(SIMULATE_ENV)
    if not value:
        return None
    kind, _, arch = value.partition(":")
    if kind != "rocm" or arch not in SIMULATED_ARCHS:
        raise InputError(f"{SIMULATE_ENV}={value!r}: expected rocm:{' or rocm:'.join(SIMULATED_ARCHS)}")
    return kind, arch


def device_arch(props) -> str:
    gcn = getattr(props, "gcnArchName", "")
    return gcn.split(":")[0] if gcn else f"sm_{props.major}{props.minor}"


@functools.lru_cache(maxsize=1)
def detect() -> PlatformInfo:
    simulated = simulated_platform()
    arch = None
    if simulated is None and torch.cuda.is_available():
        kind = "rocm" if torch.version.hip else "cuda"
        count = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        names = [torch.cuda.get_device_name(i) for i in range(count)]
        sm_count = props.multi_processor_count
        l2_bytes = getattr(props, "L2_cache_size", None)
        arch = device_arch(props)
    elif simulated is not None:
        (kind, arch), count, names, sm_count, l2_bytes = simulated, 0, [], None, None
    else:
        kind, count, names, sm_count, l2_bytes = "cpu", 0, [], None, None
    versions = {"torch": torch.__version__, "python": pyplatform.python_version()}
    for pkg in ("triton", "amd-aiter", "aiter", "rocbench"):
        version = package_version(pkg)
        if version:
            versions[pkg] = version
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    if torch.version.hip:
        versions["hip"] = torch.version.hip
    if count:
        try:
            nccl = torch.cuda.nccl.version()
            versions["nccl" if kind == "cuda" else "rccl"] = ".".join(str(v) for v in nccl) if isinstance(nccl, tuple) else str(nccl)
        except Exception:  # noqa: BLE001 - a missing NCCL only means no version to report
            pass
    return PlatformInfo(kind, count, names, sm_count, l2_bytes, versions, pyplatform.node(), arch, simulated is not None)


def git_revision() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    rev = out.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5)
    return rev + ("+dirty" if dirty.stdout.strip() else "")
