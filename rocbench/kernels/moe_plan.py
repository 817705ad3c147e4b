"""Planning for the a16w4 MoE kernel: its launch configuration from the shape alone (static, so CUDA
graphs can capture the call) and which shapes it cannot take."""
from __future__ import annotations

import dataclasses

import torch

from rocbench.formats import moe_layouts as _lay
from rocbench.kernels import tuned
from rocbench.kernels.target import nvidia_gpu

INLINE_ROUTE_MAX_PAIRS = 64  # up to this many (token, slot) pairs the GEMMs route inline
PREFETCH_HINT_LEVELS = {"": 0, "L1": 1, "L2": 2}  # MoeConfig.prefetch_hint -> the kernels' PREFETCH_HINT


@dataclasses.dataclass(frozen=True)
class MoeConfig:
    """Tiling / launch choices. bm, inline, split1 and split2 can change rounding (a different
    summation order); both layouts always use the same plan, so they stay bitwise equal."""
    bm: int  # rows (token, slot pairs) per expert block: 16, 32 or 64 (128: a --tune candidate at prefill)
    bn1: int  # intermediate columns per GEMM1 program (gate and up each)
    bn2: int  # hidden rows per GEMM2 program
    nb1: int  # MX blocks (32 values) per K step in GEMM1
    nb2: int  # MX blocks per K step in GEMM2
    split1: int  # GEMM1 K split (the last split to finish applies bias + activation)
    split2: int  # GEMM2 K split (partials summed by the combine step)
    inline: bool  # route inside the GEMMs instead of running the align kernel
    warps1: int = 4
    warps2: int = 4
    stages1: int = 3
    stages2: int = 3
    asm_dequant: bool = True  # PTX fp4->bf16 (used for bf16 on NVIDIA GPUs only; generic path otherwise)
    # last GEMM2 program per hidden tile does the top-k sum (inline only), no combine kernel. Slower on fragments:
    # H100 (2026-12-06, kernel_us, device_moe.sh ab-fused-combine, results/examples/moe-fused-combine-ab-h100) 1 token
    # gpt-oss-120b TP1 / TP8 / DeepSeek-R1 TP8 32.3 -> 35.2, 13.9 -> 15.3, 20.5 -> 23.2 us; 4 tokens 1.10-1.28x
    fused_combine: bool = False
    # load the next K step's weights before decoding this one's (register double buffer). It lost with 32-column
    # GEMM1 tiles (H200: gpt-oss-120b TP1 x 64 tokens 1702 -> 1771 us); with 64-column tiles and the scales read
    # as words, --tune picked it with 1 stage at decode, and the decode plans take it (heuristic_plan)
    prefetch: bool = False
    # bf16 x: tl.dot_scaled(weights as e2m1 + e8m0 scales, x as bf16) instead of the kernel's own decode and
    # tl.dot; Triton upcasts the fp4 operand itself (native MX MMAs where the GPU has them)
    scaled_dot: bool = False
    # scales read as the 32-bit words holding them (pipelined with the weights) rather than byte by byte. H200:
    # with bn1 64 it gained (gpt-oss-120b TP1 x 64 tokens 1469 -> 1312 us); with bn1 32 and 4 warps it lost
    # (87 -> 115 us at 1 token), so the plans keep bytes there (_shape_tiles)
    scale_words: bool = True
    # "L1" / "L2" (NVIDIA only, with prefetch False): before each K step's loads, a PTX prefetch of the next step's
    # weight and scale lines (one per 128-byte line) instead of a register double buffer. Offline sm_90 SASS
    # (Triton 3.6): with loop-carried (prefetched) weights, or scales read as words, the decoded bf16 tile goes
    # through shared memory one 16-bit store per value (128 STS.U16 per K step in GEMM1's decode loop); without
    # both, Triton decodes straight into the MMA's register operand and only the packed bytes are rearranged.
    # H200, with byte scales and 1 stage: 8-19% faster calls at 16-64 tokens, -9% to +2% at 1 token; the decode
    # plans take it (heuristic_plan)
    prefetch_hint: str = ""
    # GEMM2 and the combine launched as programmatic dependents (CUDA sm_90+, rocbench.kernels.pdl; ignored
    # elsewhere): GEMM2's routing, addressing and first K step's weights overlap GEMM1's tail, the combine's launch
    # GEMM2's. At 1 token the call is three dependent kernels of 4.5-14 us each (ncu-moe-h200), where MLA's reduce
    # gained 1-1.5 us this way at batch 1. H200: -0.7 to -1.8 us at 1 token, nothing from 16 tokens up; the decode
    # plans take it (heuristic_plan)
    dependent_launch: bool = False
    # the PTX decode's one-multiply form (mxfp4_weights.ONE_MUL_SHIFT), where moe_a16w4 is told the weights'
    # largest scale byte and it is at most ONE_MUL_MAX_SCALE: bitwise the same results, one bf16x2 multiply per
    # two values instead of two, and one integer op per block scale instead of five
    one_mul: bool = True
    # K order inside each MX block: its 16 even values, then its 16 odd ones, the other operand (x, the activations)
    # permuted alike. The decode makes each byte's two values in two separate registers; in natural order they are
    # interleaved into the MMA operand (offline sm_90 SASS, Triton 3.6, gpt-oss-120b TP1 x 64 tokens: GEMM1's loop 683
    # -> 568 instructions per warp and K step, GEMM2's 362 -> 313). With 64-row token tiles the permutation of x
    # costs what it saves (shared-memory stores: 786 at 1024 tokens), so the decode plans take it. The products are
    # the same; only the MMA's summation order within a block changes, and both layouts keep the same arithmetic
    split_pairs: bool = False
    # the PTX decode (bf16, NVIDIA) with each byte spread into its 16-bit lane's high half: one shift fewer per nibble
    # pair, the same bits (tests/test_ptx_decode.py runs both forms' PTX on the CPU over every byte and scale).
    # Offline sm_90 SASS (Triton 3.6, gpt-oss-120b TP1 x 64 tokens, decode plan): GEMM1's loop 568 -> 536
    # instructions per warp and K step, GEMM2's 313 -> 297. Off until a GPU has timed it (a --tune candidate)
    upper_bytes: bool = False
    # GEMM1 in fp16 (NVIDIA sm_89+, bf16 x): each nibble made an e4m3 byte by word-wide bit operations, converted by
    # one exact cvt per two values (mxfp4_weights ASM 3), x's rows scaled into fp16 by a power of two (a small
    # kernel before GEMM1), accumulators scaled back: the same products and sums up to powers of two, where the
    # weights' live scale bytes lie within 29 of each other (moe_a16w4.gemm1_decode; else the bf16 decode runs).
    # Offline sm_90 SASS (Triton 3.6, gpt-oss-120b TP1): GEMM1's loop 568 -> 490 instructions per warp and K step at
    # 64 tokens, 771 -> 659 at 1024. Off until a GPU has timed it (a --tune candidate)
    f16_gemm1: bool = False
    # GEMM1's gate and up rows as one [2 bn1, K] operand: one load, decode and dot per K step (not with scaled_dot).
    # With 8 warps each warp then owns 16 distinct weight rows, where two 64-row dots split the token columns between
    # warp groups that decode the same rows twice. Offline sm_90 SASS (Triton 3.6, gpt-oss-120b TP1) at 1024 tokens,
    # per 2 KB of weights: 771 instructions at 218 registers (2 warps per scheduler) -> 856 at 106 registers with 8
    # warps (4 per scheduler; 746 with f16_gemm1, 668 in the decode plans' pipeline). Off until a GPU has timed it
    stacked_gate_up: bool = False
    # the weights re-tiled once, before the calls, in the order of wgmma's register operand (mxfp4_fragments; the
    # caller passes moe_a16w4 a MoeFragments): each thread loads its own 32 bytes per 64-row tile and K step and
    # decodes them in place (9 integer operations and 4 multiplies per 8 values), where reading AITER's layouts
    # rearranges the packed bytes through shared memory. Takes FRAGMENT_TILES (64-row tiles per warp group, 128-value
    # K steps, natural K order). Offline sm_90 SASS (Triton 3.6, gpt-oss-120b TP1 x 64): GEMM1's loop 568 -> 324
    # instructions per warp and K step, GEMM2's 313 -> 173, no shared memory or barrier for the weights, 123 -> 86
    # registers. H200: 27-42% less kernel time from 1 to 4096 tokens (_fragments_pipeline); the NVIDIA plans of
    # callers that re-tile (heuristic_plan's retiled: the backend) take it
    fragments: bool = False
    # GEMM2's per-pair outputs y, which the combine sums over the top-k, stored in x's dtype instead of fp32 where
    # GEMM2 has no K split (split2 1; split partials stay fp32): half of GEMM2's stores and of the combine's reads.
    # ncu (H100, fragments, DeepSeek-R1 TP8 x 1024 tokens): the combine read 235 MB of fp32 y, 87 of the call's
    # 701 us (ncu-moe-h100-fragments); vLLM's and SGLang's Triton MoE keep y in the activations' dtype too. Each
    # expert's output is rounded once more before the weighted sum; both layouts alike. Predicted: -10% at prefill
    # for DeepSeek-R1 TP8, a few % for gpt-oss-120b. Measured (H100): -12% and -15% at DeepSeek-R1 TP8 x 1024 / 4096
    # tokens; +9% at gpt-oss-120b TP1 x 1024, within that call's drift (the GEMM2 loop is the same offline); the
    # fragment plans take it where y outweighs GEMM2's weights
    # (_measured_on_fragments)
    narrow_y: bool = False


