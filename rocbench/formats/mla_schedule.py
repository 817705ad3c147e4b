"""Persistent-kernel work scheduler for MLA decode (plain torch, host side).

In the spirit of AITER's get_mla_metadata_v1, written from scratch. The unit of work is a
(sequence, head group) pair: the kernel's tile holds `heads_per_group` heads times the
sequence's `qlen` query rows, so one pass over the sequence's KV serves all of them. Its cost
is its KV length in granules of `kv_granularity` tokens (the last granule may be partial).
The total cost W is dealt to `num_programs` programs in contiguous quotas of floor(W/P) or
ceil(W/P) granules, walking the units in (sequence, head group) order (or one head group at a
time over its own share of the programs, see build_mla_schedule); a unit that crosses a
quota boundary is split at a granule boundary, and each piece of a split unit writes a
partial (output + LSE) slot that a reduce kernel merges afterwards. Unsplit units write the
final output directly.

Why granules: split points land on multiples of kv_granularity tokens, so a kernel whose
BLOCK_N divides the granularity (and whose pages are >= BLOCK_N) never straddles a page inside
a block. Default 64 = the kernel's default BLOCK_N and a common page size.

Fixed splits (`fixed_split_tokens`, for batch-invariant decode): every unit is cut at
multiples of fixed_split_tokens alone, so where a unit splits -- and so the order its partials
are merged in, and whether it writes the output directly -- depends on its own length, never on
the rest of the batch or the program count. The pieces are then dealt whole.

Invariants (tested): every KV token of every (sequence, head group) is covered exactly once;
every program's load is floor(W/P) or ceil(W/P) granules (fixed splits: at most the mean plus
one piece, since pieces are never cut to fit a quota; whole units dealt for their partials' cost: at most the
quota deal's longest program plus its partials' cost); every partial slot is reduced exactly once, in KV order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Sequence

import torch

# Columns of work_info.
WI_BATCH = 0  # sequence index b (its query rows are b*qlen .. b*qlen+qlen-1)
WI_HEAD_GROUP = 1  # heads g*heads_per_group .. (g+1)*heads_per_group-1
WI_KV_START = 2  # first token (within the sequence) of this item
WI_KV_END = 3  # one past the last token of this item
WI_PARTIAL = 4  # partial slot to write, or -1: the item covers the whole unit, write the output
WI_SEQ_LEN = 5  # the sequence's full context length (for the causal limits of qlen > 1)
WORK_INFO_COLS = 6

# Columns of reduce_final_map.
RF_BATCH = 0
RF_HEAD_GROUP = 1

DEFAULT_KV_GRANULARITY = 64
MAX_TILE_ROWS = 32  # rows (heads x qlen) per kernel tile: the fp32 [rows, 512] accumulator lives in registers


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def pick_heads_per_group(nhead: int, qlen: int = 1, max_rows: int = MAX_TILE_ROWS) -> int:
    """Largest power of two dividing nhead with heads * qlen <= max_rows (at least 1).

    nhead 16 -> 16 (one group per sequence); nhead 128, qlen 1 -> 32 (four groups)."""
    cap = _pow2_floor(max(1, max_rows // qlen))
    hpg = 1
    while hpg * 2 <= cap and nhead % (hpg * 2) == 0:
        hpg *= 2
    return hpg


@dataclass
class MlaSchedule:
    work_indptr: torch.Tensor  # [num_programs + 1] int32: program p runs items work_indptr[p]..[p+1]-1
    work_info: torch.Tensor  # [num_items, WORK_INFO_COLS] int32, columns WI_*
    reduce_indptr: torch.Tensor  # [num_reduce + 1] int32: reduce r merges partial_map[indptr[r]:indptr[r+1]]
    reduce_final_map: torch.Tensor  # [num_reduce, 2] int32: (batch, head group) the merge writes
    reduce_partial_map: torch.Tensor  # [num_partials] int32 partial slots, KV order within a reduce
    program_load: torch.Tensor  # [num_programs] int64 granules per program (diagnostics, tests)
    num_programs: int
    num_active_programs: int  # programs 0..num_active_programs-1 hold the work; the rest exit at once
    num_partials: int
    num_reduce: int
    batch: int
    nhead: int
    qlen: int
    heads_per_group: int
    kv_granularity: int
    fixed_split_tokens: int | None = None  # units cut at multiples of this many tokens only (batch-invariant)
    most_partials: int = 0  # the most partials one reduce merges (0: none), known on the host without a sync

    @property
    def num_items(self) -> int:
        return self.work_info.shape[0]

    @property
    def num_head_groups(self) -> int:
        return self.nhead // self.heads_per_group

    @property
    def rows_per_item(self) -> int:
        """Query rows (qlen x heads_per_group) one work item computes; a partial slot's height."""
        return self.qlen * self.heads_per_group

    def to(self, device) -> "MlaSchedule":
        return replace(
            self,
            work_indptr=self.work_indptr.to(device),
            work_info=self.work_info.to(device),
            reduce_indptr=self.reduce_indptr.to(device),
            reduce_final_map=self.reduce_final_map.to(device),
            reduce_partial_map=self.reduce_partial_map.to(device),
        )

    def describe(self) -> str:
        load = self.program_load.float()
        return (
            f"programs={self.num_programs} active={self.num_active_programs} items={self.num_items} "
            f"split_units={self.num_reduce} "
            f"partials={self.num_partials} max_load={int(load.max())} mean_load={float(load.mean()):.2f} "
            f"(granules of {self.kv_granularity} tokens) heads_per_group={self.heads_per_group} qlen={self.qlen}"
            + (f" fixed_split_tokens={self.fixed_split_tokens}" if self.fixed_split_tokens else "")
        )


