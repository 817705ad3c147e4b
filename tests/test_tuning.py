"""--tune: the harness keeps the fastest candidate that passes the gate and stores it where the kernel loads it."""
import dataclasses
from types import SimpleNamespace

import pytest
import torch

from rocbench.core.options import RunOptions
from rocbench.core.harness import measure
from rocbench.core.cli.command import suite_params
from rocbench.core.platform import detect
from rocbench.core.suite import RankContext, Tuning
from rocbench.kernels import tuned
from tests import toy_addrmsnorm


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv(tuned.TUNED_ENV, str(tmp_path / "tuned.json"))
    monkeypatch.setattr(tuned, "device_name", lambda device: "Fake GPU")
    return tmp_path / "tuned.json"


def test_the_kernels_load_what_was_stored(store):
    from rocbench.kernels import mla_config, moe_plan

    fp8 = torch.float8_e4m3fn
    assert mla_config.default_config(fp8, 16, 1, "cuda", 1) == mla_config.builtin_config(fp8, 16, 1, 1)
    wanted = mla_config.MlaKernelConfig(reload_v=True, num_stages=3)
    tuned.remember("mla_decode", "cuda", mla_config.tune_key(fp8, 16, 1, 3), dataclasses.asdict(wanted), {})
    assert mla_config.default_config(fp8, 16, 1, "cuda", 4) == wanted  # batches 3 and 4 share a bucket
    assert mla_config.default_config(fp8, 16, 1, "cuda", 64) == mla_config.builtin_config(fp8, 16, 1, 64)
    assert mla_config.default_config(fp8, 128, 1, "cuda", 4) == mla_config.builtin_config(fp8, 128, 1, 4)  # other tile
    # stored for the persistent kernel: the split-KV kernel keeps its own built-in config
    assert mla_config.default_config(fp8, 16, 1, "cuda", 4, persistent=False) == mla_config.builtin_config(
        fp8, 16, 1, 4, persistent=False) != wanted
    shape = (16, 4, 128, 384, 3072)
    plan = moe_plan.plan_moe(*shape, 132, "cuda")
    better = dataclasses.replace(plan, split1=plan.split1 * 2)
    tuned.remember("moe_a16w4", "cuda", moe_plan.tune_key(*shape), dataclasses.asdict(better), {})
    assert moe_plan.plan_moe(*shape, 132, "cuda") == better and store.exists()