def _largest_dividing(n: int, options) -> int:
    for o in options:
        if n % o == 0:
            return o
    raise ValueError(f"{n} is not divisible by any of {options}")


def _active_experts(tokens: int, topk: int, experts: int) -> int:
    return max(1, min(experts, tokens * topk))  # upper bound of experts hit


def _programs_per_split(tokens: int, topk: int, experts: int, inter: int, hidden: int, bm: int, bn1: int,
                        bn2: int) -> tuple[int, int]:
    """GEMM1's and GEMM2's programs per K split: output tiles x expert blocks of bm rows (the most the grid takes)."""
    active = _active_experts(tokens, topk, experts)
    blocks = active * -(-(tokens * topk / active) // bm)
    return int((inter // bn1) * blocks), int((hidden // bn2) * blocks)


def _pick_split(programs: int, ksteps: int, num_sms: int, max_split: int = 8) -> int:
    """Split K until there are ~4 programs per SM, keeping >= 2 K steps per split."""
    split = 1
    while split < max_split and programs * split < 4 * num_sms and ksteps // (split * 2) >= 2:
        split *= 2
    return split


def tune_key(tokens: int, topk: int, experts: int, inter: int, hidden: int) -> str:
    return f"tokens={tokens},topk={topk},experts={experts},inter={inter},hidden={hidden}"


def plan_moe(tokens: int, topk: int, experts: int, inter: int, hidden: int, num_sms: int = 132,
             device=None, retiled: bool = False) -> MoeConfig:
    """The config `rocbench moe --tune` stored for this device and shape, else one picked from the shape
    alone (static either way: safe for CUDA graphs). retiled: the caller can pass moe_a16w4 a MoeFragments."""
    stored = tuned.lookup("moe_a16w4", device, tune_key(tokens, topk, experts, inter, hidden))
    if stored:
        return MoeConfig(**stored)
    return heuristic_plan(tokens, topk, experts, inter, hidden, num_sms, cache_hint_available(device), retiled)


def cache_hint_available(device) -> bool:
    """MoeConfig.prefetch_hint works on `device` (NVIDIA compiled code; not ROCm, not the interpreter)."""
    return device is not None and nvidia_gpu(torch.device(device))


# The NVIDIA decode plans' K loops (heuristic_plan): the next step's lines prefetched into L2, scales as bytes, one
# stage, GEMM2 and the combine as programmatic dependents, each MX block's even K before its odd K
CACHE_HINT_DECODE_PIPELINE = dict(prefetch=False, prefetch_hint="L2", scale_words=False, stages1=1, stages2=1,
                                  dependent_launch=True, split_pairs=True)


def heuristic_plan(tokens: int, topk: int, experts: int, inter: int, hidden: int, num_sms: int = 132,
                   cache_hint: bool = False, retiled: bool = False) -> MoeConfig:
    """The plan from the shape alone. cache_hint: the GPU has the PTX cache prefetch (MoeConfig.prefetch_hint, NVIDIA:
    plan_moe says so from the device); elsewhere the decode plans prefetch into registers. retiled: the caller
    re-tiles the weights into fragment order (MoeConfig.fragments), which the plan then takes on NVIDIA."""
    pairs = tokens * topk
    rows_per_expert = pairs / _active_experts(tokens, topk, experts)
    bm = 16
    while bm < 64 and bm < 1.5 * rows_per_expert:
        bm *= 2
    tiles = _shape_tiles(inter, hidden)
    decode = pairs <= 512
    split1 = split2 = 1
    programs1, programs2 = _programs_per_split(tokens, topk, experts, inter, hidden, bm, tiles["bn1"], tiles["bn2"])
    if decode:  # few rows: K splits give the GPU enough programs to stream the weights
        split1 = _pick_split(programs1, hidden // 32 // tiles["nb1"], num_sms)
        split2 = _pick_split(programs2, inter // 32 // tiles["nb2"], num_sms)
    # Decode: the weights prefetched one K step ahead in registers, with 1 pipeline stage. H200, kernel_us, 3
    # stages -> prefetch + 1 stage (exp/moe_exp.py ROUND=prefetch): gpt-oss-120b TP1 x1 75.1 -> 67.0, x64 1258 ->
    # 1188; TP8 x1 23.2 -> 21.2, x16 118.9 -> 111.4, x64 212.0 -> 190.0; DeepSeek-R1 TP8 x1 39.1 -> 35.5, x16
    # 320.1 -> 303.5, x64 631.3 -> 586.7. All these K steps are 4 MX blocks; with 2 (unpadded gpt-oss-120b, K 2880)
    # it lost: TP1 x16 527.7 -> 589.3, so shorter steps keep the 3-stage pipeline. Prefill keeps 3 stages (--tune:
    # +4% and -4.5% at 1024 tokens) and takes a 128-row GEMM2 tile with 8 warps (DeepSeek-R1 TP8 x 1024: GEMM2 485
    # -> 434 us; it lost at decode: 430 -> 538 us at 64 tokens)
    # Where the GPU has a cache prefetch (NVIDIA, cache_hint), the decode plans take it instead of the register
    # prefetch, with the scales as bytes (so that Triton decodes straight into the MMA operand), and launch GEMM2
    # and the combine as programmatic dependents. H200, kernel_us, plan -> hint + dependent launch (2026-12-05,
    # moe-tiles-h200/hint.jsonl): gpt-oss-120b TP1 x1 65.3 -> 58.4, x64 1193.9 -> 962.5; TP8 x1 20.5 -> 20.0, x64
    # 188.9 -> 171.4; DeepSeek-R1 TP8 x1 34.1 -> 32.7, x16 297.7 -> 252.7, x64 577.4 -> 490.8
    long_steps = tiles["nb1"] == 4 and tiles["nb2"] == 4
    pipeline = {}
    if decode and long_steps:
        pipeline = dict(prefetch=True, stages1=1, stages2=1)
        if cache_hint:
            pipeline = CACHE_HINT_DECODE_PIPELINE
    wide2 = {} if decode or hidden % 128 else dict(bn2=128, warps2=8)
    plan = MoeConfig(bm=bm, **{**tiles, **wide2, **pipeline}, split1=split1, split2=split2,
                     inline=pairs <= INLINE_ROUTE_MAX_PAIRS)
    if not (retiled and cache_hint):
        return plan
    fragment_plan = _on_fragments(plan, inter, hidden, _fragments_pipeline(pairs))
    if not fragment_plan.fragments:
        return plan
    return _measured_on_fragments(fragment_plan, tokens, topk, experts, inter, hidden, num_sms)


# GEMM1 programs resident per SM on the fragment plans' decode: 96 registers a thread, 4 warps (ncu, H100, gpt-oss-120b
# TP1 x 1 token: 5 per SM, 736 programs in 1.12 waves; results/examples/ncu-moe-h100-fragments)
FRAGMENT_GEMM1_PROGRAMS_PER_SM = 5


def _measured_on_fragments(plan: MoeConfig, tokens: int, topk: int, experts: int, inter: int, hidden: int,
                           num_sms: int) -> MoeConfig:
    """Where the fragment-order kernels (NVIDIA) want other choices than the plans made for the layout's bytes.
    H100, kernel_us, interleave, gated, built-in -> changed (2026-12-05, results/examples/moe-fragments-ab-h100;
    scripts/device_moe.sh ab-bm64, ab-split4 and ab-wide-y time each choice against its reverse):
    - 32-row token blocks up to 32 rows per expert: at 64, GEMM1 held 175 registers, 2 programs per SM (ncu);
      at 32, 122. At 1024 tokens gpt-oss-120b TP1 1201.7 -> 1044.6, TP8 236.8 -> 226.8, DeepSeek-R1 TP8 692.3 ->
      663.4; at 4096 tokens (128 rows per expert) 64 rows stay: 32 lost 15-20% (3336 -> 4013 us at gpt-oss TP1).
    - GEMM1's K split lowered to fit one wave where the plan's power of two overshoots it (the tail wave ncu found):
      gpt-oss-120b TP1 x 1 token split 4 -> 3, 35.5 -> 32.1 us. DeepSeek-R1 TP8 keeps 8 (forced to 3: 20.6 ->
      27.8). GEMM2's split was not timed this way and stays.
    - GEMM2's y in x's dtype (narrow_y) where its fp32 round trip (GEMM2's stores, the combine's reads) outweighs
      GEMM2's weights: DeepSeek-R1 TP8 x 1024 tokens 758.3 -> 664.0, x 4096 2166.2 -> 1844.8; not at 64 tokens (309.7
      -> 301.6) nor at gpt-oss-120b TP1, whose weights dominate (1024 tokens: 1195.8 -> 1301.7, within the drift of
      that call, 4096: 3349 -> 3297).
    Each reverse timed again (H100, 2026-12-05, the built-in run before and after each): 64-row blocks at 1024 tokens
    lost 8-14% (gpt-oss-120b TP1 1039.9 -> 1188.8, TP8 189.0 -> 214.4, DeepSeek-R1 TP8 576.8 -> 609.2), GEMM1's split
    4 at gpt-oss-120b TP1 x 1 token 9% (31.8 -> 34.8).
    - 128-row token blocks with Triton's 2 stages from 256 rows per expert (each expert's weights decoded half as
      often). Offline sm_90: GEMM1's loop 5.7 -> 3.6 instructions per token and K step, 2 programs per SM either way.
      Predicted -5..-25% at 4096 tokens; measured (H100, 2026-12-05, device_moe.sh ab-bm128, the built-in runs before
      and after within 1%): at 128 rows per expert (4096 tokens) slower, gpt-oss-120b TP1 3237.5 -> 3561.6, TP8 586.0
      -> 602.5, DeepSeek-R1 TP8 1743.2 -> 1808.7; at 256 (8192 tokens) faster, 5758.1 -> 5441.6, 998.2 -> 974.8,
      3158.5 -> 3052.0."""
    pairs = tokens * topk
    rows_per_expert = pairs / _active_experts(tokens, topk, experts)
    if plan.bm == 64 and rows_per_expert >= BM128_ROWS_PER_EXPERT:
        blocks = dict(bm=128, **_fragment_stages(2))
    else:
        bm = 32 if plan.bm == 64 and rows_per_expert <= 32 else plan.bm
        programs1 = _programs_per_split(tokens, topk, experts, inter, hidden, bm, plan.bn1, plan.bn2)[0]  # at that bm
        wave = FRAGMENT_GEMM1_PROGRAMS_PER_SM * num_sms
        fits = [s for s in range(plan.split1 // 2 + 1, plan.split1) if programs1 * s <= wave]
        blocks = dict(bm=bm, split1=max(fits) if fits and programs1 * plan.split1 > wave else plan.split1)
    y_round_trip = 2 * pairs * 4  # bytes per hidden column: fp32 stored by GEMM2, read by the combine
    w2_bytes = experts * inter * 17 / 32  # per hidden column: 4-bit values and a scale byte per 32
    return dataclasses.replace(plan, **blocks, narrow_y=plan.split2 == 1 and y_round_trip >= w2_bytes)


BM128_ROWS_PER_EXPERT = 256  # _measured_on_fragments: 128-row token blocks from here (lost at 128, won at 256)


def filling_one_wave(plan: MoeConfig, tokens: int, topk: int, experts: int, inter: int, hidden: int, num_sms: int,
                     gemm2: bool = False) -> MoeConfig:
    """A --tune candidate (and scripts/moe_config_store.py --fill-wave), not a plan: at decode, GEMM1's K split (with
    gemm2 GEMM2's too) as large as one wave of FRAGMENT_GEMM1_PROGRAMS_PER_SM programs per SM holds, down to one K
    step per split, where the plans stop at 8 splits of 2+ steps. ncu (H100, fragments, gpt-oss-120b TP8 x 1 token):
    GEMM1 10.5 us at 14% of DRAM with 192 programs (0.3 waves). Predicted the call 14 -> ~9-10 us there, DeepSeek-R1
    TP8 20 -> ~16 us. Measured (H100, kernel_us, 2026-12-05, scripts/device_moe.sh ab-fill-wave, the built-in run
    before and after): slower at 1 token (gpt-oss-120b TP8 13.9 -> 17.4 GEMM1 only / 16.8 both, DeepSeek-R1 TP8
    20.2 -> 21.4 / 21.5, TP1 31.9 -> 33.1 both), the same at 4 tokens, and at 16 tokens both GEMMs' gpt-oss-120b
    TP1 287.8 -> 251.5 but TP8 57.7 -> 61.3 and DeepSeek-R1 146.5 -> 151.7: one shape's win, no rule"""
    if tokens * topk > 512:
        return plan
    programs1, programs2 = _programs_per_split(tokens, topk, experts, inter, hidden, plan.bm, plan.bn1, plan.bn2)
    wave = FRAGMENT_GEMM1_PROGRAMS_PER_SM * num_sms
    split1 = max(1, min(hidden // 32 // plan.nb1, wave // programs1))
    split2 = max(1, min(inter // 32 // plan.nb2, wave // programs2)) if gemm2 else plan.split2
    return dataclasses.replace(plan, split1=split1, split2=split2)


def _on_fragments(plan: MoeConfig, inter: int, hidden: int, pipeline: dict) -> MoeConfig:
    """plan on the weights in fragment order with `pipeline`, where the shape allows it; else plan."""
    fragment_plan = dataclasses.replace(plan, **ON_FRAGMENTS, **pipeline)
    try:
        check_config(fragment_plan, inter, hidden)
    except ValueError:  # e.g. K steps of 2 MX blocks (unpadded gpt-oss-120b): fragments take 4
        return plan
    return fragment_plan


def _fragments_pipeline(pairs: int) -> dict:
    """The K loop of the fragment-order plans (NVIDIA). H200, kernel_us, interleave, all gated, default plan ->
    fragments with the register prefetch of the next step's fragment words and 1 stage (scripts/device_moe.sh
    ab-fragments, 2026-12-05): gpt-oss-120b TP1 x1 51.0 -> 32.1, x16 355.1 -> 244.6, x64 832.7 -> 541.8, x1024
    2075.8 -> 1205.5; TP8 x1 18.5 -> 13.5, x64 160.2 -> 104.5, x1024 341.2 -> 218.3; DeepSeek-R1 TP8 x1 30.2 -> 19.6,
    x64 417.3 -> 290.6, x1024 1072.8 -> 679.2 (fragments on the plans' own pipelines: 1584.1 at gpt-oss TP1 x1024).
    Beyond 8192 pairs the prefetch was not timed; the L2 hint with 1 stage won there (ab-fragments-prefill, 4096
    tokens: gpt-oss-120b TP1 5011 -> 3150 us, DeepSeek-R1 TP8 2729 -> 1880; 3 stages 3758 / 2345, 2 stages 4070 /
    2314, gate and up stacked over 8 warps 3760 / 2421)"""
    return FRAGMENT_PREFETCH if pairs <= 8192 else FRAGMENT_HINT


def _shape_tiles(inter: int, hidden: int) -> dict[str, int | bool]:
    """Tile widths, K steps and how the scales load: they depend on the weight shape only, never on the batch."""
    # bn1 64: GEMM1's weight tile is then a whole 64-row MMA (wgmma on Hopper) and each program decodes its own
    # rows (at 32 rows and 4 warps, two warps decoded the same rows). H200, kernel_us, with 32 -> 64:
    # gpt-oss-120b TP1 87 -> 75 us at 1 token, 1613 -> 1312 at 64, 4439 -> 2418 at 1024; DeepSeek-R1 TP8 825 -> 698
    # at 64 tokens (results/examples/moe-tiles-h200)
    bn1 = _largest_dividing(inter, (64, 32, 16))
    return dict(bn1=bn1, bn2=_largest_dividing(hidden, (64, 32, 16)),
                nb1=_largest_dividing(hidden // 32, (4, 2, 1)), nb2=_largest_dividing(inter // 32, (4, 2, 1)),
                scale_words=bn1 >= 64)


# what MoeConfig.fragments fixes: one warp group's 64-row tiles, 128-value K steps, the kernel's own decode in
# natural K order (prefetch, with fragments, carries the next step's fragment bytes in registers). GEMM1 may also
# stack its gate and up tiles over 8 warps (stacked_gate_up, warps1 8: each warp group decodes its own tile)
FRAGMENT_TILES = dict(bn1=64, bn2=64, nb1=4, nb2=4, warps1=4, warps2=4, stacked_gate_up=False, scaled_dot=False,
                      split_pairs=False, f16_gemm1=False)
# a config on fragments: FRAGMENT_TILES, and upper_bytes off (a knob of the layout bytes' decode)
ON_FRAGMENTS = dict(FRAGMENT_TILES, fragments=True, upper_bytes=False)
# the fragment plans' K loops (_fragments_pipeline)
FRAGMENT_PREFETCH = dict(prefetch=True, prefetch_hint="", stages1=1, stages2=1)
FRAGMENT_HINT = dict(prefetch=False, prefetch_hint="L2", stages1=1, stages2=1)
_FRAGMENT_STACKED = dict(warps1=8, stacked_gate_up=True)
_FRAGMENT_WIDE2 = dict(bn2=128, warps2=8)  # GEMM2: two 64-row tiles per program, one per warp group


def _fragment_stages(stages: int) -> dict:
    """Fragment K loops pipelined by Triton's own stages: no register prefetch, no cache hint."""
    return dict(prefetch=False, prefetch_hint="", stages1=stages, stages2=stages)


DETERMINISTIC_BM = 32  # decode wastes at most 31 MMA columns per expert block; prefill reads weights once per 32 rows


# K steps each of the 1-token plan's splits must keep for triton_det to take that whole split: fewer, and the fp32
# partials' traffic outweighs the wave it fills (gpt-oss-120b TP8: 3 steps per split, +31% / +54% at 64 / 1024 tokens)
WHOLE_SPLIT_MIN_KSTEPS = 4


def deterministic_split1(topk: int, experts: int, inter: int, hidden: int, num_sms: int = 132) -> int:
    """triton_det's GEMM1 K split, a function of the shape and the SM count only: half the 1-token plan's, or its
    whole split where half leaves a 1-token call's GEMM1 under one wave of programs and each whole split still runs
    WHOLE_SPLIT_MIN_KSTEPS K steps or more. H100, kernel_us over triton's, batch-invariance gate on, 9/9 invariant
    (2026-12-06, scripts/device_moe.sh det, results/examples/moe-det-split-h100): DeepSeek-R1 TP8 (half: 128 programs
    on 132 SMs, whole: 7 K steps per split) 1.39 / 1.05 / 1.05x at 1 / 64 / 1024 tokens with half, 1.21 / 1.10 /
    1.16x whole; gpt-oss-120b TP8 (96 programs, 3 steps) 1.17 / 1.11 / 1.25x half, 1.13 / 1.31 / 1.54x whole;
    gpt-oss-120b TP1 (368 programs) 1.38 / 1.12 / 1.10x half, 1.46 / 1.20 / 1.27x whole."""
    one_token = heuristic_plan(1, topk, experts, inter, hidden, num_sms)
    half = max(1, one_token.split1 // 2)
    tiles = _shape_tiles(inter, hidden)
    programs1 = _programs_per_split(1, topk, experts, inter, hidden, DETERMINISTIC_BM, tiles["bn1"], tiles["bn2"])[0]
    under_one_wave = programs1 * half < num_sms
    long_splits = hidden // 32 // tiles["nb1"] // one_token.split1 >= WHOLE_SPLIT_MIN_KSTEPS
    return one_token.split1 if under_one_wave and long_splits else half


# K steps each half of an unsplit GEMM2 must keep for triton_det to split it in two (gpt-oss-120b TP8: 3 in all)
SPLIT2_MIN_KSTEPS = 4


def deterministic_split2(topk: int, experts: int, inter: int, hidden: int, num_sms: int = 132) -> int:
    """triton_det's GEMM2 K split, a function of the shape and the SM count only: 2 where an unsplit 1-token GEMM2 runs
    under two waves of programs and each half keeps SPLIT2_MIN_KSTEPS K steps or more, else none (its partials are then
    fp32 for every batch: MoeConfig.narrow_y applies only unsplit). H200, kernel_us over triton's, batch-invariance gate
    on, 9/9 invariant (2026-12-06, scripts/device_moe.sh det, results/examples/moe-det-split-h200): gpt-oss-120b TP1
    (192 programs, 23 K steps) 1.36 / 1.23 / 1.08x at 1 / 64 / 1024 tokens unsplit, 1.15 / 1.24 / 1.13x split in two;
    gpt-oss-120b TP8 (192 programs, 3 steps) 1.27 / 1.18 / 1.12x unsplit, 1.25 / 1.34 / 1.46x in two; DeepSeek-R1 TP8
    (896 programs) 1.22 / 1.20 / 1.11x unsplit, 1.41 / 1.43 / 1.65x in two; 4 ways lost to 2 everywhere."""
    tiles = _shape_tiles(inter, hidden)
    programs2 = _programs_per_split(1, topk, experts, inter, hidden, DETERMINISTIC_BM, tiles["bn1"], tiles["bn2"])[1]
    long_halves = inter // 32 // tiles["nb2"] // 2 >= SPLIT2_MIN_KSTEPS
    return 2 if programs2 < 2 * num_sms and long_halves else 1


def deterministic_plan(tokens: int, topk: int, experts: int, inter: int, hidden: int, num_sms: int = 132,
                       cache_hint: bool = False, retiled: bool = False) -> MoeConfig:
    """One arithmetic for every batch (deterministic inference): a token's output is bitwise the same whatever
    else is in the batch. Every choice that touches a float -- tiles, BM, K splits -- is a function of the model's
    shape and the GPU's SM count, never of the token count: a fixed BM (the dots compile once; the MMA computes
    each token's column on its own, so its place in the tile and the masked-out padding columns change nothing),
    a fixed GEMM1 K split summed in split order, a fixed GEMM2 K split (deterministic_split2; mostly none), and the
    separate combine kernel (the top-k sum in slot order). Only the routing follows the batch, and routing moves
    integers: inline for a few pairs, the block table above, exactly as the default plan routes.

    GEMM1's K split is half the 1-token plan's: without it a 1-token call had too few programs to stream the
    weights (H200, kernel_us, x the default plan: 1.6x at gpt-oss-120b TP1, 3.3x at TP8, 3.6x at DeepSeek-R1
    TP8), while the 1-token plan's full split writes and rereads fp32 partials at prefill (1.34x at gpt-oss TP1
    x 1024 tokens); half stayed within 1.08-1.27x at 1, 64 and 1024 tokens for all three
    (results/examples/moe-tiles-h200/det-splits.jsonl). Where half leaves a 1-token GEMM1 under one wave and the
    whole split keeps long K ranges, the whole split (deterministic_split1).

    Unsplit, GEMM2's y is stored in x's dtype (narrow_y) for every batch: per pair, so the same bits whatever the batch
    (a split GEMM2's partials stay fp32, for every batch too). H100,
    kernel_us, against y in fp32 (2026-12-05, scripts/device_moe.sh det, all batch-invariant): 1024 tokens
    gpt-oss-120b TP1 1233.9 -> 1209.4, TP8 255.5 -> 218.1, DeepSeek-R1 TP8 738.0 -> 644.6 (1.34x / 1.20x the default
    plan's time -> 1.15x / 1.05x); 1 and 64 tokens within +-2.5% except gpt-oss-120b TP8 x 64, 129.0 -> 138.9.

    cache_hint and retiled as for heuristic_plan: on NVIDIA, for a caller that re-tiles, the weights in fragment
    order with the register prefetch and 1 stage, for every batch. Fragments give the same bits as the layout's
    bytes in the same K order (tests/test_moe_kernel.py), and loads and stages move no float, so the arithmetic,
    and with it the batch invariance, is the plan's above."""
    plan = MoeConfig(bm=DETERMINISTIC_BM, **_shape_tiles(inter, hidden),
                     split1=deterministic_split1(topk, experts, inter, hidden, num_sms),
                     split2=deterministic_split2(topk, experts, inter, hidden, num_sms),
                     inline=tokens * topk <= INLINE_ROUTE_MAX_PAIRS, fused_combine=False, narrow_y=True)
    # one pipeline for every batch: the register prefetch, the default plans' best up to 8192 pairs
    return _on_fragments(plan, inter, hidden, FRAGMENT_PREFETCH) if retiled and cache_hint else plan


def _fragments_reason(cfg: MoeConfig) -> str | None:
    """Why MoeConfig.fragments cannot run with the rest of cfg (its fragment order is one warp group's per 64 rows)."""
    fixed = {k: v for k, v in FRAGMENT_TILES.items() if k not in (*_FRAGMENT_STACKED, *_FRAGMENT_WIDE2)}
    if not fixed.items() <= dataclasses.asdict(cfg).items():
        return f"fragments take {fixed}"  # (nb 4: 128-value K steps)
    if (cfg.warps1, cfg.stacked_gate_up) not in ((4, False), (8, True)):
        return "fragments take GEMM1 on 4 warps, or on 8 with stacked_gate_up"
    if (cfg.bn2, cfg.warps2) not in ((64, 4), (128, 8)):
        return "fragments take GEMM2 tiles of 64 rows on 4 warps, or of 128 on 8"
    return None


def check_config(cfg: MoeConfig, inter: int, hidden: int) -> None:
    if inter % cfg.bn1 or hidden % cfg.bn2:
        raise ValueError(f"config {cfg} does not tile inter={inter} / hidden={hidden}")
    if (hidden // 32) % cfg.nb1 or (inter // 32) % cfg.nb2:
        raise ValueError(f"config {cfg}: nb1/nb2 must divide the K blocks")
    if cfg.bm not in (16, 32, 64, 128) or cfg.split1 < 1 or cfg.split2 < 1:
        raise ValueError(f"bad config {cfg}")
    if cfg.prefetch_hint not in PREFETCH_HINT_LEVELS or (cfg.prefetch_hint and cfg.prefetch):
        raise ValueError(f"config {cfg}: prefetch_hint is one of {sorted(PREFETCH_HINT_LEVELS)} and excludes prefetch")
    if cfg.stacked_gate_up and cfg.scaled_dot:
        raise ValueError(f"config {cfg}: stacked_gate_up runs the kernel's own decode, not tl.dot_scaled")
    reason = _fragments_reason(cfg) if cfg.fragments else None
    if reason:
        raise ValueError(f"config {cfg}: {reason}")


def moe_a16w4_unsupported_reason(layout: str, experts: int, inter: int, hidden: int) -> str | None:
    """Why this kernel cannot run a shape in `layout` (layout tiles, or its own 16-col tiles)."""
    r = _lay.layout_unsupported_reason(layout, experts, 2 * inter, hidden, True)
    if r:
        return f"w13: {r}"
    r = _lay.layout_unsupported_reason(layout, experts, hidden, inter, False)
    if r:
        return f"w2: {r}"
    if inter % 16:
        return f"kernel tiles the intermediate dim by 16; inter={inter}"
    return None


def tune_candidates(plan: MoeConfig, inter: int, hidden: int,
                    decode: tuple[int, int, int, int] | None = None) -> dict[str, MoeConfig]:
    """What `--tune` tries around the heuristic plan: K splits, tile widths, pipelining, the fused combine; given
    decode = (tokens, topk, experts, num_sms), also the K splits filling one wave (filling_one_wave)."""
    variations = {
        "plan": {}, "fused": dict(fused_combine=True), "split1*2": dict(split1=plan.split1 * 2),
        "split2*2": dict(split2=plan.split2 * 2), "split1/2": dict(split1=max(1, plan.split1 // 2)),
        # one more or one fewer K split: the fragment plans fit GEMM1's programs to one wave (_measured_on_fragments)
        "split1+1": dict(split1=plan.split1 + 1), "split1-1": dict(split1=max(1, plan.split1 - 1)),
        "split2/2": dict(split2=max(1, plan.split2 // 2)), "nb8": dict(nb1=8, nb2=8),
        "warps8": dict(warps1=8, warps2=8), "bn1=64,w8": dict(bn1=64, warps1=8), "bn2=128,w8": dict(bn2=128, warps2=8),
        "prefetch": dict(prefetch=True, prefetch_hint=""),
        "prefetch,stages1": dict(prefetch=True, prefetch_hint="", stages1=1, stages2=1),
        # the decode plans before the cache hint: register prefetch, scales as words, 1 stage
        "prefetch,words,stages1": dict(prefetch=True, prefetch_hint="", scale_words=True, stages1=1, stages2=1,
                                       dependent_launch=False),
        "stages3": dict(prefetch=False, stages1=3, stages2=3),
        "scale_bytes/words": dict(scale_words=not plan.scale_words), "scaled_dot": dict(scaled_dot=True),
        "bn1=32,bytes": dict(bn1=32, scale_words=False), "bn1=128,w8": dict(bn1=128, warps1=8),
        "stages2": dict(stages1=2, stages2=2), "stages4": dict(stages1=4, stages2=4),
        # rows per expert block: the plan grows bm with the average rows per expert, which may misjudge skew
        "bm*2": dict(bm=min(64, plan.bm * 2)), "bm/2": dict(bm=max(16, plan.bm // 2)),
        # the plan before 64-row GEMM1 tiles (its 9% lead in graph time at gpt-oss-120b TP 8 x 1 token on an H200 did
        # not recur in the next sweep: noise, but a cheap candidate to keep measuring)
        "bn1=32,bytes,stages2": dict(bn1=32, scale_words=False, stages1=2, stages2=2),
        # cache prefetch instead of registers, so that the decode lands in the MMA operand layout (see prefetch_hint)
        "hint_l2,bytes,stages1": dict(prefetch=False, prefetch_hint="L2", scale_words=False, stages1=1, stages2=1),
        "hint_l1,bytes,stages1": dict(prefetch=False, prefetch_hint="L1", scale_words=False, stages1=1, stages2=1),
        "dependent_launch": dict(dependent_launch=not plan.dependent_launch),
        "two_mul": dict(one_mul=False),
        "split_pairs": dict(split_pairs=not plan.split_pairs),
        "upper_bytes": dict(upper_bytes=not plan.upper_bytes),
        "f16_gemm1": dict(f16_gemm1=not plan.f16_gemm1),
        "f16_gemm1,upper_bytes": dict(f16_gemm1=True, upper_bytes=True),
        # one 8-warp dot of the stacked gate and up rows: twice the warps per SM at prefill (see stacked_gate_up)
        "stacked,w8": dict(stacked_gate_up=True, warps1=8),
        "stacked,w8,f16_gemm1": dict(stacked_gate_up=True, warps1=8, f16_gemm1=True),
        "stacked,w8,decode_pipeline": dict(CACHE_HINT_DECODE_PIPELINE, stacked_gate_up=True, warps1=8),
        # prefill (64-row token tiles) in the decode plans' NVIDIA pipeline. Offline sm_90 SASS (Triton 3.6,
        # gpt-oss-120b TP1 x 1024 tokens): GEMM1's loop 771 -> 641 instructions per warp and K step (609 with
        # upper_bytes), GEMM2's 435 -> 327, registers unchanged (218 -> 219: two programs per SM); its loads are no
        # longer pipelined by stages, only prefetched into L2
        "decode_pipeline": CACHE_HINT_DECODE_PIPELINE,
        "decode_pipeline,upper_bytes": dict(CACHE_HINT_DECODE_PIPELINE, upper_bytes=True),
        # weights in fragment order (see MoeConfig.fragments): with the plan's stages and hint, with the decode plans'
        # L2 hint and one stage, and with 2-3 stages of Triton's own pipelining
        "fragments": ON_FRAGMENTS,
        "fragments,prefetch,stages1": dict(ON_FRAGMENTS, **FRAGMENT_PREFETCH),
        # GEMM1's gate and up tiles stacked over 8 warps: twice the warps per program where each decodes its own rows
        "fragments,stacked,w8": dict(ON_FRAGMENTS, **_FRAGMENT_STACKED),
        "fragments,stacked,w8,bn2=128": dict(ON_FRAGMENTS, **_FRAGMENT_STACKED, **_FRAGMENT_WIDE2),
        "fragments,hint_l2,stages1": dict(ON_FRAGMENTS, **FRAGMENT_HINT),
        "fragments,stages2": dict(ON_FRAGMENTS, **_fragment_stages(2)),
        "fragments,stages3": dict(ON_FRAGMENTS, **_fragment_stages(3)),
        "narrow_y": dict(narrow_y=not plan.narrow_y),
    }
    if plan.bm == 64:  # many rows per expert (4096+ tokens): 128-row token blocks decode each expert's weights half
        # as often. Offline sm_90 (gpt-oss-120b TP1 x 4096): GEMM1 452 instructions per warp and 1 KB at 174
        # registers (one 8-warp program per SM), GEMM2 447 at 208. gfx942's 64 KiB of LDS cannot hold its 3 stages
        # (96 KiB): there --tune counts it as failed
        variations["stacked,w8,bm128"] = dict(stacked_gate_up=True, warps1=8, bm=128)
        variations["stacked,w8,bm128,f16_gemm1"] = dict(stacked_gate_up=True, warps1=8, bm=128, f16_gemm1=True)
        # fragments with 128-row token blocks: offline sm_90 (gpt-oss-120b TP1 x 4096, 2 stages) GEMM1 458 instructions
        # per warp and K step for 128 tokens at 254 registers, no spills (the built-in 64-row blocks: 771 for 64)
        # (H200, 8192 tokens, against the plan before fragments: gpt-oss-120b TP1 9033 -> 5907 us, DeepSeek-R1 TP8
        # 4884 -> 3643; moe-tiles-h200/fragments-ab.md)
        variations["fragments,bm128,stages2"] = dict(ON_FRAGMENTS, bm=128, **_fragment_stages(2))
        # and stacked over 8 warps: 258 per warp and step for 128 tokens at 158 registers (one 8-warp program per SM)
        variations["fragments,stacked,w8,bm128,stages2"] = dict(ON_FRAGMENTS, **_FRAGMENT_STACKED, bm=128,
                                                                **_fragment_stages(2))
    if plan.bm == 128:  # the fragment plans' 128-row blocks (_measured_on_fragments): 64 rows as below 256 per expert
        variations["fragments,bm64,hint_l2,stages1"] = dict(bm=64, **FRAGMENT_HINT)
    if decode is not None:  # decode's K splits filling a wave: GEMM1's, and both GEMMs'
        tokens, topk, experts, num_sms = decode
        for name, gemm2 in (("fill_wave", False), ("fill_wave,gemm2", True)):
            filled = filling_one_wave(plan, tokens, topk, experts, inter, hidden, num_sms, gemm2=gemm2)
            variations[name] = dict(split1=filled.split1, split2=filled.split2)
    candidates = {}
    for name, change in variations.items():
        config = dataclasses.replace(plan, **change)
        if config.fragments and not change.get("fragments") and {"upper_bytes", "scale_words"} & change.keys():
            continue  # a knob of the layout-bytes loads, which the fragment-order kernels do not read
        try:
            check_config(config, inter, hidden)
        except ValueError:
            continue
        if config not in candidates.values():
            candidates[name] = config
    return candidates
