"""Test-only kernels: read a whole shuffled tensor back with the MoE GEMMs' own address helpers, so the
index math the kernel uses is checked against the layout functions byte for byte."""
import torch
import triton
import triton.language as tl

from rocbench.kernels.moe_a16w4 import LAYOUT_IDS
from rocbench.kernels.mxfp4_weights import s_col_part, s_row_part, w_row_base


@triton.jit
def _gather_weight_kernel(w_ptr, out_ptr, N, KPB, LAYOUT, GATE_UP: tl.constexpr,
                          BR: tl.constexpr, NB: tl.constexpr):
    e64 = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BR + tl.arange(0, BR)
    bases = w_ptr + w_row_base(e64, rows, N, KPB, LAYOUT, GATE_UP)
    offs_c = tl.arange(0, NB)
    offs_i = tl.arange(0, 16)
    for c0 in range(0, KPB // 16, NB):
        blk = c0 + offs_c
        v = tl.load(bases[:, None, None] + (blk * 256)[None, :, None] + offs_i[None, None, :])
        dst = (e64 * N + rows)[:, None, None] * KPB + (blk * 16)[None, :, None] + offs_i[None, None, :]
        tl.store(out_ptr + dst, v)


@triton.jit
def _gather_scale_kernel(s_ptr, out_ptr, N, KB, SC, LAYOUT, GATE_UP: tl.constexpr,
                         BR: tl.constexpr, BC: tl.constexpr):
    e64 = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BR + tl.arange(0, BR)
    cols = tl.arange(0, BC)
    src = s_row_part(e64, rows, N, SC, LAYOUT, GATE_UP)[:, None] + s_col_part(cols)[None, :]
    mask = (cols < KB)[None, :]
    v = tl.load(s_ptr + src, mask=mask)
    tl.store(out_ptr + (e64 * N + rows)[:, None] * KB + cols[None, :], v, mask=mask)


def debug_read_weight(w_shuffled: torch.Tensor, layout: str, gate_up: bool) -> torch.Tensor:
    """Unshuffle [E, N, K/2] bytes with the kernel's address helpers (tests the index math)."""
    e, n, kpb = w_shuffled.shape
    out = torch.empty_like(w_shuffled)
    nb = 2 if (kpb // 16) % 2 == 0 else 1
    _gather_weight_kernel[(e, n // 16)](w_shuffled, out, n, kpb, LAYOUT_IDS[layout], gate_up,
                                        BR=16, NB=nb)
    return out


def debug_read_scale(s_shuffled: torch.Tensor, layout: str, gate_up: bool, experts: int,
                     n: int, k_blocks: int) -> torch.Tensor:
    """Unshuffle a 2-D shuffled scale to [E, N, K/32] with the kernel's address helpers."""
    out = torch.empty(experts, n, k_blocks, dtype=torch.uint8, device=s_shuffled.device)
    bc = max(16, triton.next_power_of_2(k_blocks))
    _gather_scale_kernel[(experts, n // 16)](s_shuffled, out, n, k_blocks, s_shuffled.shape[1],
                                             LAYOUT_IDS[layout], gate_up, BR=16, BC=bc)
    return out