def _quotas(total: int, num_programs: int) -> list[int]:
    base, extra = divmod(total, num_programs)
    return [base + (1 if p < extra else 0) for p in range(num_programs)]


def _quota_pieces(costs, programs):
    """Deal units of `costs` granules in order to `programs` in contiguous quotas, cutting a unit
    wherever it crosses a quota boundary. Per unit: its pieces (program, first granule, end granule)."""
    quotas = _quotas(sum(costs), len(programs))
    slot_in_set, left = 0, quotas[0]
    per_unit = []
    for cost in costs:
        pieces = []
        done = 0
        while done < cost:
            while left == 0:  # sum(quotas) == sum(costs), so a program with room always exists
                slot_in_set += 1
                left = quotas[slot_in_set]
            take = min(left, cost - done)
            pieces.append((programs[slot_in_set], done, done + take))
            left -= take
            done += take
        per_unit.append(pieces)
    return per_unit


def _fixed_pieces(costs, programs, split_granules):
    """Cut every unit at multiples of split_granules (its own length alone decides where), then
    give each piece to the program whose equal share of the total holds the piece's midpoint:
    a program's load stays within one piece of the mean, and a unit's pieces go to the same or
    neighbouring programs. Per unit: its pieces (program, first granule, end granule)."""
    total, done = sum(costs), 0
    per_unit = []
    for cost in costs:
        pieces = []
        for first in range(0, cost, split_granules):
            end = min(first + split_granules, cost)
            share = (2 * done + end - first) * len(programs) // (2 * total)
            pieces.append((programs[share], first, end))
            done += end - first
        per_unit.append(pieces)
    return per_unit


def _cut(costs, programs, split_granules):
    if split_granules is None:
        return _quota_pieces(costs, programs)
    return _fixed_pieces(costs, programs, split_granules)


def _longest_first(pieces, programs, units: int):
    """Deal pieces (unit, first granule, end granule), longest first (ties: in the order given), each to the least
    loaded of `programs` (ties: the lowest). Per unit: its pieces (program, first, end), in KV order."""
    least_loaded = [(0, p) for p in sorted(programs)]  # already a heap
    per_unit: list[list[tuple[int, int, int]]] = [[] for _ in range(units)]
    for u, first, end in sorted(pieces, key=lambda piece: piece[1] - piece[2]):
        load, p = heapq.heappop(least_loaded)
        per_unit[u].append((p, first, end))
        heapq.heappush(least_loaded, (load + end - first, p))
    return [sorted(unit, key=lambda piece: piece[1]) for unit in per_unit]


def _whole_pieces(costs, programs):
    """Deal every unit whole, longest first, to the least loaded of `programs` (ties: the lowest): no unit is cut,
    so no partials. Per unit: its one piece (program, 0, cost)."""
    return _longest_first([(u, 0, cost) for u, cost in enumerate(costs)], programs, len(costs))


