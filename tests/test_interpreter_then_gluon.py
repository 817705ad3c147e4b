"""A process that ran a kernel under Triton's interpreter can still compile Gluon kernels (on a GPU box the test
workers both probe the interpreter and compile the Gluon MLA tile)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the interpreter imports Gluon during its first run, with triton.language patched; Gluon's builtins take their
# signature from tl's, so one made then has no _semantic and the code generator calls it without one
CHILD = """
import inspect, sys, torch
if sys.argv[1] == "probe":
    from rocbench.core.interpreter import interpreter_problem
    interpreter_problem()
else:
    from rocbench.kernels.allgather import gather_from_peers
    peers = [torch.arange(64, dtype=torch.int32) + i for i in range(2)]
    out = torch.zeros(128, dtype=torch.int32)
    gather_from_peers(torch.tensor([p.data_ptr() for p in peers]), out, 1, 256, 2)
    assert torch.equal(out, torch.cat(peers))
from triton.experimental.gluon import language as gl
print(sorted(inspect.signature(gl.exp2).parameters))
"""


@pytest.mark.parametrize("first_run", ["probe", "kernel"])
def test_gluon_imported_after_an_interpreted_run_keeps_its_builtins(first_run):
    pytest.importorskip("triton.experimental.gluon.language")
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", CHILD, first_run], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "_semantic" in done.stdout, done.stdout
