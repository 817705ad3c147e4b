"""The whole all-gather suite on several GPUs (the copy kernel alone: test_allgather_kernel.py)."""
import pytest
import torch

from tests.helpers import latest_run, results, rocbench

pytestmark = [pytest.mark.gpu, pytest.mark.gpu_exclusive]  # times collectives over every GPU
needs_2_gpus = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs")


@needs_2_gpus
def test_custom_vs_nccl_all_dtypes_with_graphs(tmp_path):
    tp = min(torch.cuda.device_count(), 8)
    proc = rocbench("allgather", "--tp", str(tp), "--correctness-only", "--cuda-graph", "--shapes", "1x16160,3x40,2x5", "--timeout", "60",
                    "--dims", "0,-1", "--out", str(tmp_path), on_gpu=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    frame = results(latest_run(tmp_path, "allgather"))
    assert set(frame["backend"]) == {"torch", "custom"}
    assert set(frame["status"]) == {"pass"}
    assert frame["graph_replays"].str.startswith("3/3").all()