def test_candidates_are_distinct_and_valid():
    from rocbench.kernels import mla_config, moe_plan

    for kv in (torch.bfloat16, torch.float8_e4m3fn):
        candidates = mla_config.tune_candidates(kv, 64, 1)
        assert candidates["builtin"] == mla_config.builtin_config(kv, 64, 1)
        assert len(set(candidates.values())) == len(candidates) >= 4
    # batch 1: the reduce's shapes; at 128 heads the built-in merges 64 partials per load over 128 channels
    split_kv = mla_config.builtin_config(torch.bfloat16, 128, 1, 1, persistent=False)
    assert (split_kv.reduce_cols, split_kv.reduce_chunk) == (128, 64)
    candidates = mla_config.tune_candidates(torch.bfloat16, 128, 1, 1, persistent=False)
    # the shape reduce_shape picks by rows (32 partials per load) stays a candidate, under its first name ("plain")
    assert dataclasses.replace(split_kv, reduce_cols=0, reduce_chunk=0) in candidates.values()
    assert "reduce64x128" not in candidates  # the built-in, listed once under that name
    # split-KV bf16 at 16 heads: 128 splits of 32 tokens built in, 64 of 64 (the rest's built-in) still a candidate
    split_kv = mla_config.builtin_config(torch.bfloat16, 16, 1, 1, persistent=False)
    assert (split_kv.block_n, split_kv.max_splits, split_kv.reduce_chunk) == (32, 128, 128)
    assert mla_config.builtin_config(torch.float8_e4m3fn, 16, 1, 1, persistent=False).max_splits == 64
    candidates = mla_config.tune_candidates(torch.bfloat16, 16, 1, 1, persistent=False)
    splits64 = candidates["splits64,block64,chunk64"]
    assert (splits64.block_n, splits64.max_splits, splits64.reduce_chunk) == (64, 64, 64)
    plan = moe_plan.heuristic_plan(1, 4, 128, 384, 3072)
    candidates = moe_plan.tune_candidates(plan, 384, 3072)
    assert candidates["plan"] == plan and len(candidates) >= 6
    # decode plans prefetch with 1 stage; --tune still measures the 3-stage pipeline without prefetch
    assert plan.prefetch and plan.stages1 == 1 and not moe_plan.heuristic_plan(1024, 4, 128, 384, 3072).prefetch
    assert not moe_plan.heuristic_plan(16, 4, 128, 2880, 2880).prefetch  # K steps of 2 MX blocks
    assert candidates["stages3"] == dataclasses.replace(plan, prefetch=False, stages1=3, stages2=3)
    # the cache-prefetch candidates drop the register prefetch and the scale words (which keep the decode off the
    # MMA's register operand); a config asking for both prefetches, or an unknown level, is refused
    hint = candidates["hint_l2,bytes,stages1"]
    assert hint.prefetch_hint == "L2" and not hint.prefetch and not hint.scale_words and hint.stages1 == 1
    assert candidates["hint_l1,bytes,stages1"].prefetch_hint == "L1"
    for bad in (dict(prefetch_hint="L3"), dict(prefetch=True, prefetch_hint="L2")):
        with pytest.raises(ValueError, match="prefetch_hint"):
            moe_plan.check_config(dataclasses.replace(plan, **bad), 384, 3072)
    for config in candidates.values():
        moe_plan.check_config(config, 384, 3072)
    # where the GPU has the cache prefetch (NVIDIA), the decode plans take it with byte scales and dependent launches,
    # and --tune can still measure the register prefetch they replaced
    hinted = moe_plan.heuristic_plan(1, 4, 128, 384, 3072, cache_hint=True)
    assert hinted == dataclasses.replace(plan, prefetch=False, prefetch_hint="L2", scale_words=False,
                                         dependent_launch=True, split_pairs=True)
    assert moe_plan.tune_candidates(hinted, 384, 3072)["prefetch,words,stages1"] == dataclasses.replace(
        plan, split_pairs=True)
    assert moe_plan.tune_candidates(hinted, 384, 3072)["split_pairs"] == dataclasses.replace(hinted, split_pairs=False)
    assert moe_plan.heuristic_plan(1024, 4, 128, 384, 3072, cache_hint=True) == \
        moe_plan.heuristic_plan(1024, 4, 128, 384, 3072)  # prefill unchanged
    assert not moe_plan.cache_hint_available(None) and not moe_plan.cache_hint_available("cpu")


@pytest.mark.parametrize("tokens, topk, prefetch", [(1, 4, True), (1024, 8, True), (4096, 4, False)])
def test_retiled_plans_take_fragments_on_nvidia_only(tokens, topk, prefetch):
    """A caller that re-tiles the weights (the backend) gets the fragment-order plan on NVIDIA: its register
    prefetch up to 8192 pairs, the L2 hint above; elsewhere, and for callers that pass the layout's bytes, the plan
    is the one before fragments."""
    from rocbench.kernels import moe_plan

    shape = (tokens, topk, 128, 384, 3072)
    before = moe_plan.heuristic_plan(*shape, 132, True)
    plan = moe_plan.heuristic_plan(*shape, 132, True, retiled=True)
    measured = dict(bm=plan.bm, split1=plan.split1, narrow_y=plan.narrow_y)  # test_fragment_plans_take_what_...
    assert plan == dataclasses.replace(before, **moe_plan.FRAGMENT_TILES, fragments=True, upper_bytes=False,
                                       prefetch=prefetch, prefetch_hint="" if prefetch else "L2", stages1=1, stages2=1,
                                       **measured)
    moe_plan.check_config(plan, 384, 3072)
    assert moe_plan.heuristic_plan(*shape, 132, False, retiled=True) == moe_plan.heuristic_plan(*shape, 132, False)
    assert not moe_plan.heuristic_plan(16, 4, 128, 2880, 2880, 132, True, retiled=True).fragments  # K steps of 2 blocks


