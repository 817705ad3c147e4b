"""Batch-invariance probes for MLA decode: sequence 0 of the case's batch, with the same q rows and KV
tokens, run alone, last in the batch, and beside longer sequences (what split-count heuristics react to)."""
from __future__ import annotations

import dataclasses
import zlib

import torch

from rocbench.core.axes import Case
from rocbench.core.harness.invariance import BatchProbe
from rocbench.core.suite import RankContext
from rocbench.formats.paged_kv import KV_LORA_RANK, PagedKV, build_paged_kv, make_query

LONGER = 4  # the neighbours' length, in multiples of the case's ctx
MIN_NEIGHBOURS = 7


def token_slots(kv: PagedKV, seq: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(page, offset) of each of the sequence's first `length` tokens in the paged buffer."""
    pages = kv.kv_indices[kv.kv_indptr[seq]:kv.kv_indptr[seq + 1]].long()
    tokens = torch.arange(length, device=pages.device)
    return pages[tokens // kv.page_size], tokens % kv.page_size


def probe_batch(case: Case, base, lens: list[int], slot: int, ctx: RankContext):
    """An MlaIO for `lens` with the base batch's sequence 0 copied to `slot` (its q rows and raw KV bytes,
    and the base's fp8 scale, which a serving engine would hold fixed), and the probe's output rows."""
    qlen, nhead = case["qlen"], case["nhead"]
    gen = torch.Generator(device=ctx.device).manual_seed(zlib.crc32(f"{ctx.seed}/probe/{case.input_key}/{lens}/{slot}".encode()))
    kv = build_paged_kv(lens, case["page_size"], case["kv_dtype"], gen, ctx.device)
    if base.kv.kv_scale is not None:
        kv.kv_scale.copy_(base.kv.kv_scale)
    length = lens[slot]
    kv.kv_buffer[token_slots(kv, slot, length)] = base.kv.kv_buffer[token_slots(base.kv, 0, length)]
    q = make_query(len(lens) * qlen, nhead, case["q_dtype"], gen, ctx.device)
    q[slot * qlen:(slot + 1) * qlen] = base.q[:qlen]
    out = torch.full((len(lens) * qlen, nhead, KV_LORA_RANK), float("nan"), dtype=case["q_dtype"], device=ctx.device)
    return dataclasses.replace(base, q=q, kv=kv, out=out), rows_of(slot, qlen)


def rows_of(slot: int, qlen: int):
    return lambda outputs: {name: t[slot * qlen:(slot + 1) * qlen] for name, t in outputs.items()}


def mla_probes(case: Case, io, ctx: RankContext) -> list[BatchProbe]:
    lens = [int(x) for x in io.kv.seq_lens.cpu()]
    batch, probe_len = len(lens), lens[0]
    probes = [BatchProbe(f"in its batch of {batch}, first", case, lambda: (io, rows_of(0, case["qlen"])))]

    def add(name: str, new_lens: list[int], slot: int) -> None:
        variant = case.replaced(batch=len(new_lens))
        probes.append(BatchProbe(name, variant, lambda: probe_batch(variant, io, new_lens, slot, ctx)))

    if batch > 1:
        add("alone", [probe_len], 0)
        add(f"last of {batch}", lens[1:] + [probe_len], batch - 1)
    neighbours = max(batch - 1, 2 if ctx.device.type == "cpu" else MIN_NEIGHBOURS)  # the interpreter is slow
    add(f"beside {neighbours} sequences of {LONGER * case['ctx']} tokens", [probe_len] + [LONGER * case["ctx"]] * neighbours, 0)
    return probes
