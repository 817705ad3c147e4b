"""Which platform this is (ROCm, CUDA or CPU), its devices and library versions."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform as pyplatform
import subprocess
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class PlatformInfo:
    kind: str  # "rocm" | "cuda" | "cpu"
    device_count: int
    device_names: list[str]
    sm_count: int | None
    l2_bytes: int | None
    versions: dict[str, str] = field(default_factory=dict)
    host: str = ""

    @property
    def has_gpu(self) -> bool:
        return self.kind in ("cuda", "rocm")

    def as_dict(self) -> dict:
        return asdict(self)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def detect() -> PlatformInfo:
    if torch.cuda.is_available():
        kind = "rocm" if torch.version.hip else "cuda"
        count = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        names = [torch.cuda.get_device_name(i) for i in range(count)]
        sm_count = props.multi_processor_count
        l2_bytes = getattr(props, "L2_cache_size", None)
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
    if kind != "cpu":
        try:
            nccl = torch.cuda.nccl.version()
            versions["nccl" if kind == "cuda" else "rccl"] = ".".join(str(v) for v in nccl) if isinstance(nccl, tuple) else str(nccl)
        except Exception:  # noqa: BLE001 - a missing NCCL only means no version to report
            pass
    return PlatformInfo(kind, count, names, sm_count, l2_bytes, versions, pyplatform.node())


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