def _even_pieces(costs, programs):
    """Cut every unit into the fewest equal pieces (to a granule) of at most the quota (its ceil(total / programs)
    granules), then deal the pieces longest first to the least loaded of `programs` (ties: the lowest). Where units
    are fewer than programs, each program then holds at most one piece: 64 units of 64 granules on 132 programs are
    128 halves of 32, where the quota deal gives 60 programs two pieces (two partials, two items) for a longest load
    of 32 all the same. Per unit: its pieces (program, first granule, end granule), in KV order."""
    quota = _quotas(sum(costs), len(programs))[0]  # the quota deal's largest: ceil(total / programs)
    pieces = []
    for u, cost in enumerate(costs):
        count = max(1, -(-cost // quota))
        bounds = [cost * i // count for i in range(count + 1)]
        pieces += [(u, first, end) for first, end in zip(bounds, bounds[1:]) if end > first]
    return _longest_first(pieces, programs, len(costs))


def _longest_program(pieces_per_unit, partial_cost: float) -> float:
    """The most loaded program's granules, each piece of a cut unit charged partial_cost granules more (its partial
    written, read back and merged)."""
    load: dict[int, float] = {}
    for pieces in pieces_per_unit:
        extra = partial_cost if len(pieces) > 1 else 0.0
        for p, first, end in pieces:
            load[p] = load.get(p, 0.0) + end - first + extra
    return max(load.values(), default=0.0)


def _deal(costs, programs, split_granules, partial_cost: float | None, even_pieces: bool = False):
    """The units' pieces over `programs`: cut to quotas (or at fixed splits), or, given partial_cost and no fixed
    splits, whole where that loads no program more than the cut deal's longest program with its partials; with
    even_pieces, also cut into equal pieces (_even_pieces) where that loads the longest program least, partials
    priced (ties keep the deals before it: whole, then quotas)."""
    pieces = _cut(costs, programs, split_granules)
    if partial_cost is None or split_granules is not None or all(len(unit) == 1 for unit in pieces):
        return pieces
    deals = [_whole_pieces(costs, programs), pieces] + ([_even_pieces(costs, programs)] if even_pieces else [])
    return min(deals, key=lambda deal: _longest_program(deal, partial_cost))  # the first of the least loaded


def _useful_programs(costs, min_granules_per_program, split_granules) -> int:
    """Programs worth running: each gets >= min_granules_per_program granules and, with fixed
    splits (a piece is never shared), at least one piece."""
    useful = sum(costs) // min_granules_per_program
    if split_granules is not None:
        useful = min(useful, sum(-(-cost // split_granules) for cost in costs))
    return useful


def _emit(units, pieces_per_unit, kv_granularity, items_per_program, next_partial, reduce_final, reduce_members):
    """Work items for the units' pieces; a unit of several pieces gets partial slots and a reduce
    entry (its slots in KV order). Returns the next free partial slot."""
    for (b, g, length), pieces in zip(units, pieces_per_unit):
        split = len(pieces) > 1
        members = []
        for p, first, end in pieces:
            slot = -1
            if split:
                slot = next_partial
                members.append(slot)
                next_partial += 1
            kv_start = first * kv_granularity
            kv_end = min(end * kv_granularity, length)
            items_per_program[p].append([b, g, kv_start, kv_end, slot, length])
        if split:
            reduce_final.append([b, g])
            reduce_members.append(members)
    return next_partial


def build_mla_schedule(
    seq_lens: Sequence[int] | torch.Tensor,
    qlen: int,
    nhead: int,
    heads_per_group: int,
    num_programs: int,
    kv_granularity: int = DEFAULT_KV_GRANULARITY,
    min_granules_per_program: int = 1,
    fixed_split_tokens: int | None = None,
    partial_cost: float | None = None,
    even_pieces: bool = False,
) -> MlaSchedule:
    """Split all (sequence, head group) KV work evenly over num_programs. Tensors are on CPU.

    min_granules_per_program > 1 uses fewer programs when the work is small, so that no
    program gets less than that many granules: every split costs a partial (fp32 [rows, 512]
    written and read back), which at small batch can rival the KV bytes themselves.

    fixed_split_tokens (a multiple of kv_granularity) cuts every unit at multiples of that many
    tokens instead of at quota boundaries, and deals the pieces whole (batch-invariant
    splits; loads within one piece of the mean, and no more programs than pieces are used).

    With 1 < G <= num_programs head groups, program p serves head group p % G only, and each
    group's work is dealt over its own floor(num_programs / G) programs (the remainder idle):
    the G programs that read the same KV then run side by side at the same pace, so one of
    them pulls a block from HBM and the others hit L2. With G > num_programs the
    (sequence, group) units are dealt in order over all programs.

    partial_cost (granules of KV that one partial costs: written, read back, merged): the units of a group (or of
    all) are dealt whole, longest first, where no program then carries more than the quota deal's longest program
    plus its partials' cost, so that nothing is split and nothing reduced (nhead 128, batch 64 x 4096 tokens: 128
    units on 132 programs, cut to save one granule of 64, gave 256 partials and a reduce of 7% of the call).
    even_pieces (with partial_cost): each unit cut in equal pieces is a third deal to price (_even_pieces)."""
    if isinstance(seq_lens, torch.Tensor):
        seq_lens = seq_lens.tolist()
    seq_lens = [int(x) for x in seq_lens]
    if not seq_lens:
        raise ValueError("empty batch")
    if min(seq_lens) < qlen:
        raise ValueError(f"every sequence needs >= qlen={qlen} tokens")
    if nhead % heads_per_group != 0:
        raise ValueError(f"nhead {nhead} is not a multiple of heads_per_group {heads_per_group}")
    if num_programs < 1 or kv_granularity < 1 or min_granules_per_program < 1:
        raise ValueError("num_programs, kv_granularity and min_granules_per_program must be >= 1")
    if fixed_split_tokens is not None and (fixed_split_tokens < 1 or fixed_split_tokens % kv_granularity):
        raise ValueError(f"fixed_split_tokens {fixed_split_tokens} must be a positive multiple of "
                         f"kv_granularity {kv_granularity}")

    groups = nhead // heads_per_group
    cost = [-(-length // kv_granularity) for length in seq_lens]
    split_granules = None if fixed_split_tokens is None else fixed_split_tokens // kv_granularity
    items_per_program: list[list[list[int]]] = [[] for _ in range(num_programs)]
    reduce_final: list[list[int]] = []
    reduce_members: list[list[int]] = []
    next_partial = 0
    if 1 < groups <= num_programs:
        # num_programs % groups programs stay idle so that every group gets an equal share
        useful = _useful_programs(cost, min_granules_per_program, split_granules)
        per_group = max(1, min(num_programs // groups, useful))
        active = per_group * groups
        for g in range(groups):
            units = [(b, g, length) for b, length in enumerate(seq_lens)]
            programs = list(range(g, active, groups))
            deal = _deal(cost, programs, split_granules, partial_cost, even_pieces)
            next_partial = _emit(units, deal, kv_granularity, items_per_program, next_partial, reduce_final,
                                 reduce_members)
    else:
        units = [(b, g, length) for b, length in enumerate(seq_lens) for g in range(groups)]
        costs = [cost[b] for b, _, _ in units]
        active = max(1, min(num_programs, _useful_programs(costs, min_granules_per_program, split_granules)))
        deal = _deal(costs, list(range(active)), split_granules, partial_cost, even_pieces)
        next_partial = _emit(units, deal, kv_granularity, items_per_program, next_partial, reduce_final,
                             reduce_members)

    counts = [len(items) for items in items_per_program]
    work_indptr = torch.zeros(num_programs + 1, dtype=torch.int32)
    work_indptr[1:] = torch.cumsum(torch.tensor(counts), 0)
    flat = [item for items in items_per_program for item in items]
    work_info = torch.tensor(flat, dtype=torch.int32).reshape(-1, WORK_INFO_COLS)
    reduce_indptr = torch.zeros(len(reduce_members) + 1, dtype=torch.int32)
    if reduce_members:
        reduce_indptr[1:] = torch.cumsum(torch.tensor([len(m) for m in reduce_members]), 0)
    reduce_partial_map = torch.tensor([s for m in reduce_members for s in m], dtype=torch.int32)
    reduce_final_map = torch.tensor(reduce_final, dtype=torch.int32).reshape(-1, 2)
    load = [sum(-(-(it[3] - it[2]) // kv_granularity) for it in items) for items in items_per_program]

    return MlaSchedule(
        work_indptr=work_indptr,
        work_info=work_info,
        reduce_indptr=reduce_indptr,
        reduce_final_map=reduce_final_map,
        reduce_partial_map=reduce_partial_map,
        program_load=torch.tensor(load, dtype=torch.int64),
        num_programs=num_programs,
        num_active_programs=active,
        num_partials=next_partial,
        num_reduce=len(reduce_members),
        batch=len(seq_lens),
        nhead=nhead,
        qlen=qlen,
        heads_per_group=heads_per_group,
        kv_granularity=kv_granularity,
        fixed_split_tokens=fixed_split_tokens,
        most_partials=max((len(m) for m in reduce_members), default=0),
    )
