"""Batch-invariance probes for MoE: token 0 of the case's batch (same activations, experts and weights) run
alone, last, among tokens routed to the same experts, and at several token counts (what tile and split
choices react to)."""
from __future__ import annotations

import dataclasses
import zlib

import torch

from rocbench.core.axes import Case
from rocbench.core.harness.invariance import BatchProbe
from rocbench.core.suite import RankContext
from rocbench.suites.moe.reference import route

TOKEN_COUNTS = (1, 16, 64, 1024)
INTERPRETER_TOKEN_COUNTS = (1, 5)  # the CPU interpreter runs tiny batches
SAME_EXPERTS = 16  # tokens in the batch whose every token is routed to the probe's experts
INTERPRETER_SAME_EXPERTS = 4


def probe_batch(case: Case, base, tokens: int, slot: int, ctx: RankContext, same_experts: bool = False):
    """A MoeIO of `tokens` tokens sharing the base's weights, with the base's token 0 at `slot`; the other
    tokens are random, routed at random or (same_experts) to exactly the probe's experts."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{ctx.seed}/probe/{case.input_key}/{tokens}/{slot}/{same_experts}".encode()))
    hidden, pad = base.x.shape[1], case["hidden_pad"]
    x = torch.randn(tokens, hidden, generator=gen).to(device=ctx.device, dtype=base.x.dtype)
    x[:, hidden - pad:] = 0
    weights, ids = route(torch.randn(tokens, case["experts"], generator=gen), case["topk"], case["renormalize"])
    weights, ids = weights.to(ctx.device), ids.to(ctx.device)
    if same_experts:
        ids[:] = base.topk_ids[0]
    x[slot], weights[slot], ids[slot] = base.x[0], base.topk_weights[0], base.topk_ids[0]
    out = torch.full_like(x, float("nan"))
    io = dataclasses.replace(base, x=x, topk_weights=weights.contiguous(), topk_ids=ids.contiguous(), out=out)
    return io, row_of(slot)


def row_of(slot: int):
    return lambda outputs: {name: t[slot:slot + 1] for name, t in outputs.items()}


def moe_probes(case: Case, io, ctx: RankContext) -> list[BatchProbe]:
    tokens = case["tokens"]
    probes = [BatchProbe(f"in its batch of {tokens} tokens, first", case, lambda: (io, row_of(0)))]

    def add(name: str, count: int, slot: int, same_experts: bool = False) -> None:
        variant = case.replaced(tokens=count)
        probes.append(BatchProbe(name, variant, lambda: probe_batch(variant, io, count, slot, ctx, same_experts)))

    if tokens > 1:
        add("alone", 1, 0)
        add(f"last of {tokens}", tokens, tokens - 1)
    on_cpu = ctx.device.type == "cpu"
    same = INTERPRETER_SAME_EXPERTS if on_cpu else SAME_EXPERTS
    add(f"among {same} tokens routed to its experts", same, 0, same_experts=True)
    for count in INTERPRETER_TOKEN_COUNTS if on_cpu else TOKEN_COUNTS:
        if count not in (1, tokens, same):
            add(f"among {count} tokens", count, count // 2)
    return probes
