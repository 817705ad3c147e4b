"""GPU-only checks of the custom all-gather: the copy kernel on one GPU, the whole suite on several."""
import pytest
import torch

from tests.helpers import latest_run, results, rocbench

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_2_gpus = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs")


@needs_gpu
@pytest.mark.parametrize("rows, chunk_bytes", [(1, 32320), (3, 14), (64, 32320), (5, 7), (2, 1 << 16)])
@pytest.mark.parametrize("world", [2, 3])
def test_gather_kernel_layout(rows, chunk_bytes, world):
    """Peers simulated by separate buffers on one GPU: each peer's rows land at column `peer`."""
    from rocbench.kernels.allgather import gather_from_peers

    gen = torch.Generator(device="cuda").manual_seed(rows * 7 + chunk_bytes)
    peers = [torch.randint(0, 256, (rows * chunk_bytes,), dtype=torch.uint8, device="cuda", generator=gen) for _ in range(world)]
    table = torch.tensor([p.data_ptr() for p in peers], dtype=torch.int64, device="cuda")
    backing = torch.full((rows * chunk_bytes * world + 64,), 0x5A, dtype=torch.uint8, device="cuda")
    out = backing[16:16 + rows * chunk_bytes * world]  # non-zero offset inside a larger allocation
    gather_from_peers(table, out, rows, chunk_bytes, world)
    expected = torch.cat([p.view(rows, chunk_bytes) for p in peers], dim=1).view(-1)
    assert torch.equal(out, expected)
    assert (backing[:16] == 0x5A).all() and (backing[16 + out.numel():] == 0x5A).all(), "wrote outside the output"


@needs_2_gpus
def test_custom_vs_nccl_all_dtypes_with_graphs(tmp_path):
    tp = min(torch.cuda.device_count(), 8)
    proc = rocbench("allgather", "--tp", str(tp), "--correctness-only", "--cuda-graph", "--shapes", "1x16160,3x40,2x5",
                    "--dims", "0,-1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    frame = results(latest_run(tmp_path, "allgather"))
    assert set(frame["backend"]) == {"torch", "custom"}
    assert set(frame["status"]) == {"pass"}
    assert frame["graph_replays"].str.startswith("3/3").all()
