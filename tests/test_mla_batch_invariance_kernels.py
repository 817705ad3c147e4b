"""Batch invariance of the Triton MLA decode kernels: one request (the probe) must get a bitwise identical
output whatever else is in its batch -- alone, at another position, beside longer sequences, over another
number of persistent programs.

The default split-KV path is not batch-invariant: its split count follows the batch (pick_num_kv_splits), so
the probe's KV is cut and merged differently; the first test plants that and the bitwise comparison must catch
it. Fixed split sizes (split_tokens / fixed_split_tokens) cut every sequence at multiples of a token count of
its own, and must pass. CPU: the Triton interpreter with fp32 / fp16 (see test_mla_kernels.py); on a GPU the
kernels run compiled."""

import random

import pytest
import torch

from rocbench.core.axes import Case
from rocbench.core.platform import PlatformInfo
from rocbench.core.suite import RankContext
from rocbench.formats.mla_schedule import (
    WI_BATCH,
    WI_HEAD_GROUP,
    WI_KV_END,
    WI_KV_START,
    WI_PARTIAL,
    build_mla_schedule,
    pick_heads_per_group,
)
from rocbench.formats.paged_kv import HEAD_DIM, KV_LORA_RANK, build_paged_kv, make_query
from rocbench.kernels.mla_config import MlaKernelConfig
from rocbench.kernels.mla_decode import (
    build_persistent_schedule,
    fixed_split_count,
    mla_decode_persistent,
    mla_decode_split_kv,
    pick_num_kv_splits,
)
from rocbench.suites.mla.reference import mla_decode_reference
from tests.helpers import needs_interpreter
from tests.test_mla_kernels import DEVICE, SM_SCALE, assert_matches_reference
from tests.test_mla_scheduler import check_invariants

pytestmark = [needs_interpreter(on_cpu_only=True), pytest.mark.gpu]  # on a GPU these run compiled

NHEAD = 16
PAGE = 16
# Several blocks per split even for the tiny test sequences; one 64-token granule per persistent program at
# least, so that the default schedule cuts these small batches (differently in each).
SMALL = MlaKernelConfig(block_n=16, min_granules_per_program=1)
# 64 = the persistent schedule's granularity for block_n 16 (build_persistent_schedule), so both paths cut
# at the same points. The probe has 3 splits (64, 64, 22 tokens), the longest neighbour 5.
SPLIT_TOKENS = 64
PROBE_LEN = 150
# The probe (always the sequence of PROBE_LEN tokens) in batches that differ in size, its position and the
# other requests' lengths (shorter and longer).
BATCHES = [
    ([PROBE_LEN], 0),
    ([37, 90, PROBE_LEN], 2),
    ([290, PROBE_LEN, 200, 9], 1),
]
# The persistent runs: each batch over a number of programs (SMs), the probe alone twice.
PERSISTENT_RUNS = list(zip([BATCHES[0], *BATCHES], (3, 1, 5, 8)))


def _probe(dtype, length=PROBE_LEN):
    """The probe request: its q row [1, NHEAD, 576] and its cached tokens [length, 576]."""
    g = torch.Generator().manual_seed(7)
    kv = build_paged_kv([length], PAGE, dtype, g, "cpu")
    tokens = kv.kv_buffer[kv.kv_indices.long()].reshape(-1, HEAD_DIM)[:length].clone()
    return make_query(1, NHEAD, dtype, g, "cpu"), tokens


def _batch_with(probe, seq_lens, position, seed):
    """q and a paged cache for seq_lens (random requests, random page ids) with the probe at `position`."""
    probe_q, probe_tokens = probe
    g = torch.Generator().manual_seed(seed)
    kv = build_paged_kv(seq_lens, PAGE, probe_tokens.dtype, g, "cpu")
    q = make_query(len(seq_lens), NHEAD, probe_tokens.dtype, g, "cpu")
    q[position] = probe_q[0]
    pages = kv.kv_indices[int(kv.kv_indptr[position]) : int(kv.kv_indptr[position + 1])].long()
    slots = kv.kv_buffer[pages].reshape(-1, HEAD_DIM)
    slots[: len(probe_tokens)] = probe_tokens  # the unused tail of the last page stays NaN
    kv.kv_buffer[pages] = slots.reshape(len(pages), PAGE, HEAD_DIM)
    return q.to(DEVICE), kv.to(DEVICE)


def _bits(t):
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int16)


def _assert_same_bits(outputs):
    first = _bits(outputs[0])
    for i, other in enumerate(outputs[1:], 1):
        differ = int((_bits(other) != first).sum())
        assert differ == 0, f"probe output {i} differs from the first in {differ} elements"


def _assert_correct(out, q, kv):
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 1)
    assert_matches_reference(out, ref, q.dtype)