# per-rank (tokens, topk, experts, inter, hidden) -> (bm, split1, narrow_y) of the fragment plan (NVIDIA), as the
# H100 A/B rows chose them (moe_plan._measured_on_fragments)
FRAGMENT_CHOICES = {
    (1, 4, 128, 2944, 3072): (16, 3, False),  # gpt-oss-120b TP1 padded: 184 programs x 4 splits overshot one wave
    (1, 8, 256, 256, 7168): (16, 8, False),  # DeepSeek-R1 TP8: 32 x 8 fit
    (1024, 4, 128, 2944, 3072): (32, 1, False),  # 32 rows per expert; GEMM2's weights outweigh y
    (1024, 8, 256, 256, 7168): (32, 1, True),  # 32 rows per expert; y's fp32 round trip outweighs GEMM2's weights
    (64, 8, 256, 256, 7168): (16, 1, False),
    (4096, 8, 256, 256, 7168): (64, 1, True),  # 128 rows per expert keep 64-row blocks
    (4096, 4, 128, 2944, 3072): (64, 1, False),
}


@pytest.mark.parametrize("shape", FRAGMENT_CHOICES)
def test_fragment_plans_take_what_the_h100_rows_measured(shape):
    """On fragments (NVIDIA, a caller that re-tiles) the plan changes only the token block, GEMM1's K split and y's
    dtype, and only where the A/B rows said so; the layout-bytes plan and everything else stays."""
    from rocbench.kernels import moe_plan

    tokens, topk, experts, inter, hidden = shape
    before = moe_plan.heuristic_plan(*shape, 132, True)
    plan = moe_plan.heuristic_plan(*shape, 132, True, retiled=True)
    assert (plan.bm, plan.split1, plan.narrow_y) == FRAGMENT_CHOICES[shape]
    pipeline = moe_plan.FRAGMENT_PREFETCH if tokens * topk <= 8192 else moe_plan.FRAGMENT_HINT
    assert plan == dataclasses.replace(before, **moe_plan.ON_FRAGMENTS, **pipeline, bm=plan.bm, split1=plan.split1,
                                       narrow_y=plan.narrow_y)
    assert plan.split1 <= before.split1 and plan.bm <= before.bm
    moe_plan.check_config(plan, inter, hidden)
    assert not moe_plan.heuristic_plan(*shape, 132, True).narrow_y  # the layout-bytes plans keep fp32 y
    # --tune measures each choice's reverse: y in fp32 (or bf16), the split one either side, the other token block
    candidates = moe_plan.tune_candidates(plan, inter, hidden)
    assert candidates["narrow_y"].narrow_y != plan.narrow_y
    if plan.split1 > 1:
        assert {candidates["split1+1"].split1, candidates["split1-1"].split1} == {plan.split1 + 1, plan.split1 - 1}
    assert {c.bm for c in candidates.values()} >= {plan.bm, min(64, plan.bm * 2)}


@pytest.mark.parametrize("shape, split1", [((1, 4, 128, 384, 3072), 24), ((1, 8, 256, 256, 7168), 20),
                                           ((1, 4, 128, 2944, 3072), 3), ((16, 8, 256, 256, 7168), 1)])
