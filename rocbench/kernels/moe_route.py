"""MoE routing for the table path: the (token, slot) pairs grouped by expert, and the table of BM-row blocks
the GEMM programs take. A stable counting sort in three Triton kernels, no host sync (CUDA graphs capture it),
integers only (batch invariance is unaffected):

  1. one program per chunk of CHUNK pairs: the chunk's histogram over the sort keys;
  2. one program: for every key, its pairs in earlier chunks (a column scan of the histograms, in place) and its
     first place; the block table from the per-expert totals;
  3. one program per chunk: each pair's place = its key's first place + the key's pairs in earlier chunks + its
     rank among the chunk's earlier pairs of that key.

The result equals a stable argsort of the keys. It replaced that argsort plus torch's where / cast / scatter_add
and a block-table kernel. H200, kernel_us (cold L2), same bits in every case: 64 pairs over 128 experts 22.1 -> 8.3
us; 256 pairs (gpt-oss x 64 tokens) 39.2 -> 11.0; 512 pairs over 256 experts (DeepSeek-R1 x 64) 53.3 -> 23.6; 8192
pairs (DeepSeek-R1 x 1024) 75.1 -> 31.6; 32768 pairs 98.4 -> 69.1; 65536 pairs 132.9 -> 120.9 (the one-program
scan's loop over 512 histogram rows). CUDA-graph replay alike.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 128  # pairs per program; the in-chunk rank compares every pair with every pair: CHUNK^2 per program
SCAN_ROWS = 16  # histogram rows the scan loads per step


@triton.jit
def _sort_key(ids_ptr, offs, P, E):
    """Expert ids in [0, E) are their own key; invalid ids and lanes past the last pair take key E: they sort
    after every valid pair and join no block (lanes past P exist only in the last chunk, so they move no pair)."""
    ids = tl.load(ids_ptr + offs, mask=offs < P, other=-1)
    return tl.where((ids >= 0) & (ids < E), ids, E)


@triton.jit
def _chunk_histogram_kernel(ids_ptr, hist_ptr, P, E, CH: tl.constexpr, K_PAD: tl.constexpr):
    c = tl.program_id(0)
    key = _sort_key(ids_ptr, c * CH + tl.arange(0, CH), P, E)
    tl.store(hist_ptr + c * K_PAD + tl.arange(0, K_PAD), tl.histogram(key, K_PAD))


@triton.jit
def _write_block_table(counts, keys, blk_e_ptr, blk_row0_ptr, blk_n_ptr, MB, BM: tl.constexpr,
                       MBC: tl.constexpr):
    """The table of BM-row blocks over pairs sorted by expert, counts[e] pairs each (keys = e). Every expert
    writes its own blocks, the j-th of all experts at once: max(blocks per expert) steps of one store per expert.
    (It replaced a search of every block among all experts, an [experts, 64] compare per 64 blocks: ncu on the
    H200 had the scan kernel at 19.6 us for 512 pairs over 256 experts, 255 registers.)"""
    seg_start = tl.cumsum(counts, axis=0) - counts
    nblk = (counts + BM - 1) // BM
    blk_start = tl.cumsum(nblk, axis=0) - nblk
    used = tl.sum(nblk, axis=0)
    for b0 in range(0, MB, MBC):  # the blocks no expert fills (addresses disjoint from the loop below)
        offs_b = b0 + tl.arange(0, MBC)
        unused = (offs_b >= used) & (offs_b < MB)
        tl.store(blk_e_ptr + offs_b, tl.full([MBC], -1, tl.int32), mask=unused)
        tl.store(blk_row0_ptr + offs_b, tl.zeros([MBC], tl.int32), mask=unused)
        tl.store(blk_n_ptr + offs_b, tl.zeros([MBC], tl.int32), mask=unused)
    for j in range(0, tl.max(nblk, axis=0)):
        b = blk_start + j
        mine = (j < nblk) & (b < MB)
        tl.store(blk_e_ptr + b, keys, mask=mine)
        tl.store(blk_row0_ptr + b, seg_start + j * BM, mask=mine)
        tl.store(blk_n_ptr + b, tl.minimum(counts - j * BM, BM), mask=mine)


@triton.jit
def _chunk_scan_kernel(hist_ptr, start_ptr, blk_e_ptr, blk_row0_ptr, blk_n_ptr, C, E, MB, K_PAD: tl.constexpr,
                       E_PAD: tl.constexpr, ROWS: tl.constexpr, BM: tl.constexpr, MBC: tl.constexpr):
    keys = tl.arange(0, K_PAD)
    total = tl.zeros([K_PAD], tl.int32)
    for c0 in range(0, C, ROWS):
        rows = c0 + tl.arange(0, ROWS)
        ptrs = hist_ptr + rows[:, None] * K_PAD + keys[None, :]
        h = tl.load(ptrs, mask=(rows < C)[:, None], other=0)
        tl.store(ptrs, tl.cumsum(h, axis=0) - h + total[None, :], mask=(rows < C)[:, None])  # pairs in earlier chunks
        total += tl.sum(h, axis=0)
    tl.store(start_ptr + keys, tl.cumsum(total, axis=0) - total)
    tl.store(start_ptr + K_PAD + keys, total)
    # the table needs the E valid experts only: reread them at their own width (K_PAD may be twice E_PAD)
    tl.debug_barrier()
    experts = tl.arange(0, E_PAD)
    counts = tl.load(start_ptr + K_PAD + experts, mask=experts < E, other=0)
    _write_block_table(counts, experts, blk_e_ptr, blk_row0_ptr, blk_n_ptr, MB, BM, MBC)


@triton.jit
def _place_kernel(ids_ptr, before_ptr, start_ptr, sorted_ptr, P, E, CH: tl.constexpr, K_PAD: tl.constexpr):
    c = tl.program_id(0)
    lane = tl.arange(0, CH)
    offs = c * CH + lane
    key = _sort_key(ids_ptr, offs, P, E)
    earlier = (key[None, :] == key[:, None]) & (lane[None, :] < lane[:, None])
    place = (tl.load(start_ptr + key) + tl.load(before_ptr + c * K_PAD + key)
             + tl.sum(earlier.to(tl.int32), axis=1))
    tl.store(sorted_ptr + place, offs, mask=offs < P)


def route_blocks(ids: torch.Tensor, experts: int, bm: int, num_blocks: int):
    """Pairs grouped by expert and their BM-row block table, for the GEMMs' table routing.

    ids: [P] int32 expert ids (ids outside [0, E) sort last and join no block). Returns (sorted_ids [P],
    blk_e, blk_row0, blk_n [num_blocks]) int32: sorted_ids is the stable argsort of the expert ids (pair order
    kept within an expert)."""
    pairs = ids.numel()
    chunks = triton.cdiv(pairs, CHUNK)
    k_pad = triton.next_power_of_2(experts + 1)  # the experts and the key of invalid ids
    hist = torch.empty(chunks, k_pad, dtype=torch.int32, device=ids.device)
    start = torch.empty(2, k_pad, dtype=torch.int32, device=ids.device)  # first place, total per key
    sorted_ids = torch.empty(pairs, dtype=torch.int32, device=ids.device)
    table = torch.empty(3, num_blocks, dtype=torch.int32, device=ids.device)
    _chunk_histogram_kernel[(chunks,)](ids, hist, pairs, experts, CH=CHUNK, K_PAD=k_pad, num_warps=4)
    _chunk_scan_kernel[(1,)](hist, start, table[0], table[1], table[2], chunks, experts, num_blocks, K_PAD=k_pad,
                             E_PAD=triton.next_power_of_2(experts), ROWS=SCAN_ROWS, BM=bm, MBC=64, num_warps=8)
    _place_kernel[(chunks,)](ids, hist, start, sorted_ids, pairs, experts, CH=CHUNK, K_PAD=k_pad, num_warps=8)
    return sorted_ids, table[0], table[1], table[2]