def test_default_split_count_follows_the_batch_and_changes_the_probe():
    """The planted problem: pick_num_kv_splits sizes the grid for the whole batch, so the probe alone and the
    probe in a bigger batch are cut into different splits; both outputs are right, but not bitwise equal.
    fp32 outputs: every rounding difference shows."""
    probe = _probe(torch.float32)
    outputs = []
    for seq_lens, position in (BATCHES[0], BATCHES[2]):
        q, kv = _batch_with(probe, seq_lens, position, seed=len(seq_lens))
        # as on a 4-SM device that keeps splits >= 16 tokens: 8 splits alone, 2 in the batch of 4
        splits = pick_num_kv_splits(len(seq_lens), 1, sum(seq_lens) // len(seq_lens), num_sms=4,
                                    min_tokens_per_split=16)
        out = mla_decode_split_kv(q, kv, SM_SCALE, 1, splits, config=SMALL)
        _assert_correct(out, q, kv)
        outputs.append((splits, out[position]))
    (splits_alone, alone), (splits_busy, busy) = outputs
    assert (splits_alone, splits_busy) == (8, 2)
    assert not torch.equal(_bits(alone), _bits(busy)), "the batch-dependent split went unnoticed"


def test_default_schedule_cuts_follow_the_batch():
    """The persistent runs of test_fixed_persistent_is_batch_invariant with the default schedule: its quota
    boundaries move with the batch and the program count, and so does the probe's output."""
    probe = _probe(torch.float32)
    outputs = []
    for (seq_lens, position), num_sms in PERSISTENT_RUNS:
        q, kv = _batch_with(probe, seq_lens, position, seed=len(seq_lens))
        schedule = build_persistent_schedule(seq_lens, 1, NHEAD, num_sms, SMALL)
        outputs.append(mla_decode_persistent(q, kv, schedule.to(DEVICE), SM_SCALE, 1, config=SMALL)[position])
    assert any(not torch.equal(_bits(outputs[0]), _bits(other)) for other in outputs[1:])


@pytest.mark.parametrize("dtype", [torch.float16])  # fp32 ran too when written; one dtype keeps CI short
def test_fixed_split_kv_is_batch_invariant(dtype):
    probe = _probe(dtype)
    outputs = []
    for seq_lens, position in BATCHES:
        q, kv = _batch_with(probe, seq_lens, position, seed=len(seq_lens))
        splits = fixed_split_count(max(seq_lens), SPLIT_TOKENS)
        # the grid is sized by the longest sequence: 3 splits alone, 5 beside the 290-token one
        out = mla_decode_split_kv(q, kv, SM_SCALE, 1, splits, config=SMALL, split_tokens=SPLIT_TOKENS)
        _assert_correct(out, q, kv)
        outputs.append(out[position])
    # a grid with spare splits (empty for every sequence) changes nothing either
    q, kv = _batch_with(probe, *BATCHES[0], seed=1)
    outputs.append(mla_decode_split_kv(q, kv, SM_SCALE, 1, 7, config=SMALL, split_tokens=SPLIT_TOKENS)[0])
    _assert_same_bits(outputs)


@pytest.mark.parametrize("dtype", [torch.float16])
def test_fixed_persistent_is_batch_invariant(dtype):
    """Fixed splits over 1..8 programs (the program count changes which program runs which piece only)."""
    probe = _probe(dtype)
    outputs = []
    for (seq_lens, position), num_sms in PERSISTENT_RUNS:
        q, kv = _batch_with(probe, seq_lens, position, seed=len(seq_lens))
        schedule = build_persistent_schedule(seq_lens, 1, NHEAD, num_sms, SMALL, fixed_split_tokens=SPLIT_TOKENS)
        out = mla_decode_persistent(q, kv, schedule.to(DEVICE), SM_SCALE, 1, config=SMALL)
        _assert_correct(out, q, kv)
        outputs.append(out[position])
    _assert_same_bits(outputs)


