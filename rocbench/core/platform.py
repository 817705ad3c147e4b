"""Which platform this is (ROCm, CUDA or CPU), its devices and library versions."""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import platform as pyplatform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rocbench.core.errors import InputError

# Test only: "rocm:gfx942" or "rocm:gfx950" makes a CPU machine report that platform, so the ROCm
# backends run end to end against a stand-in AITER (tests/aiter_standin) on CI's CPUs.
SIMULATE_ENV = "ROCBENCH_SIMULATE_PLATFORM"
SIMULATED_ARCHS = ("gfx942", "gfx950")
# "cpu": the CPU path (gloo ranks, Triton's interpreter) on any machine, GPUs present or not. Read by every
# process (the harness, its rank processes), so it holds where hiding devices cannot: after CUDA was
# initialised in the process (a test process that ran GPU tests first).
PLATFORM_ENV = "ROCBENCH_PLATFORM"


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
    def grid_sms(self) -> int:
        """The SMs / CUs a kernel's grid is sized for: the device's, or an H100's 132 where there is none (CPU, the
        interpreter), so that a grid is the same shape there."""
        return self.sm_count or 132

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


def forced_cpu() -> bool:
    value = os.environ.get(PLATFORM_ENV, "").strip().lower()
    if value not in ("", "cpu"):
        raise InputError(f"{PLATFORM_ENV}={value!r}: the only value is cpu (the CPU path on any machine)")
    return value == "cpu"


def device_arch(props, rocm: bool) -> str:
    """gfx942 / gfx950 on ROCm (gcnArchName less its feature flags), sm_90 etc. on CUDA, whose torch (2.11) fills
    gcnArchName with the device's name."""
    return props.gcnArchName.split(":")[0] if rocm else f"sm_{props.major}{props.minor}"


@functools.lru_cache(maxsize=1)
def detect() -> PlatformInfo:
    simulated = simulated_platform()
    arch = None
    if simulated is None and not forced_cpu() and torch.cuda.is_available():
        kind = "rocm" if torch.version.hip else "cuda"
        count = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        names = [torch.cuda.get_device_name(i) for i in range(count)]
        sm_count = props.multi_processor_count
        l2_bytes = getattr(props, "L2_cache_size", None)
        arch = device_arch(props, kind == "rocm")
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


def driver_version(kind: str) -> str | None:
    """The GPU driver's version (NVML on CUDA, amdsmi on ROCm), or None where neither answers."""
    try:
        if kind == "cuda":
            import pynvml

            pynvml.nvmlInit()
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
        if kind == "rocm":
            import amdsmi

            amdsmi.amdsmi_init()
            handle = amdsmi.amdsmi_get_processor_handles()[0]
            return str(amdsmi.amdsmi_get_gpu_driver_info(handle).get("driver_version"))
    except Exception:  # noqa: BLE001 - a missing or failing management library only means no version
        return None
    return None


def module_origin(name: str) -> str | None:
    """Where a module would be imported from, without importing it (aiter fails to import without ROCm)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return str(Path(spec.origin).parent) if spec.origin else ", ".join(spec.submodule_search_locations or [])


def software_origins() -> list[tuple[str, str]]:
    """Which Python, torch, Triton and AITER rocbench runs on, and where each comes from."""
    setup = Path(sys.prefix) / "setup.json"
    python = sys.executable
    if setup.exists():
        record = json.loads(setup.read_text())
        python += (f" (rocbench's venv over the packages of {record['python']})" if record.get("mode") == "host"
                   else " (rocbench's venv, pinned CPU torch)")
    build = f"ROCm {torch.version.hip}" if torch.version.hip else (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU")
    rows = [("python", python), ("torch", f"{torch.__version__} ({build}) from {module_origin('torch')}")]
    triton = module_origin("triton")
    version = package_version("triton") or package_version("pytorch-triton-rocm")
    rows.append(("triton", f"{version or 'unknown version'} from {triton}" if triton else "not installed"))
    aiter = module_origin("aiter")
    version = package_version("amd-aiter") or package_version("aiter")
    rows.append(("aiter", f"{version or 'unknown version'} from {aiter}" if aiter else "not installed"))
    return rows


def git_revision(here: str | None = None) -> str | None:
    """The commit of the checkout holding `here` (default: this package), "+dirty" if its code differs."""
    here = here or os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    rev = out.stdout.strip()
    # "+dirty": the code differs from the commit; results/ (where runs write, and examples move) does not count
    code = ["--", ":(top)", ":(top,exclude)results"]
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *code], cwd=here,
                           capture_output=True, text=True, timeout=5)
    return rev + ("+dirty" if dirty.stdout.strip() else "")