def test_filling_one_wave_sizes_decode_splits_to_the_wave_and_leaves_prefill(shape, split1):
    """The --tune candidate (which scripts/moe_config_store.py --fill-wave forces for A/B rows): as many programs as one
    wave holds, at most one K step per split; prefill plans unchanged."""
    from rocbench.kernels import moe_plan

    tokens, topk, experts, inter, hidden = shape
    plan = moe_plan.heuristic_plan(*shape, 132, True, retiled=True)
    filled = moe_plan.filling_one_wave(plan, *shape, 132, gemm2=True)
    assert filled.split1 == split1 and filled == dataclasses.replace(plan, split1=filled.split1, split2=filled.split2)
    programs1, programs2 = moe_plan._programs_per_split(*shape, plan.bm, plan.bn1, plan.bn2)
    wave = moe_plan.FRAGMENT_GEMM1_PROGRAMS_PER_SM * 132
    for split, programs, ksteps in ((filled.split1, programs1, hidden // 128), (filled.split2, programs2, inter // 128)):
        assert split == 1 or (programs * split <= wave and split <= ksteps)
    assert moe_plan.filling_one_wave(plan, *shape, 132).split2 == plan.split2  # GEMM1 only
    tuned = moe_plan.tune_candidates(plan, inter, hidden, (tokens, topk, experts, 132)).values()
    assert filled in tuned and moe_plan.filling_one_wave(plan, *shape, 132) in tuned
    prefill = moe_plan.heuristic_plan(1024, topk, experts, inter, hidden, 132, True, retiled=True)
    assert moe_plan.filling_one_wave(prefill, 1024, topk, experts, inter, hidden, 132, gemm2=True) == prefill


def test_the_harness_keeps_the_fastest_passing_candidate(monkeypatch):
    """Fake timings (a CPU cannot time); a wrong candidate is never kept however fast it is."""
    suite = toy_addrmsnorm.SUITE
    case = suite.cases(suite_params(suite, {"tokens": "2", "dtype": "fp32"}))[0]
    ctx = RankContext(0, 1, torch.device("cpu"), detect(), seed=0)
    io = suite.build_io(case, ctx)
    suite.fill(case, io, ctx, data_seed=0)
    eager = suite.backends.get("eager")
    speeds = {"slow": 9.0, "fast": 4.0, "wrong": 1.0}
    stored, current = {}, {}

    def prepare(io, config):
        current["name"] = config  # the candidate being measured
        prepared = eager.prepare(case, io, ctx)
        if config == "wrong":
            return dataclasses.replace(prepared, run=lambda: {**prepared.run(), "out": io.out.zero_()})
        return dataclasses.replace(prepared, description=config)

    tuning = Tuning({name: name for name in speeds}, prepare,
                    lambda name, config, evidence: stored.update(name=name, evidence=evidence) or "the store")
    monkeypatch.setattr(eager, "tuning", lambda case, ctx: tuning, raising=False)
    monkeypatch.setattr(measure, "measure_graph", lambda backend, ctx, opts, runners: SimpleNamespace(
        stats=SimpleNamespace(median_us=speeds[current["name"]])))
    row = {}
    assert measure.tune_backend(suite, eager, case, ctx, RunOptions(), [io], row)
    assert stored["name"] == "fast" and stored["evidence"]["failed"] == ["wrong"]
    assert set(stored["evidence"]["us"]) == {"slow", "fast"}
    assert row["tuned"].startswith("fast 4.00 us (graph), best of 2 passing (1 failed); stored in the store")


def test_a_tuned_row_is_gated_and_timed_with_the_winner(monkeypatch):
    """The kernel loads the stored winner after tuning (the later kernel pass too): the row's gate, path and graph
    time must come from it as well, not from the default the case started with (found on an H200: a row with the
    winner's kernel_us beside the built-in config's graph_us)."""
    suite = toy_addrmsnorm.SUITE
    case = suite.cases(suite_params(suite, {"tokens": "2", "dtype": "fp32"}))[0]
    loaded, calls = {"config": "default"}, []

    def gate(suite, backend, case, ctx, opts, row):
        calls.append(("gate", loaded["config"]))
        row["path"] = loaded["config"]
        return "io", "run"

    monkeypatch.setattr(measure, "gate_checks", gate)
    monkeypatch.setattr(measure, "rotated_inputs", lambda suite, case, ctx, io: [io])
    monkeypatch.setattr(measure, "tune_backend", lambda *args: calls.append(("tune",)) or loaded.update(config="winner")
                        or True)
    monkeypatch.setattr(measure, "time_backend", lambda *args: calls.append(("time", loaded["config"])))
    monkeypatch.setattr(measure, "device_alive", lambda ctx: False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    ctx = RankContext(0, 1, torch.device("cuda"), detect(), seed=0)  # only its type is read: no GPU needed
    row = measure.run_case(suite, suite.backends.get("eager"), case, ctx, RunOptions(tune=True)).row
    assert calls == [("gate", "default"), ("tune",), ("gate", "winner"), ("time", "winner")], row.get("detail")
    assert row["path"] == "winner"


def test_fragment_plans_take_128_row_blocks_from_256_rows_per_expert():
    from rocbench.kernels import moe_plan

    def plan(tokens):  # gpt-oss-120b TP1 (padded), 128 experts, top 4: tokens / 32 rows per expert
        return moe_plan.heuristic_plan(tokens, 4, 128, 3072, 3072, 132, cache_hint=True, retiled=True)

    assert (plan(4096).bm, plan(4096).stages1) == (64, 1)  # 128 rows per expert: 128-row blocks lost there
    big = plan(8192)
    assert big.fragments and (big.bm, big.stages1, big.stages2, big.prefetch, big.prefetch_hint) == \
        (128, 2, 2, False, "")
    back = moe_plan.tune_candidates(big, 3072, 3072)["fragments,bm64,hint_l2,stages1"]
    assert (back.bm, back.stages1, back.prefetch_hint) == (64, 1, "L2")
    assert moe_plan.heuristic_plan(8192, 4, 128, 3072, 3072, 132, cache_hint=True).bm != 128  # not retiled
