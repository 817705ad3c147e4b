"""`make` on a machine whose Python already has torch (and AITER): the venv keeps them, installs no torch, touches
no network, and `make bench` / `make test` run on them. The user's Python is simulated: a venv whose site-packages
see this torch and the aiter stand-in through a .pth file, from places a fresh venv would not look."""
import os
import subprocess
import venv
from pathlib import Path

import torch

from tests.aiter_source import STANDIN
from tests.helpers import REPO

TORCH_SITE = str(Path(torch.__file__).resolve().parent.parent)


def test_make_keeps_the_users_torch_and_aiter_and_fetches_nothing(tmp_path):
    user = tmp_path / "user-python"
    venv.EnvBuilder(with_pip=False).create(user)
    site = Path(subprocess.run([str(user / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "users_packages.pth").write_text(f"import site; site.addsitedir({TORCH_SITE!r}); site.addsitedir({str(STANDIN)!r})\n")
    rb_venv = tmp_path / "rb-venv"
    # No index: any attempt to download (torch above all) fails the set-up.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PYTHONPATH": ""}
    make = ["make", "-s", "-C", str(REPO), f"PY={user / 'bin' / 'python'}", f"VENV={rb_venv}"]
    bench = subprocess.run([*make, "bench", "BENCH_ARGS=--dry-run"], capture_output=True, text=True, env=env, timeout=600)
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    assert "installing nothing, no network" in bench.stdout
    test = subprocess.run([*make, "test", "PYTEST_ARGS=-n 0 tests/test_launchers.py::test_torchrun_variables"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert test.returncode == 0 and "1 passed" in test.stdout, test.stdout[-3000:] + test.stderr[-3000:]
    for out in (bench.stdout, test.stdout):  # both commands say where their torch and aiter come from
        assert f"torch: {torch.__version__}" in out and f"from {TORCH_SITE}/torch" in out
        assert f"aiter: unknown version from {STANDIN}/aiter" in out
        assert f"rocbench's venv over the packages of {user / 'bin' / 'python'}" in out
    venv_site = Path(subprocess.run([str(rb_venv / "bin" / "python"), "-c",
                                     "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    assert not list(venv_site.glob("torch*")) and not list(venv_site.glob("triton*")), "no torch or triton of its own"
    assert "--dry-run\n" in bench.stdout and "runs valid" in bench.stdout  # each config of this machine, validated


def test_bench_runs_only_the_configs_named_and_refuses_a_missing_one():
    """make bench BENCH_ARGS="--config ...": a job with a time limit per call runs the sweeps one at a time."""
    import sys

    bench = [sys.executable, "scripts/bench.py", "--dry-run"]
    one = subprocess.run([*bench, "--config", "configs/ci.yaml"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    assert one.stdout.count("+ rocbench sweep") == 1 and "+ rocbench sweep configs/ci.yaml --dry-run" in one.stdout
    missing = subprocess.run([*bench, "--config", "configs/nope.yaml"], capture_output=True, text=True, cwd=REPO,
                             timeout=120)
    assert missing.returncode == 2 and missing.stderr == "bench: no such config: configs/nope.yaml\n"
    assert "+ rocbench" not in missing.stdout


def test_byte_compile_leaves_out_only_what_rocbench_never_imports():
    """The set-up compiles the venv ahead except NEVER_IMPORTED (scripts/setup_env.py): the CLI, every suite and
    kernel, the harness, the reports and torch.distributed import none of it, so no rocbench process compiles at
    import where .pyc cannot be written (PYTHONDONTWRITEBYTECODE)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("setup_env", REPO / "scripts" / "setup_env.py")
    setup_env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_env)
    probe = ("import re, sys, torch.distributed, rocbench.cli, rocbench.core.harness.ranks, "
             "rocbench.core.harness.sweep, rocbench.core.reporting.plots, rocbench.kernels.moe_a16w4, "
             "rocbench.kernels.mla_decode, rocbench.kernels.allgather\n"
             "from rocbench.core import registry\n"
             "registry.discover('rocbench.suites')\n"
             f"pattern = re.compile({setup_env.NEVER_IMPORTED!r})\n"
             "print([m for m, mod in list(sys.modules.items()) if pattern.search(getattr(mod, '__file__', None) or '')])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]
