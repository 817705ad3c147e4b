"""Invariants of the persistent MLA scheduler over many random batches."""

import random
from collections import defaultdict

import pytest
import torch

from rocbench.formats.paged_kv import make_seq_lens
from rocbench.formats.mla_schedule import (
    WI_BATCH,
    WI_HEAD_GROUP,
    WI_KV_END,
    WI_KV_START,
    WI_PARTIAL,
    WI_SEQ_LEN,
    WORK_INFO_COLS,
    build_mla_schedule,
    pick_heads_per_group,
)


def check_invariants(s, seq_lens, quota_balance=True):
    """Asserts every invariant the kernels rely on; returns nothing. quota_balance=False: a deal of whole units
    (partial_cost), whose balance its own tests bound."""
    P, G, gran = s.num_programs, s.num_head_groups, s.kv_granularity
    indptr = s.work_indptr.tolist()
    info = s.work_info.tolist()
    assert s.work_info.dtype == torch.int32 and s.work_indptr.dtype == torch.int32
    assert len(indptr) == P + 1 and indptr[0] == 0 and indptr[-1] == len(info)
    assert all(a <= b for a, b in zip(indptr, indptr[1:]))
    assert all(len(row) == WORK_INFO_COLS for row in info)

    # 1. Coverage: the items of each (sequence, head group) tile [0, L) exactly once.
    pieces = defaultdict(list)
    load = [0] * P
    for p in range(P):
        for row in info[indptr[p] : indptr[p + 1]]:
            b, g = row[WI_BATCH], row[WI_HEAD_GROUP]
            start, end = row[WI_KV_START], row[WI_KV_END]
            assert 0 <= start < end <= seq_lens[b] and start % gran == 0
            assert row[WI_SEQ_LEN] == seq_lens[b]
            pieces[(b, g)].append((start, end, row[WI_PARTIAL]))
            load[p] += -(-(end - start) // gran)
    assert set(pieces) == {(b, g) for b in range(len(seq_lens)) for g in range(G)}
    for (b, g), ps in pieces.items():
        ps.sort()
        assert ps[0][0] == 0 and ps[-1][1] == seq_lens[b]
        assert all(prev[1] == nxt[0] for prev, nxt in zip(ps, ps[1:]))
        if len(ps) == 1:
            assert ps[0][2] == -1  # a whole unit writes the output directly
        else:
            assert all(slot >= 0 for _, _, slot in ps)

    # 2. Balance: every active program within one granule of the mean (programs are
    #    partitioned by head group in equal shares when G <= P); the rest are idle. Fixed
    #    splits deal whole pieces: no program above the mean by more than one piece.
    total = sum(-(-n // gran) for n in seq_lens) * G
    active = s.num_active_programs
    assert 1 <= active <= P and sum(load) == total
    if quota_balance and s.fixed_split_tokens is None:
        assert max(load[:active]) - min(load[:active]) <= 1, (max(load[:active]), min(load[:active]))
    elif quota_balance:
        assert max(load[:active]) <= total / active + s.fixed_split_tokens // gran
    assert all(x == 0 for x in load[active:])
    assert s.program_load.tolist() == load

    # 3. Reduce maps: every partial slot is written by exactly one item and merged exactly once,
    #    in KV order, into the (sequence, head group) that owns it.
    slots_written = [row[WI_PARTIAL] for row in info if row[WI_PARTIAL] >= 0]
    assert sorted(slots_written) == list(range(s.num_partials))
    assert sorted(s.reduce_partial_map.tolist()) == list(range(s.num_partials))
    rptr = s.reduce_indptr.tolist()
    assert len(rptr) == s.num_reduce + 1 and rptr[0] == 0 and rptr[-1] == s.num_partials
    finals = s.reduce_final_map.tolist()
    assert len(finals) == s.num_reduce == sum(1 for ps in pieces.values() if len(ps) > 1)
    for r, (b, g) in enumerate(finals):
        members = s.reduce_partial_map[rptr[r] : rptr[r + 1]].tolist()
        assert members == [slot for _, _, slot in pieces[(b, g)]]  # KV order
    assert len({tuple(f) for f in finals}) == len(finals)
    # the host's count of the most partials a merge takes (the reduce's chunk), without reading the device's maps
    assert s.most_partials == max((b - a for a, b in zip(rptr, rptr[1:])), default=0)


def _random_case(rng):
    kind = rng.choice(["random", "tiny", "skewed", "uniform", "single"])
    batch = 1 if kind == "single" else rng.choice([1, 2, 5, 17, 64])
    gran = rng.choice([1, 16, 64])
    qlen = rng.choice([1, 1, 2, 3, 4])
    if kind == "tiny":  # shorter than the granularity
        lens = [rng.randint(qlen, max(qlen, gran)) for _ in range(batch)]
    elif kind in ("skewed", "uniform"):
        lens = make_seq_lens(batch, rng.choice([64, 1000, 4096]), kind, torch.Generator().manual_seed(rng.randint(0, 99)))
        lens = [max(n, qlen) for n in lens]
    else:
        lens = [rng.randint(qlen, 3000) for _ in range(batch)]
    nhead = rng.choice([4, 16, 32, 128])
    hpg = pick_heads_per_group(nhead, qlen, rng.choice([16, 32, 64]))
    programs = rng.choice([1, 3, 8, 132, 264, 1000])
    min_granules = rng.choice([1, 1, 4])
    return lens, qlen, nhead, hpg, programs, gran, min_granules


@pytest.mark.parametrize("seed", range(150))
def test_invariants_random(seed):
    rng = random.Random(seed)
    lens, qlen, nhead, hpg, programs, gran, min_granules = _random_case(rng)
    s = build_mla_schedule(lens, qlen, nhead, hpg, programs, gran, min_granules)
    assert (s.qlen, s.nhead, s.batch, s.heads_per_group) == (qlen, nhead, len(lens), hpg)
    check_invariants(s, lens)


def _priced_longest(s, partial_cost):
    """The schedule's most loaded program, each partial it writes charged partial_cost granules more."""
    indptr, info = s.work_indptr.tolist(), s.work_info.tolist()
    return max(sum(-(-(row[WI_KV_END] - row[WI_KV_START]) // s.kv_granularity)
                   + (partial_cost if row[WI_PARTIAL] >= 0 else 0) for row in info[indptr[p]:indptr[p + 1]])
               for p in range(s.num_programs))


def test_whole_units_where_cutting_saves_less_than_the_partials():
    """nhead 128 x batch 64 x 4096 tokens on an H200 (64-head tiles, 132 programs, 64-token granules): the quota deal
    cuts all 128 units to load 63 granules instead of 64 and writes 256 partials; priced at 3.6 granules each (bf16
    KV, 64 rows), the units go whole, one per program: no partials, no reduce. nhead 64 (64 units): cutting halves
    the longest load, so the deal stays cut."""
    lens = [4096] * 64
    cut = build_mla_schedule(lens, 1, 128, 64, 132, 64)
    whole = build_mla_schedule(lens, 1, 128, 64, 132, 64, partial_cost=3.6)
    check_invariants(cut, lens)
    check_invariants(whole, lens, quota_balance=False)
    assert (cut.num_partials, int(cut.program_load.max())) == (256, 63)
    assert (whole.num_partials, whole.num_reduce, int(whole.program_load.max())) == (0, 0, 64)
    assert sorted(whole.program_load.tolist()) == [0] * 4 + [64] * 128
    halves = build_mla_schedule(lens, 1, 64, 64, 132, 64, partial_cost=3.6)
    assert halves.work_info.tolist() == build_mla_schedule(lens, 1, 64, 64, 132, 64).work_info.tolist()
    fixed = build_mla_schedule(lens, 1, 128, 64, 132, 64, fixed_split_tokens=256, partial_cost=3.6)  # invariant
    assert fixed.work_info.tolist() == build_mla_schedule(lens, 1, 128, 64, 132, 64,
                                                          fixed_split_tokens=256).work_info.tolist()


@pytest.mark.parametrize("seed", range(60))
def test_whole_units_never_cost_more_than_the_cut_deal_with_its_partials(seed):
    """Random batches: a priced deal is the quota deal, or (for some head groups) whole units, with fewer partials and
    a longest program that carries no more than the quota deal's with its partials priced."""
    rng = random.Random(seed)
    lens, qlen, nhead, hpg, programs, gran, min_granules = _random_case(rng)
    price = rng.choice([0.0, 0.9, 3.6, 7.1])
    cut = build_mla_schedule(lens, qlen, nhead, hpg, programs, gran, min_granules)
    priced = build_mla_schedule(lens, qlen, nhead, hpg, programs, gran, min_granules, partial_cost=price)
    check_invariants(priced, lens, quota_balance=False)
    if priced.work_info.tolist() != cut.work_info.tolist():
        assert priced.num_partials < cut.num_partials
        assert _priced_longest(priced, price) <= _priced_longest(cut, price)


def test_even_pieces_give_each_program_one_item_where_units_are_fewer():
    """even_pieces, batch 64 x 4096 tokens, 32-head tiles on 132 programs (a partial priced at 1.78 granules: bf16 KV,
    32 rows): the quota deal loads 31-32 granules but gives 60 programs two items; 128 halves load 32 each, one item
    and one partial per program (4 idle), and merge 2 partials per sequence instead of up to 4. At 16 heads (0.89)
    two partials cost less than the extra granule, so the quota deal stays; the knob off, it stays everywhere."""
    lens = [4096] * 64
    quota = build_mla_schedule(lens, 1, 32, 32, 132, 64, partial_cost=1.78)
    even = build_mla_schedule(lens, 1, 32, 32, 132, 64, partial_cost=1.78, even_pieces=True)
    check_invariants(even, lens, quota_balance=False)
    items = (even.work_indptr[1:] - even.work_indptr[:-1]).tolist()
    assert (quota.num_partials, int(quota.program_load.max()), quota.most_partials) == (192, 32, 4)
    assert (even.num_partials, even.num_reduce, even.most_partials) == (128, 64, 2)
    assert sorted(items) == [0] * 4 + [1] * 128 and sorted(even.program_load.tolist()) == [0] * 4 + [32] * 128
    assert _priced_longest(even, 1.78) < _priced_longest(quota, 1.78)
    cheap = (build_mla_schedule(lens, 1, 16, 16, 132, 64, partial_cost=0.89, even_pieces=e) for e in (False, True))
    assert next(cheap).work_info.tolist() == next(cheap).work_info.tolist()


@pytest.mark.parametrize("seed", range(60))
def test_even_pieces_never_cost_more_than_the_deal_without_them(seed):
    """Random batches: with even_pieces the deal is the one without them, or one with a longest program no more
    loaded, partials priced, and every invariant the kernels rely on."""
    rng = random.Random(seed)
    lens, qlen, nhead, hpg, programs, gran, min_granules = _random_case(rng)
    price = rng.choice([0.9, 1.8, 3.6, 7.1])
    without = build_mla_schedule(lens, qlen, nhead, hpg, programs, gran, min_granules, partial_cost=price)
    even = build_mla_schedule(lens, qlen, nhead, hpg, programs, gran, min_granules, partial_cost=price,
                              even_pieces=True)
    check_invariants(even, lens, quota_balance=False)
    if even.work_info.tolist() != without.work_info.tolist():
        assert _priced_longest(even, price) <= _priced_longest(without, price)


def test_skewed_h100_shape():
    lens = make_seq_lens(64, 4096, "skewed", torch.Generator().manual_seed(0))
    s = build_mla_schedule(lens, 1, 16, 16, 132, 64)
    check_invariants(s, lens)
    assert s.num_reduce >= 4  # the long sequences must be split over several programs
    assert "programs=132" in s.describe()


def test_group_major_programs_serve_one_head_group():
    lens = [4096] * 8 + [300] * 8
    s = build_mla_schedule(lens, 1, 128, 32, 132, 64)  # 4 groups, 132 % 4 == 0
    check_invariants(s, lens)
    indptr = s.work_indptr.tolist()
    for p in range(132):
        groups = {row[WI_HEAD_GROUP] for row in s.work_info[indptr[p] : indptr[p + 1]].tolist()}
        assert groups <= {p % 4}


def test_more_programs_than_work_leaves_idle_programs():
    s = build_mla_schedule([5], 1, 16, 16, 132, 16)
    check_invariants(s, [5])
    assert s.num_items == 1 and s.num_partials == 0 and s.num_reduce == 0


def test_min_granules_caps_active_programs():
    lens = [512] * 4  # 32 granules of 64 tokens
    s = build_mla_schedule(lens, 1, 16, 16, 132, 64, min_granules_per_program=4)
    check_invariants(s, lens)
    assert s.num_active_programs == 8 and s.program_load[:8].tolist() == [4] * 8
    s = build_mla_schedule(lens, 1, 64, 16, 132, 64, min_granules_per_program=4)  # 4 groups, group-major
    check_invariants(s, lens)
    assert s.num_active_programs == 32


def test_checker_catches_a_broken_schedule():
    # The invariant checker itself must be able to fail.
    lens = [300, 900]
    s = build_mla_schedule(lens, 1, 16, 16, 4, 64)
    s.work_info[0, WI_KV_END] -= 1  # drop one token of coverage
    with pytest.raises(AssertionError):
        check_invariants(s, lens)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError):
        build_mla_schedule([1, 8], 2, 16, 16, 4)  # sequence shorter than qlen
    with pytest.raises(ValueError):
        build_mla_schedule([8], 1, 16, 32, 4)  # nhead not a multiple of the head tile


def test_pick_heads_per_group():
    assert pick_heads_per_group(16, 1, 32) == 16
    assert pick_heads_per_group(128, 1, 32) == 32
    assert pick_heads_per_group(128, 1, 64) == 64
    assert pick_heads_per_group(16, 2, 32) == 16
    assert pick_heads_per_group(16, 3, 32) == 8
    assert pick_heads_per_group(4, 1, 64) == 4
    assert pick_heads_per_group(6, 1, 64) == 2


def test_to_device_roundtrip():
    s = build_mla_schedule([100, 200], 1, 16, 16, 3, 16)
    s2 = s.to("cpu")
    assert torch.equal(s2.work_info, s.work_info) and s2.num_partials == s.num_partials
