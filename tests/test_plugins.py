"""Bring your own kernel: backends from a file outside rocbench, or from an installed package's entry point, run
through the same gates as the built-ins, in the rank processes too (CPU, gloo)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO, invoke, latest_run, results, rocbench

ALLGATHER_PLUGIN = '''
import torch
import torch.distributed as dist

from rocbench.plugin import Backend, Prepared, backends

FLIP = {flip}


def as_bytes(t):
    return t.view(-1).view(torch.uint8)


@backends("allgather").register
class {cls}(Backend):
    name = "{name}"
    platforms = ("cpu", "cuda", "rocm")
    description = "all-gather as one broadcast per rank (a plugin)"

    def prepare(self, case, io, ctx):
        dim = case["dim"] % io.inp.dim()
        slices = io.out.chunk(ctx.world_size, dim=dim)
        staging = [torch.empty_like(io.inp) for _ in range(ctx.world_size)]

        def run():
            for rank, buf in enumerate(staging):
                if rank == ctx.rank:
                    buf.copy_(io.inp)
                dist.broadcast(as_bytes(buf), src=rank, group=ctx.group)
                slices[rank].copy_(buf)
            if FLIP and ctx.rank == ctx.world_size - 1:
                as_bytes(io.out)[0] ^= 0x40
            return io.out
        return Prepared(run, "one broadcast per rank")
'''

MLA_PLUGIN = '''
from rocbench.plugin import Backend, Prepared, backends
from rocbench.suites.mla.reference import mla_decode_reference
from rocbench.suites.mla.suite import SM_SCALE


@backends("mla").register
class TorchMla(Backend):
    name = "torchref"
    platforms = ("cpu",)
    description = "the fp32 torch reference as a backend (a plugin)"
    supports = {"persist": (False,)}  # no persistent path: those rows are unsupported, with the reason

    def prepare(self, case, io, ctx):
        def run():
            out, _ = mla_decode_reference(io.q, io.kv, SM_SCALE, case["qlen"])
            io.out.copy_(out)
            return io.out
        return Prepared(run, "torch fp32, then rounded")
'''

@pytest.fixture(autouse=True)
def plugins_forgotten_afterwards():
    """Plugins register into this test process's registries: other tests here must not meet their backends."""
    from rocbench.core import plugins, registry

    registry.discover("rocbench.suites")
    saved = {name: (dict(registry.get(name).backends._backends), dict(registry.get(name).backends.origins))
             for name in registry.names()}
    yield
    for name, (backends, origins) in saved.items():
        registry.get(name).backends._backends, registry.get(name).backends.origins = backends, origins
    plugins._loaded.clear()


SMALL = ["--tp", "2", "--shapes", "2x8,3x5", "--dtypes", "bfloat16,int32,bool", "--dims", "0,-1"]


def plugin(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "plugins" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_a_plugin_allgather_backend_runs_in_the_rank_pool_and_passes_every_gate(tmp_path):
    good = plugin(tmp_path, "bcast", ALLGATHER_PLUGIN.format(flip=False, cls="Broadcast", name="bcast"))
    proc = invoke("allgather", *SMALL, "--plugin", str(good), "--backends", "torch,bcast", "--out", str(tmp_path),
                  probes=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    frame = results(latest_run(tmp_path, "allgather"))
    mine = frame[frame["backend"] == "bcast"]
    assert len(mine) == 12 and set(mine["status"]) == {"pass"} and set(mine["deterministic"]) == {"yes"}
    assert set(mine["batch_invariant"]) == {"yes"} and set(mine["path"]) == {"one broadcast per rank"}


def test_a_plugin_that_flips_a_byte_fails_its_gate_and_one_that_cannot_load_is_one_line(tmp_path):
    bad = plugin(tmp_path, "flip", ALLGATHER_PLUGIN.format(flip=True, cls="Flipper", name="flipper"))
    proc = invoke("allgather", *SMALL, "--plugin", str(bad), "--backends", "flipper", "--out", str(tmp_path))
    assert proc.returncode == 1
    frame = results(latest_run(tmp_path, "allgather"))
    assert set(frame["status"]) == {"fail"} and frame["detail"].str.contains("elements differ").all()
    assert "fail: flipper" in proc.stdout
    broken = plugin(tmp_path, "broken", "import no_such_kernel_library\n")
    proc = invoke("allgather", *SMALL, "--plugin", str(broken))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and f"--plugin {broken}: cannot load it: ModuleNotFoundError" in lines[0]


def test_a_plugin_mla_backend_states_what_it_supports(tmp_path):
    mine = plugin(tmp_path, "torchref", MLA_PLUGIN)
    proc = invoke("mla", "--nhead", "16", "--batch", "2", "--ctx", "40", "--page-size", "16", "--kv-dtype", "fp16",
                  "--plugin", str(mine), "--backends", "torchref", "--out", str(tmp_path), probes=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    frame = results(latest_run(tmp_path, "mla"))
    assert set(frame[~frame["persist"]]["status"]) == {"pass"}
    persistent = frame[frame["persist"]]
    assert set(persistent["status"]) == {"unsupported"}
    assert persistent["detail"].str.contains("torchref takes only persist=False (this case: persist=True)", regex=False).all()
    env = invoke("env", "--plugin", str(mine))
    assert env.returncode == 0 and "torchref" in env.stdout  # with where it came from: the plugin's file
    from rocbench.core import registry

    assert registry.get("mla").backends.origins["torchref"] == str(mine)


def test_an_installed_packages_entry_point_registers_its_backend(tmp_path):
    site = tmp_path / "site"
    (site / "rbplugin").mkdir(parents=True)
    (site / "rbplugin" / "__init__.py").write_text(ALLGATHER_PLUGIN.format(flip=False, cls="Installed", name="installed"))
    info = site / "rbplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rbplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rocbench.backends]\ninstalled = rbplugin\n")
    proc = rocbench("allgather", *SMALL, "--backends", "installed", "--skip-batch-probes", "--out", str(tmp_path),
                    env={"PYTHONPATH": f"{REPO}:{site}"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    frame = results(latest_run(tmp_path, "allgather"))
    assert set(frame["backend"]) == {"installed"} and set(frame["status"]) == {"pass"}
