"""One-shot all-gather copy kernel: every rank pulls each peer's staged chunk over P2P (NVLink).

Peers' buffers are reached through a table of raw device addresses (from symmetric memory), so a
single launch reads all peers and writes the output directly in its final layout: for a last-dim
gather, each peer's chunk lands side by side in every row, with no separate rearrange pass.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_WORDS = 1024  # words per program: 8 KiB with 8-byte words


@triton.jit
def _gather_kernel(peer_ptrs, out_ptr, chunk_words, col_blocks, world_size, WORD: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    peer = tl.program_id(1)
    row = pid // col_blocks  # scalar division: the per-element offsets stay contiguous
    col_block = pid - row * col_blocks
    if WORD == 8:
        word_ty = tl.int64
    elif WORD == 4:
        word_ty = tl.int32
    elif WORD == 2:
        word_ty = tl.int16
    else:
        word_ty = tl.int8
    src = tl.load(peer_ptrs + peer).to(tl.pointer_type(word_ty))
    src = tl.multiple_of(src, 16)  # symmetric-memory buffers are allocated with large alignment
    cols = col_block * BLOCK + tl.arange(0, BLOCK)
    mask = cols < chunk_words
    row64 = row.to(tl.int64)
    vals = tl.load(src + row64 * chunk_words + cols, mask=mask)
    dst = out_ptr.to(tl.pointer_type(word_ty)) + row64 * (world_size * chunk_words) + peer * chunk_words + cols
    tl.store(dst, vals, mask=mask)


def word_size(*byte_counts: int) -> int:
    """Widest word that divides every byte count and address involved."""
    for word in (8, 4, 2, 1):
        if all(n % word == 0 for n in byte_counts):
            return word
    return 1


def gather_from_peers(peer_ptrs: torch.Tensor, out: torch.Tensor, rows: int, chunk_bytes: int, world_size: int) -> None:
    """out (bytes): rows x (world_size * chunk_bytes); peer p's staged rows x chunk_bytes land at column p."""
    word = word_size(chunk_bytes, out.data_ptr())
    chunk_words = chunk_bytes // word
    block = min(BLOCK_WORDS, triton.next_power_of_2(chunk_words))
    col_blocks = triton.cdiv(chunk_words, block)
    grid = (rows * col_blocks, world_size)
    _gather_kernel[grid](peer_ptrs, out, chunk_words, col_blocks, world_size, WORD=word, BLOCK=block)
