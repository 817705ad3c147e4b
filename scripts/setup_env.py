"""`make`'s set-up: the venv rocbench runs in, keeping the torch (and AITER) of the Python that runs `make`.

    python3 scripts/setup_env.py .venv

- That Python imports torch (a ROCm image with AITER, a CUDA box, conda, or a venv like the device's): the new venv
  sees that Python's packages (a .pth file adds its site directories after the venv's own), so rocbench runs on that
  torch, triton and any installed aiter, wherever they live. pip installs only what is missing, under a constraint
  that pins torch (and triton) to the ones there, so nothing can replace them; with nothing missing pip runs with
  --no-index and touches no network.
- No torch there: the pinned CPU torch goes into the venv (CI and a bare CPU box), as before.
The venv's `setup.json` records which it was; `rocbench env` says which torch and AITER run and from where.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The CPU wheel this workplace keeps on disk; a looser pin would pull a CUDA build of several GB.
PINNED_TORCH = "torch==2.13.0"
EXTRAS = ("test", "triton")
OPTIONAL_EXTRAS = ("lint",)  # installed when pip can get them; without network they are left out
HOST_PTH = "_rocbench_host_site.pth"
# Distributions whose module has another name; triton counts as present when it imports (ROCm ships it as
# pytorch-triton-rocm, which a `triton` requirement would not see).
MODULES = {"pyyaml": "yaml", "pytest-timeout": "pytest_timeout", "pytest-xdist": "xdist", "nvidia-ml-py": "pynvml"}
NEVER_INSTALLED_OVER_HOST = ("torch", "triton")


def log(message: str) -> None:
    print(f"setup: {message}", flush=True)


def host_torch() -> dict | None:
    """The torch this Python imports (version, where, build), or None."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    build = "ROCm " + torch.version.hip if torch.version.hip else ("CUDA " + torch.version.cuda if torch.version.cuda else "CPU")
    return {"version": torch.__version__, "from": str(Path(torch.__file__).parent), "build": build}