@pytest.mark.parametrize("kv_dtype,qlen,max_tile_rows", [
    (torch.float16, 2, 32),  # causal rows: some see nothing of a split
    # fp8 KV, four head groups (group-major persistent programs): 17 s in the interpreter, so on GPUs only
    pytest.param(torch.float8_e4m3fn, 1, 4, marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                     reason="17 s under the CPU interpreter: GPU only")),
])
def test_fixed_splits_match_reference_on_other_paths(kv_dtype, qlen, max_tile_rows):
    lens = [50, 19, 100]
    g = torch.Generator().manual_seed(5)
    kv = build_paged_kv(lens, PAGE, kv_dtype, g, "cpu").to(DEVICE)
    q = make_query(len(lens) * qlen, NHEAD, torch.float16, g, DEVICE)
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, qlen)
    config = MlaKernelConfig(block_n=16, max_tile_rows=max_tile_rows)
    split = mla_decode_split_kv(q, kv, SM_SCALE, qlen, fixed_split_count(max(lens), 32), config=config,
                                split_tokens=32)
    assert_matches_reference(split, ref, torch.float16)
    # a grid too small for the longest sequence: its last split takes the rest, still right
    short_grid = mla_decode_split_kv(q, kv, SM_SCALE, qlen, 2, config=config, split_tokens=32)
    assert_matches_reference(short_grid, ref, torch.float16)
    hpg = pick_heads_per_group(NHEAD, qlen, max_tile_rows)
    schedule = build_mla_schedule(lens, qlen, NHEAD, hpg, 6, 16, fixed_split_tokens=32)
    check_invariants(schedule, lens)
    # the 19-token sequence is one piece per head group, written directly; the others are reduced
    assert schedule.num_reduce == 2 * (NHEAD // hpg) and schedule.num_partials > 0
    persistent = mla_decode_persistent(q, kv, schedule.to(DEVICE), SM_SCALE, qlen, config=config)
    assert_matches_reference(persistent, ref, torch.float16)


def _pieces_by_unit(schedule):
    """(sequence, head group) -> its items (kv_start, kv_end, writes the output directly), in KV order."""
    pieces = {}
    for row in schedule.work_info.tolist():
        pieces.setdefault((row[WI_BATCH], row[WI_HEAD_GROUP]), []).append(
            (row[WI_KV_START], row[WI_KV_END], row[WI_PARTIAL] < 0))
    return {unit: sorted(items) for unit, items in pieces.items()}


@pytest.mark.parametrize("seed", range(12))
def test_fixed_schedule_invariants(seed):
    """Coverage once and reduce order in KV order (check_invariants), cuts at multiples of the split size only,
    and a unit's pieces the same in every batch and over every program count."""
    rng = random.Random(seed)
    gran = rng.choice([16, 64])
    split_tokens = gran * rng.choice([1, 2, 4])
    qlen = rng.choice([1, 2])
    nhead = rng.choice([16, 128])
    hpg = pick_heads_per_group(nhead, qlen, rng.choice([16, 32]))
    probe_len = rng.randint(qlen, 1500)
    alone = build_mla_schedule([probe_len], qlen, nhead, hpg, rng.choice([1, 5, 132]), gran,
                               fixed_split_tokens=split_tokens)
    lens = [rng.randint(qlen, 3000) for _ in range(rng.randint(1, 40))]
    position = rng.randrange(len(lens) + 1)
    lens.insert(position, probe_len)
    batched = build_mla_schedule(lens, qlen, nhead, hpg, rng.choice([1, 7, 132, 264]), gran,
                                 rng.choice([1, 4]), fixed_split_tokens=split_tokens)
    check_invariants(alone, [probe_len])
    check_invariants(batched, lens)
    for unit, items in _pieces_by_unit(batched).items():
        length = lens[unit[0]]
        cuts = list(range(0, length, split_tokens))
        assert [(start, end) for start, end, _ in items] == [(c, min(c + split_tokens, length)) for c in cuts]
        assert all(direct == (len(cuts) == 1) for _, _, direct in items)
    in_batch = _pieces_by_unit(batched)
    for (_, g), items in _pieces_by_unit(alone).items():
        assert in_batch[(position, g)] == items


def test_fixed_split_arguments_are_checked():
    with pytest.raises(ValueError):  # not a multiple of the granularity
        build_mla_schedule([100], 1, NHEAD, NHEAD, 4, 64, fixed_split_tokens=96)
    q, kv = _batch_with(_probe(torch.float32), [PROBE_LEN], 0, seed=1)
    with pytest.raises(ValueError):  # not a multiple of block_n
        mla_decode_split_kv(q, kv, SM_SCALE, 1, 4, config=SMALL, split_tokens=40)
    assert fixed_split_count(PROBE_LEN, 64) == 3 and fixed_split_count(64, 64) == 1


def test_deterministic_backend_is_batch_invariant():
    """triton_det through the suite's backend interface: both paths, the probe alone and in a batch."""
    from rocbench.suites.mla.backends import DETERMINISTIC_SPLIT_TOKENS, REGISTRY
    from rocbench.suites.mla.suite import MlaIO

    backend = REGISTRY.get("triton_det")
    assert backend.deterministic_of == "triton" and f"{DETERMINISTIC_SPLIT_TOKENS} tokens" in backend.description
    platform = PlatformInfo("cuda" if DEVICE == "cuda" else "cpu", 0, [], sm_count=3, l2_bytes=None)
    ctx = RankContext(rank=0, world_size=1, device=torch.device(DEVICE), platform=platform, seed=0)
    # one split: alone, the split-KV grid has one split too (the default path would write directly); beside a
    # longer sequence it has two
    probe_len = 100
    probe = _probe(torch.float16, probe_len)
    for persist in (False, True):
        outputs = []
        for seq_lens, position in (([probe_len], 0), ([DETERMINISTIC_SPLIT_TOKENS + 44, probe_len], 1)):
            case = Case((("nhead", NHEAD), ("batch", len(seq_lens)), ("kv_dtype", torch.float16),
                         ("q_dtype", torch.float16), ("qlen", 1), ("persist", persist)))
            assert backend.tuning(case, ctx) is None
            q, kv = _batch_with(probe, seq_lens, position, seed=len(seq_lens))
            io = MlaIO(q, kv, torch.empty(len(seq_lens), NHEAD, KV_LORA_RANK, dtype=q.dtype, device=DEVICE))
            prepared = backend.prepare(case, io, ctx)
            assert f"fixed split {DETERMINISTIC_SPLIT_TOKENS} tokens" in prepared.description
            out = prepared.run()
            _assert_correct(out, q, kv)
            outputs.append(out[position].clone())
        _assert_same_bits(outputs)
