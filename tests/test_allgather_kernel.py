"""The custom all-gather's copy kernel with peers simulated by separate buffers on one device: each
peer's rows land at column `peer` of the output, nothing outside the output is written. Runs on a GPU
when present, else under TRITON_INTERPRET on the CPU (so CI checks the layout logic too)."""
import pytest
import torch

from rocbench.kernels.allgather import gather_from_peers
from tests.helpers import needs_interpreter

pytestmark = [needs_interpreter(on_cpu_only=True), pytest.mark.gpu]  # on a GPU these run compiled

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
POISON = 0x5A


@pytest.mark.parametrize("rows, chunk_bytes", [(1, 32320), (3, 14), (16, 320), (5, 7), (2, 1 << 16)])
@pytest.mark.parametrize("world", [2, 3])
def test_gather_kernel_writes_the_final_layout_and_nothing_else(rows, chunk_bytes, world):
    gen = torch.Generator(device=DEVICE).manual_seed(rows * 7 + chunk_bytes)
    peers = [torch.randint(0, 256, (rows * chunk_bytes,), dtype=torch.uint8, device=DEVICE, generator=gen)
             for _ in range(world)]
    table = torch.tensor([p.data_ptr() for p in peers], dtype=torch.int64, device=DEVICE)
    backing = torch.full((rows * chunk_bytes * world + 64,), POISON, dtype=torch.uint8, device=DEVICE)
    out = backing[16:16 + rows * chunk_bytes * world]  # non-zero offset inside a larger allocation
    gather_from_peers(table, out, rows, chunk_bytes, world)
    expected = torch.cat([p.view(rows, chunk_bytes) for p in peers], dim=1).view(-1)
    assert torch.equal(out, expected)
    assert (backing[:16] == POISON).all() and (backing[16 + out.numel():] == POISON).all(), "wrote outside the output"