def host_site_dirs() -> list[str]:
    """Where this Python finds packages: its site directories (system, conda, venv, user), in its order, plus
    the folders holding torch and aiter if they live elsewhere (PYTHONPATH, an editable checkout)."""
    dirs = [p for p in sys.path if os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages")]
    for module in ("torch", "aiter"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            dirs.append(str(Path(spec.origin).parent.parent))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def triton_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:  # none, or ROCm's pytorch-triton-rocm
        return None


def requirements(extras: tuple[str, ...] = EXTRAS) -> list[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) if extras == EXTRAS else []
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return reqs


# Run by the venv's python: which requirements its view (its own packages, then the host's) does not satisfy.
MISSING_PROBE = r"""
import importlib.metadata as md, importlib.util, json, sys
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
reqs, modules, host_owned = json.loads(sys.argv[1])
missing, older = [], []
for text in reqs:
    req = Requirement(text)
    name = req.name.lower()
    module = modules.get(name, name.replace("-", "_"))
    if importlib.util.find_spec(module) is None:
        missing.append(text)
        continue
    try:
        version = md.version(name)
    except md.PackageNotFoundError:
        continue  # importable under another distribution name (pytorch-triton-rocm): it is the host's
    if not req.specifier.contains(version, prereleases=True):
        (older if name in host_owned else missing).append(f"{text} (found {version})")
print(json.dumps({"missing": missing, "older": older}))
"""


def run(*cmd: str, env: dict | None = None) -> None:
    log("+ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)


def make_venv(path: Path) -> list[str]:
    """A fresh venv; returns how to run pip for it (its own pip, or this Python's where ensurepip is missing,
    as on Debian's system Python without python3-venv)."""
    try:
        venv.EnvBuilder(clear=True, with_pip=True).create(path)
        return [str(path / "bin" / "python"), "-m", "pip"]
    except subprocess.CalledProcessError:
        log("ensurepip is not available: using this Python's pip for the venv")
        venv.EnvBuilder(clear=True, with_pip=False).create(path)
        return [sys.executable, "-m", "pip", "--python", str(path / "bin" / "python")]


def venv_site(path: Path) -> Path:
    out = subprocess.run([str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def keep_host(path: Path, torch_info: dict, pip: list[str]) -> list[str]:
    """The venv over this Python's packages; installs what is missing, never torch. Returns what it installed."""
    site = venv_site(path)
    if (site / "setuptools").is_dir() and importlib.util.find_spec("setuptools") is not None:
        # Python <= 3.11 puts an old setuptools (no bdist_wheel) in every venv; it would hide the host's newer one,
        # which builds rocbench's editable install without a download.
        run(*pip, "uninstall", "-q", "-y", "setuptools")
    dirs = host_site_dirs()
    # site.addsitedir (not a bare path) so the host's own .pth files run too: editable installs such as AITER's.
    (site / HOST_PTH).write_text("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
    log(f"keeping this Python's torch {torch_info['version']} ({torch_info['build']}) from {torch_info['from']}")
    python = str(path / "bin" / "python")
    probe = json.dumps([requirements(), MODULES, list(NEVER_INSTALLED_OVER_HOST)])
    found = json.loads(subprocess.run([python, "-c", MISSING_PROBE, probe], check=True, capture_output=True,
                                      text=True).stdout)
    for text in found["older"]:  # the host's torch/triton stay; rocbench says what it expected
        log(f"warning: rocbench is tested with {text}; keeping it, never replacing it")
    missing = [text.split(" (found")[0] for text in found["missing"]]  # triton only where none imports at all
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write(f"torch=={torch_info['version']}\n")  # nothing pip installs may bring another torch
        if triton_version():
            pins.write(f"triton=={triton_version()}\n")
    offline = [] if missing else ["--no-index"]
    if missing:
        log("installing what this Python lacks: " + ", ".join(missing))
        run(*pip, "install", "-q", "--no-compile", "-c", pins.name, *missing)
    else:
        log("everything rocbench needs is already there: installing nothing, no network")
    has_setuptools = subprocess.run([python, "-c", "import setuptools"], capture_output=True).returncode == 0
    isolation = ["--no-build-isolation"] if has_setuptools else []  # an isolated build downloads setuptools
    run(*pip, "install", "-q", "--no-compile", "--no-deps", *offline, *isolation, "-e", str(REPO))
    optional = json.loads(subprocess.run([python, "-c", MISSING_PROBE, json.dumps([requirements(OPTIONAL_EXTRAS), {}, []])],
                                         check=True, capture_output=True, text=True).stdout)["missing"]
    if optional:
        try:
            # one short try: an offline box should not wait on pip's retries for an optional tool
            run(*pip, "install", "-q", "--no-compile", "--retries", "0", "--timeout", "10", "-c", pins.name, *optional)
            missing += optional
        except subprocess.CalledProcessError:
            log(f"could not install {', '.join(optional)} (offline?): make test skips the lint test")
    os.unlink(pins.name)
    return missing


def pinned(path: Path, pip: list[str]) -> None:
    log(f"no torch in {sys.executable}: installing the pinned {PINNED_TORCH} into the venv")
    run(*pip, "install", "-q", "--no-compile", PINNED_TORCH)
    run(*pip, "install", "-q", "--no-compile", "-e", f"{REPO}[{','.join(EXTRAS + OPTIONAL_EXTRAS)}]")


# What no rocbench process imports (the packages' own tests, torch.onnx, sympy.physics, pygments' lexers, networkx;
# tests/test_setup_env.py checks): a third of the venv's files, 22 -> 16 s of a fresh `make test` on 2 cores. A module
# left out still imports, compiled when it does.
NEVER_IMPORTED = r"site-packages/(networkx/|[^/]+/(.+/)?(tests?|onnx|physics|lexers)/)"  # within site-packages only


def byte_compile(path: Path) -> None:
    """Compiled ahead on all cores (pip compiles one file at a time), because the environment may forbid writing
    .pyc at import (PYTHONDONTWRITEBYTECODE), which makes every import slow. Only the venv's own packages: the
    host's are not ours to write. Files this Python cannot parse (torch ships 3.12-only test helpers) are skipped."""
    subprocess.run([str(path / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", "-x", NEVER_IMPORTED,
                    str(venv_site(path)), str(REPO / "rocbench")], capture_output=True)


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else ".venv").absolute()
    torch_info = host_torch()
    pip = make_venv(path)
    record = {"python": sys.executable, "venv": str(path)}
    if torch_info is not None:
        record.update(mode="host", torch=torch_info, installed=keep_host(path, torch_info, pip))
    else:
        pinned(path, pip)
        record.update(mode="pinned", torch={"version": PINNED_TORCH.split("==")[1]})
    byte_compile(path)
    (path / "setup.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"ready: {path}/bin/rocbench on " + ("the torch of " + sys.executable if record["mode"] == "host" else "the pinned torch"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
