"""Launch knobs of the MLA decode kernels (rocbench.kernels.mla_decode): the config record, the built-in choice per
KV dtype, head tile, batch and kernel with the measurements behind it, what `rocbench mla --tune` tries, and what to
fall back on where a GPU cannot hold a config."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import triton

from rocbench.formats.fp8 import E4M3_DTYPES
from rocbench.formats.mla_schedule import pick_heads_per_group
from rocbench.kernels import tuned


@dataclass(frozen=True)
class MlaKernelConfig:
    """Launch knobs. block_n tokens per KV block; the latent [block_n, 512] tile of one stage
    is 64 KiB in bf16 at block_n 64, so num_stages 2 fits the 228 KiB of an H100 SM."""

    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 2
    max_tile_rows: int = 32  # query rows (qlen x heads) per tile: 64 needs block_n 32 to fit registers
    prefetch: bool = False  # load block i+1 into registers while computing block i (use with num_stages=1)
    reload_v: bool = False  # load the latent block again (an L2 hit) for PV; see mla_attend.attend_kv_range
    programs_per_sm: int = 1  # persistent grid = programs_per_sm x SMs (2 when two programs fit an SM)
    # persistent: leave programs idle rather than split finer than this (H200, batch 1 x 4096: 1 granule per
    # program beat 4 -- 23 vs 36 us at nhead 64 -- once the reduce loaded its partials together)
    min_granules_per_program: int = 1
    # split-KV: the bounds of pick_num_kv_splits (each split at least this many tokens of the average sequence, at
    # most this many splits). ncu (H200, batch 1 x 4096, nhead 16): 64 splits of one 64-token block, 64 programs on
    # 132 SMs, DRAM 5-11%; 128 splits of 32 tokens (block_n 32) fill them at twice the partials: a --tune candidate
    split_min_tokens: int = 64
    max_splits: int = 64
    fp8_qk: bool = False  # fp8 KV: q split into two fp8 parts, Q@K^T as fp8 MMAs on the tile as loaded
    # fp8 KV with bf16 q: the MMAs that take converted KV run in fp16 (mla_attend._f16_rows): e4m3 -> fp16 is one
    # exact conversion instruction per two elements, e4m3 -> bf16 goes through fp16 and fp32
    f16_mma: bool = False
    # the reduce launched as a programmatic dependent (CUDA sm_90+; ignored elsewhere): its launch and prologue
    # overlap the attention kernel's tail. Built in at batch 1 with 16 heads (builtin_config); a --tune candidate
    dependent_reduce: bool = False
    # the reduce's shape where the run need not be batch-invariant (0: reduce_shape's choice): output channels
    # per reduce program and partials merged per load. ncu at batch 1 (H200): the reduce is latency-bound (2-8% of
    # issue slots), walking up to 64 partials in loads of 32; one load of 64 merges them in one round trip
    reduce_cols: int = 0
    reduce_chunk: int = 0
    # the KV block's tokens as the MMAs' M side (mla_attend): at 16-32 query rows Hopper's 64-row wgmma
    # instead of mma.sync, K read by the MMA where it was loaded (fp8 as fp8 with fp8_qk). wgmma needs block_n 64
    # with 4 warps (one warp group); prefetch and reload_v do not apply. Offline sm_90 SASS (Triton 3.6) in
    # mla-variants-h200 round 9; a --tune candidate
    tokens_as_m: bool = False
    # fp8 KV to fp16 by a PTX conversion Triton may not move (NVIDIA; else ignored): the tile is converted where it was
    # loaded, and its change into the MMA operand's layout moves 16-bit values instead of permuting bytes
    # (mla_attend._kv_as). Offline sm_90 SASS in mla-variants-h200 round 10; a --tune candidate
    convert_where_loaded: bool = False
    # with fp8_qk, q in one fp8 part instead of two (hi + lo): one fp8 MMA for Q@K^T and half q's registers, at
    # AITER's numerics (its fp8 KV path casts q to fp8) and so at the suite's fp8-query tolerance, not bf16's. Only
    # the `triton_fp8q` backend takes it, in the Triton tile or the Gluon tile (mla_gluon: no low part loaded or
    # multiplied; offline sm_90, 64-row tile with S split: 104 -> 68 wgmma instructions). H100 (2026-12-06, batch 64,
    # ctx 4096, persistent): nhead 16 / 32 / 64 / 128 77.5 / 91.5 / 100.1 / 156.9 us, 0.69-0.98x bf16 KV's time
    fp8_q_one_part: bool = False
    # with fp8_qk's two parts, the low part's Q@K^T accumulated onto the high part's product (rescaled per row by
    # hi_scale / lo_scale) instead of into a second [rows, tokens] fp32 product: one product live, the same sum to
    # fp32 rounding. ncu (H200): the 64-row fp8 tile spills 1.6-3.1 M requests at nhead 64 / 128, where one part
    # (triton_fp8q: one product) took 243 / 448 us to 163 / 293. Offline sm_90 (Triton 3.6): the 64-row loop 1215 ->
    # 1010 instructions per warp, no warpgroup syncs, stack 256 -> 176 bytes. Predicted -12..-20% at nhead 64 / 128;
    # measured (H100, kernel_us, ctx 4096 uniform, 48 gated rows against two products, 2026-12-05, device_moe.sh
    # mla-one-product): persistent nhead 64 batch 64 244.7 -> 196.8 us, batch 128 430.9 -> 333.9; nhead 128 batch 64
    # 422.2 -> 326.4, batch 128 834.0 -> 637.9; split-KV -17..-20%; batch 1 and 16-32 heads (other tiles) within
    # +-4%. Built into the 64-row fp8 tile (FP8_LARGE_TILE_CONFIG); two products are a --tune candidate
    fp8_qk_one_product: bool = False
    # persistent: deal (sequence, head group) units whole where cutting them saves less than their partials cost
    # (rocbench.formats.mla_schedule, partial_cost: each partial's fp32 rows x 512 written and read back, in granules
    # of KV bytes). ncu (H200, nhead 128 batch 64 x 4096): the quota deal cut all 128 units over 132 programs to
    # save one granule of 64 and paid 256 partials (33.5 MB each way) and a 23.5 us reduce, 7% of the call.
    # Predicted -5..-8% there, nothing where units outnumber programs; measured (H100, kernel_us, ctx 4096, 48 rows
    # against the quota deal, 2026-12-05, scripts/device_moe.sh mla-whole-units): nhead 128 batch 64 uniform bf16
    # 328.2 -> 302.6, fp8 444.4 -> 418.5; nhead 64 batch 128 fp8 455.5 -> 428.4 (bf16 -0.5%); nhead 128 batch 128
    # -2%; skewed batches and nhead 16 the same schedule, within +-1%. Built in; the quota deal is a --tune candidate
    whole_units: bool = True
    # with whole_units, a third deal priced beside whole units and quota cuts: each unit in equal pieces of at most
    # the quota, one piece per program where units are fewer than programs (mla_schedule._even_pieces). At batch 64
    # x 4096 uniform, 16-64 heads, the quota deal gives 60 of 132 programs two items (two partials, q loaded twice,
    # two epilogues) for the same longest load of 32 granules as 128 halves (H200 make bench, 72d0ae0: bf16 nhead 32
    # 86.6 us in the attention and 4.5 in the reduce of 192 partials). Predicted -3..-9% at 32-64 heads there,
    # skewed batches at 32-128 heads -1..-5%, nhead 16 and batch 128 unchanged. H100 (2026-12-07, kernel_us, ctx
    # 4096, 64 gated rows against the two deals, device_moe.sh mla-even-pieces, mla-even-pieces-ab-h100): batch 64
    # uniform bf16 nhead 32 116.7 -> 110.2, 64 127.8 -> 116.3, fp8 -1..-4%; skewed bf16 32 / 64 -6 / -8%, fp8
    # nhead 16 -7%; batch 128 skewed nhead 128 -7 / -8%; every other row within +-1%. Built in; the two deals
    # without it are a --tune candidate
    even_pieces: bool = True
    # persistent: the attention tile as the warp-specialized Gluon kernel (rocbench.kernels.mla_gluon: a TMA producer
    # warp, two consumer warp groups with half the output channels each, mbarriers instead of the Triton tile's CTA
    # barrier) where mla_gluon_scope allows it (NVIDIA sm_90, Triton 3.6, bf16 q, 64-token pages; MTP at 64-head
    # tiles), else the Triton tile. Take it with gluon_ws_config's head tile and knobs; built in from
    # GLUON_MIN_KV_TOKENS where the GPU can run it (gluon_builtin). H100 (2026-12-06, kernel_us, ctx 4096, persistent,
    # 96 gated rows against the Triton tile, device_moe.sh mla-gluon-ws): batch 64 uniform bf16 nhead 16 / 32 / 64 /
    # 128 112.4 -> 111.7, 127.1 -> 119.3, 182.8 -> 136.7, 303.7 -> 171.2 us; fp8 109.1 -> 91.9, 138.6 -> 133.0,
    # 198.5 -> 176.2, 323.3 -> 281.9; batch 128 and skewed 1.02-1.79x; batch 1 bf16 0.86-1.01x, fp8 0.53-0.71x (its q
    # split and one program per SM)
    gluon_ws: bool = False
    # the Gluon tile with fp8 KV: q's two fp8 parts at one scale (the low part at the high part's), so that their
    # Q@K^T products are one MMA chain with one wait, not two with a rescale between
    # (rocbench.kernels.mla_gluon.split_q).
    # gluon_ws_config takes it for fp8. H100 (2026-12-06, kernel_us, ctx 4096 uniform, persistent, device_moe.sh
    # mla-gluon-knobs): nhead 32 / 64 / 128 batch 64 132.96 -> 124.80, 176.16 -> 165.44, 282.24 -> 263.41 us; batch 128
    # 222.56 -> 206.14, 310.91 -> 275.57, 550.94 -> 511.53; nhead 16 within 1%
    gluon_one_chain: bool = False
    # each Gluon consumer warp group's registers (setmaxnreg; mla_gluon._kernel): 232 with the producer's group at 40,
    # or 240 with it at 24. Offline sm_90 (Triton 3.6, 64-row tile, S split): 240 spills 0 bf16 / 92 fp8 registers
    # against 232's 4 / 101 (fp8's are its smem descriptors; 200 spills more). gluon_ws_config takes 240 for fp8 from
    # 32 heads. H100 (2026-12-06, kernel_us, ctx 4096, persistent, 96 gated rows, device_moe.sh mla-gluon-knobs): fp8
    # nhead 32 batch 64 / 128 125.3 -> 119.2, 206.7 -> 199.1 us (skewed 1.05x), nhead 64-128 0.99-1.03x, nhead 16
    # 0.98x; bf16 within 1-2%. (A launch at 224 registers per thread, an earlier form of this knob, cannot start 384
    # threads in 64K registers: H100, 2026-12-06)
    gluon_regs: int = 232
    # the Gluon tile's 64-row consumers split S between them (each the Q@K^T of half the block's tokens), exchanging row
    # maxima, P's halves and the row sums through shared memory, as FlashMLA divides the work: the Q@K^T MMAs halve
    # (otherwise each consumer issues them for all of S). gluon_ws_config takes it at 64-row tiles. H100 (2026-12-06,
    # as gluon_one_chain's): bf16 nhead 64 / 128 batch 64 136.64 -> 133.01, 171.55 -> 158.34 us, batch 128 212.27 ->
    # 211.73, 334.90 -> 305.92; fp8 (two chains) nhead 64 / 128 batch 128 310.91 -> 284.14, 550.94 -> 515.26. (Block
    # i + 1's Q@K^T issued before block i's softmax, the "overlap" knob, lost 5-36% everywhere there and is gone)
    gluon_split_s: bool = False
    # the Gluon tile computes q's wgmma shared-memory descriptors at each KV block instead of once per program
    # (mla_gluon._q_first): hoisted, the fp8 64-row tile keeps 24 64-bit descriptors live and spills them. Offline
    # sm_90 (Triton 3.6): fp8 64-row tile with S split at 240 registers 92 -> 1 spilled registers, its block loop
    # 812 -> 862 instructions per consumer warp without the 30 local loads; fp8 32-row 120 -> 0 bytes of stack, loop
    # 833 -> 915; bf16 64-row 4 -> 0 spills. gluon_ws_config takes it for fp8 from 32 heads (timed there)
    gluon_remat_q: bool = False
    # the Gluon tile's KV ring: blocks in flight per program; 0 is its own choice, 2 (64-row tiles, and bf16) or 3 (fp8
    # at 16-32 rows, whose stages are half bf16's). q in one fp8 part (fp8_q_one_part) frees the low part's shared
    # memory for one more stage. Offline sm_90 (Triton 3.6): 3 stages fit fp8's 64-row tile with q in one part (see
    # mla_gluon.default_stages); more than fit falls back to the Triton tile, as any config too large. H100
    # (2026-12-06, triton_fp8q, batch 64-128, 48 gated rows): 3 stages at 64 rows within 1% of 2, 4 at 16 rows
    # 0-5% slower than 3 (at 32-128 heads 4 do not fit: those rows ran the Triton tile, as their path says); the
    # defaults stay
    gluon_stages: int = 0
    # the Gluon tile's 16-32 row consumers split S^T's Q@K^T by K: the first multiplies the first five of the nine
    # 64-channel boxes, the second the last four, and each adds the other's partial product from shared memory (two fp32
    # slots each by block parity, one barrier of both per block) where each multiplied all nine. Why: Nsight Compute
    # source counters (H100, 2026-12-06, fp8 nhead 16 batch 64, device_moe.sh ncu-mla-gluon-source) had each consumer
    # spend 33% of its block loop issuing its 36 QGMMAs, 44% converting V and in the softmax, 12% in P@V; every 64x16
    # MMA reads its 64-token K tile from shared memory, so the two consumers read each block's K tile twice over (~184
    # KB of ~340 KB of shared-memory traffic per block, estimated). Issuing block i + 1's Q@K^T before block i's
    # conversion instead (the same H100, A/B in one call) made fp8 slower: nhead 16 / 32 batch 64 88.4 -> 96.0, 104.1 ->
    # 115.3 us (unexplained; perhaps the MMAs' and the conversion's shared-memory reads meet). Offline sm_90 (Triton
    # 3.6): QGMMAs per consumer and block 36 -> 20 / 16, no spills at 16 rows; fp8 at 32 rows takes 2 stages
    # (mla_gluon.default_stages). Predicted: fp8 nhead 16 / 32 batch 64 -5..-12%, bf16 within +-3%. H100 (2026-12-06,
    # kernel_us, ctx 4096, batch 64 / 128, uniform and skewed, 40 gated rows, device_moe.sh mla-gluon-split-k): fp8
    # nhead 16 0.88-0.91x (batch 64 uniform 88.9 -> 81.1 us), q in one fp8 part 0.95-0.96x; fp8 nhead 32 1.05-1.08x
    # slower (1.14-1.18x with q in one part), bf16 0.99-1.00x. Not its 2 stages against 3: S^T whole on 2 stages took
    # fp8 nhead 32 what it takes on 3 (104.1 / 182.8 us against 103.8 / 184.1 at batch 64 / 128, split 109.4 / 197.7;
    # device_moe.sh mla-split-k-stages); it was the bank conflicts (gluon_swizzled_parts, below). gluon_ws_config takes
    # it, swizzled, for fp8 at 16 and 32 heads
    gluon_split_k: bool = False
    # with gluon_split_k: the partial S^T's rows swizzled in shared memory (mla_gluon._partial_scores_layout). Why: the
    # consumers store and load it in the wgmma accumulator's layout, whose 64-bit accesses put a half-warp on four
    # tokens' rows 64 or 128 bytes apart, the same banks unswizzled: 2-way conflicts at 16 rows, 4-way at 32 (8 KB
    # stored and 8 KB loaded per consumer and block at 32 rows, between the two consumers' barrier, so every cycle of
    # it is waited for). The split's loss at 32 heads was not its lost KV stage (above). Offline sm_90 (Triton 3.6):
    # the same 18 STS.64 and 16 LDS.64, 16-32 more SASS lines; no spills at fp8 16 rows and bf16 32; at fp8 32 rows
    # (240 registers) one more spilled word, reloaded once per block after the exchange's barrier. The default split
    # (unswizzled) compiles to the 3560 lines Nsight Compute profiled. Predicted: fp8 split at 32 heads -4..-8% (to
    # within +-3% of S^T whole), at 16 heads -1..-3%. H100 (2026-12-06, kernel_us, ctx 4096 uniform, batch 64 / 128,
    # 32 gated rows, device_moe.sh mla-swizzled-parts): fp8 nhead 32 0.88 / 0.86x the unswizzled split (109.97 ->
    # 96.85, 199.43 -> 171.60 us), 0.93 / 0.94x S^T whole (103.86, 183.01 us): confirmed, beyond the prediction; fp8
    # nhead 16 1.00x (79.99 -> 79.87, 140.00 -> 140.59 us: refuted, no gain), bf16 0.99-1.01x. gluon_ws_config takes
    # it wherever it splits
    gluon_swizzled_parts: bool = False
    # fp8 64-row tiles with S split (gluon_split_s): each consumer converts its V boxes to fp16 while its Q@K^T MMAs
    # run, between issuing them and waiting for them, rather than after the wait; the stage is released after the
    # wait (the MMAs read K from it). Why: bf16 at 128 heads is compute-bound and fp8 with q's two parts does the same
    # MMA work plus the conversion (10-17% of the call by ablation), which now waits for the MMAs and they for it: the
    # two consumers convert and multiply in lockstep (their S-split exchanges), so the tensor cores idle through every
    # conversion. The same operations in another order: the same bits. No more shared memory. Predicted fp8 nhead
    # 128 -8..-14% (batch 64 197 -> 170-181 us), nhead 64 -5..-10%, q in one part (triton_fp8q) alike. H100
    # (2026-12-06, kernel_us, ctx 4096, nhead 64 / 128 x batch 64 / 128, uniform and skewed, 32 gated rows,
    # device_moe.sh mla-convert-under-qk): 1.013-1.032x slower in every row, q in two parts or one (nhead 128 batch 64
    # uniform 196.8 -> 201.6 us): refuted. Off; a --tune candidate (gluon_ws,convert_under_qk)
    gluon_convert_under_qk: bool = False


DEFAULT_CONFIG = MlaKernelConfig()

# Tuned on an H100 (Triton 3.6, batch 64 x ctx 4096, page 64, persistent kernel; microseconds
# per call, copy bandwidth 2.98 TB/s read+write), the 64-row tiles re-tuned on an H200 (4.24 TB/s;
# kernel_us, cold L2). `rocbench mla --tune` re-measures the candidates.
# bf16 KV:
#   tile rows <= 16 (nhead 16): 4 warps, 2 programs per SM   119 us, 2.53 TB/s of KV (85%)
#                               (8 warps, 1 program per SM   134 us, 76%)
#   tile rows 32 (nhead 32):    8 warps, block 64            155 us, 65%  (H200: 4 warps, 2 per SM, see below)
#   tile rows 64 (nhead >= 64): H200: block 64, 2 stages     179 us (nhead 64), 316 us (nhead 128; 231 TFLOP/s)
#                               (block 32: 229 / 431 us; block 64 with 3 stages 191 / 340; 1 stage 225 / 401)
BF16_TWO_PER_SM_CONFIG = MlaKernelConfig(num_warps=4, programs_per_sm=2)
# H200 (Triton 3.6, kernel_us): the same at 32 rows, from batch 8 up: persistent batch 8 33.2 vs 34.2 us (8 warps),
# 16: 41.5 vs 48.9, 32: 61.9 vs 84.2, 64: 106.1 vs 153.2, 128: 196.4 vs 290.8; split-KV batch 64 154.6 vs 190.9; MTP
# (nhead 16 x qlen 2, batch 32) 63.8 vs 84.6. At batch 2 8 warps stay ahead (17.9 vs 19.7; batch 1 15.9 vs 16.1, batch 4 equal)
# (mla-variants-h200/rows32.jsonl; `--tune` found it)
BF16_SMALL_BATCH_MAX = 4
# Its SASS computes Q@K^T in both warp groups (Triton gives a dot that feeds another all warps along M: 72 64x32x16
# wgmmas per warp group and block where 36 would do). Splitting S between them, P shared through a per-program
# scratch, needed six more barriers per block: H200 13-21% slower in bf16, 28-37% in fp8 (mla-split-scores-ab-h200)
BF16_LARGE_TILE_CONFIG = MlaKernelConfig(max_tile_rows=64, block_n=64)
# fp8 KV, converted for the MMAs: Triton keeps a single fp8 latent load that feeds both MMAs
# synchronous (see mla_attend.attend_kv_range), so either prefetch one block ahead in registers or load the
# latent twice, HBM once and L2 once (reload_v). At 64 rows Q@K^T runs as fp8 MMAs (fp8_qk; H200: 263 us
# at nhead 64, 489 us at nhead 128, against 356 / 678 us converting K too); at 16-32 rows fp8_qk was slower
# (175-180 vs 144 us at nhead 16). With bf16 q the converted MMAs run in fp16 (f16_mma: e4m3 -> fp16 is one
# instruction per two elements, -> bf16 three; offline sm_90 SASS: the 16-row loop 1105 -> 859 instructions per
# warp). H200, kernel_us, batch 64, bf16 -> fp16 MMAs at each row count's best config:
#   16 rows (nhead 16): prefetch, 8 warps 144.5 -> 135.0 us; reload_v, 4 warps, 2 per SM 124.0 us
#   32 rows (nhead 32): reload_v 192.4 -> 177.1 us; reload_v, 3 stages 164.8 us
#   64 rows (nhead 64 / 128): fp8_qk 259.3 -> 242.2 / 486.5 -> 445.7 us
# (results/examples/mla-variants-h200/round3-f16-mma.jsonl). Still slower than bf16 KV (86.7 / 153.1 / 177.3 /
# 313.0 us): the converted tile costs registers and issue slots the bf16 kernel spends on loads.
FP8_SMALL_TILE_CONFIG = MlaKernelConfig(reload_v=True, num_warps=4, programs_per_sm=2, f16_mma=True)
# The persistent kernel at 16-32 rows from batch 16 up: the same with 32-token blocks. Offline sm_90 SASS (Triton
# 3.6): with 64-token blocks it spills 44 registers and reloads 48 per block; with 32 none. H200 `--tune` (persistent,
# ctx 4096, graph us, 2026-12-04): nhead 16 batch 16 44.7 -> 40.5, 64 125.6 -> 110.1, 128 235.8 -> 207.6; nhead 32
# (against FP8_CONFIG below) batch 64 167.2 -> 150.6; at 64 rows it lost (nhead 64 282.3, 128 535.4 vs 246 / 451).
# `make bench` (kernel_us, uniform): persistent nhead 16 batch 64 124.5 -> 107.7, nhead 32 168.2 -> 148.7; but the
# split-KV kernel lost with it (nhead 16 batch 64 118.8 -> 151.2, nhead 32 batch 128 skewed 1229 -> 2070), so
# split-KV keeps FP8_SMALL_TILE_CONFIG and FP8_CONFIG (compare-sweep-deepseek-r1-h200-batch1-tiles-vs-block32-reduce64)
FP8_PERSISTENT_CONFIG = dataclasses.replace(FP8_SMALL_TILE_CONFIG, block_n=32)
# ... but at small batches (persistent, nhead 16, ctx 4096, H200 kernel_us) the 8-warp prefetch config wins, where a
# program gets one or two KV blocks: batch 1 13.8 vs 15.7 us, 2: 14.3 vs 18.4, 4: 18.6 vs 21.2, 8: 25.9 vs 28.6;
# from batch 16 on the one above (then with 64-token blocks: 42.8 vs 43.5, 32: 68.5 vs 73.0, 64: 124.8 vs 135.6;
# mla-variants-h200/smallbatch.jsonl)
FP8_SMALL_TILE_SMALL_BATCH_CONFIG = MlaKernelConfig(prefetch=True, num_stages=1, f16_mma=True)
FP8_SMALL_BATCH_MAX = 8
# 32 rows: split-KV's config at any batch; at batch <= 4 also the persistent kernel's (larger batches take the
# tokens on M, FP8_TOKENS_AS_M_CONFIG), and at 64 heads (128 in the persistent kernel) both kernels' instead of the
# 64-row tile (see TINY_BATCH_CONFIG below)
FP8_CONFIG = MlaKernelConfig(reload_v=True, num_stages=3, f16_mma=True)
FP8_LARGE_TILE_CONFIG = MlaKernelConfig(max_tile_rows=64, block_n=64, fp8_qk=True, f16_mma=True,
                                        fp8_qk_one_product=True)
# 32-row tiles (nhead 32; nhead 16 with qlen 2) take the block's tokens on the MMAs' M side (rounds 9-10 of
# mla-variants-h200: wgmma at 16-32 rows, fp8 K read by fp8 MMAs). H200, kernel_us, batch x ctx 4096, 2026-12-05
# (mla-variants-h200/round11.jsonl), against the configs they replace:
#   persistent, with the tile converted where it was loaded: nhead 32 batch 64 149.2 -> 136.1, batch 128 283.7 -> 255.0;
#   MTP (nhead 16 x qlen 2) batch 64 149.9 -> 136.4
#   split-KV, converted as Triton places it: nhead 32 batch 64 207.0 -> 182.9 (with the conversion where loaded 201.6),
#   but `make bench` showed it losing on skewed batches (its 1 stage over long splits): batch 64 748.8 -> 931.3, batch
#   128 1228.5 -> 1875.9 (uniform 206.9 -> 181.4, 336.0 -> 317.2), so split-KV keeps FP8_CONFIG
#   (compare-sweep-deepseek-r1-h200-block32-reduce64-vs-hint-tokens-as-m.md and the run before it)
# Offline they issued 80-122 warp-instructions per token against 216, and were predicted at ~70-95 us: the time fell
# 9-12%, not 40%. At 16 rows they lost (nhead 16 batch 64 108.8 -> 112.2 / 116.6, split-KV 117.8 -> 152.3 / 174.7),
# and nhead 64 in 32-row tiles tied the 64-row tile (245.0 vs 244.2), so only the persistent 32-row tiles take them.
FP8_TOKENS_AS_M_CONFIG = MlaKernelConfig(tokens_as_m=True, fp8_qk=True, f16_mma=True, convert_where_loaded=True,
                                         num_stages=1, num_warps=4, programs_per_sm=2)
# Batch 1-4, one query row per head (H200, Triton 3.6, persistent, ctx 4096, graph us; `--tune` on 2026-12-04, the
# builtin of the time against the winner). So few sequences leave SMs idle; 16-row tiles, two programs per SM, split
# them into more work items (the KV they share is read once from HBM, then from L2):
#   bf16 nhead 32: batch 1 17.3 -> 16.8, batch 4 26.3 -> 24.8; nhead 64: batch 1 19.7 -> 17.8 (a second run 20.2
#   -> 17.6), batch 4 33.4 -> 33.3. nhead 128 keeps its 64-row tile (batch 1 22.9 vs 23.1).
#   fp8 nhead 32, batch 1: 18.8 -> 15.4 (at batch 4 the 32-row config stays ahead)
TINY_BATCH_MAX = 4
TINY_BATCH_CONFIG = MlaKernelConfig(max_tile_rows=16, programs_per_sm=2)
# fp8 at nhead 64 and batch <= 4: fp8_qk's 64-row tile loses to the 32-row FP8_CONFIG: batch 1 26.6 -> 19.6, batch 4
# 41.1 -> 34.8 (make bench's sweep, batch 1 kernel_us: persistent 25.8 -> 18.4, split-KV 22.4 -> 17.1). At nhead 128
# the persistent kernel gains too (batch 1 29.9 -> 25.1; sweep 28.1 -> 23.6) but split-KV loses (sweep 26.1 -> 29.1)
# so at 128 heads only the persistent kernel takes it (batch 4: 49.2 both). At batch 1 and 16 heads the reduce
# runs as a programmatic dependent (dependent_reduce): bf16 14.1 -> 13.1 (again 14.2 -> 13.0), fp8 15.4 -> 13.9
# (elsewhere within +-1 us at batch 1-4 and +-1.5% at 16-128; off there)
# Up to 64 rows to merge (qlen 1: batch x heads), the reduce takes 64 channels per program and merges 64 partials per
# load (ncu: it was latency-bound, walking its partials in two dependent loads of 32). `--tune`, graph us, H200:
# batch 1 bf16 nhead 16 12.9 -> 11.2, nhead 64 17.6 -> 16.2; fp8 14.1 -> 12.2, 19.6 -> 18.1; batch 4 nhead 16 bf16
# 20.7 -> 19.2, fp8 20.4 -> 19.0. At 256 rows (nhead 64, batch 4) it did not pay (bf16 >= 32.6 vs 32.2, fp8 35.5 vs 34.0)
# At batch 1 and 128 heads, 64 partials per load over 128 channels (`--tune`, H100, 2026-12-06, against the wide
# reduce's 32 per load: split-KV bf16 0.90x, fp8 0.92x, persistent bf16 0.95x the call's time; batch 2 untimed)
TINY_REDUCE_ROWS = 64
# Split-KV at batch 1, bf16, 16 heads: up to 128 splits of 32-token blocks, the reduce merging a row's 128 partials in
# one load. H100 kernel_us 10.27 -> 9.57 (mla-splits128-ab-h100, c13f418) and `--tune` 0.95x (2026-12-06); fp8 lost
# (+6%) and so did nhead 64 (+17%), where the doubled partials cost the reduce more than the shorter splits save
BATCH1_SPLITS128 = dict(block_n=32, split_min_tokens=32, max_splits=128, reduce_chunk=128)
SPLITS64 = dict(block_n=64, split_min_tokens=64, max_splits=64, reduce_chunk=64)  # what the rest of batch 1 takes
# The persistent kernel at batch 1, bf16, 32 heads: its two 16-row head groups on one program per SM, not two (the
# grid of two per SM dealt each program about 31 of the 8192 group-tokens, under one 64-token block). H200
# (2026-12-06, mla-batch1-warps-ab-h200, four runs, kernel_us, ctx 4096): 13.60-13.79 -> 11.70-11.84 (-14%); the same
# change at nhead 16 (+4%), 64 (+1.5%) and 128, and with fp8, lost or tied, so it stays there (a `--tune` candidate,
# "1/sm", elsewhere). Predicted beforehand as 16 warps at 32 heads within +-5%; this is what the run showed instead
BATCH1_PERSISTENT_ONE_PER_SM = dict(programs_per_sm=1)


# The least KV (sequences x mean context, in tokens) that takes the Gluon tile by default, by KV kind and head count
# (an entry holds from its head count up). H100 (2026-12-06, kernel_us, persistent, uniform, gated rows against the
# Triton tile at batch 2-64 x ctx 1024 / 4096 x nhead 16-128, device_moe.sh mla-gluon-crossover): bf16 from 16K
# tokens 1.01-1.78x at every head count (below it 0.92-1.22x). fp8, whose q split costs a launch and whose tile
# converts V, from q's descriptors per block on (80 rows, mla-gluon-crossover-fp8): nhead 16 from 64K 1.07-1.13x (32K
# 0.94-1.01x), nhead 32 from 32K 1.01-1.19x (16K 0.97-1.01x), nhead 64 from 32K 1.12-1.47x (16K 0.91-1.00x), nhead
# 128 from 16K 1.28-1.61x (8K 0.92-1.01x); at 2-8K 0.66-0.92x everywhere
GLUON_MIN_KV_TOKENS = {"bf16": {16: 16 * 1024}, "fp8": {16: 64 * 1024, 32: 32 * 1024, 128: 16 * 1024}}


def gluon_min_kv_tokens(kv_dtype: torch.dtype, nhead: int) -> int:
    """GLUON_MIN_KV_TOKENS for a KV dtype at a head count: the entry of the most heads not above nhead."""
    by_heads = GLUON_MIN_KV_TOKENS["fp8" if kv_dtype in E4M3_DTYPES else "bf16"]
    return by_heads[max([heads for heads in by_heads if heads <= nhead], default=min(by_heads))]


def gluon_builtin(kv_dtype: torch.dtype, nhead: int, qlen: int, kv_tokens: int | None, *,
                  persistent: bool) -> MlaKernelConfig | None:
    """The Gluon tile where it is the built-in choice on a GPU that can run it (the caller asks mla_gluon_scope): the
    persistent kernel over at least GLUON_MIN_KV_TOKENS of KV, counted per query token (batch x qlen x ctx: the tile
    reads a sequence's KV once per query token). None elsewhere, and for kv_tokens None (one config for every batch, as
    triton_det needs: the Triton tile). MTP (qlen 2, 64-head tiles), H100 (2026-12-06, kernel_us, ctx 4096,
    persistent, 48 gated rows, device_moe.sh mla-gluon-mtp): nhead 64 / 128 batch 8-64 bf16 1.2-1.8x the Triton tile,
    fp8 1.04-1.22x; at nhead 64 bf16 batch 32, 111.6 us for 64 query tokens against qlen 1's 136.4 at batch 64."""
    if not persistent or kv_tokens is None or kv_tokens < gluon_min_kv_tokens(kv_dtype, nhead):
        return None
    return gluon_ws_config(kv_dtype, nhead, qlen)


def gluon_ws_config(kv_dtype: torch.dtype, nhead: int, qlen: int) -> MlaKernelConfig | None:
    """The Gluon tile's config (gluon_ws) for a head count: 64-row tiles from 64 heads, S split between the consumers
    (gluon_split_s), 16 or 32 rows below, one program per SM (its ~220 KB of shared memory); fp8 with q's two parts in
    one chain (gluon_one_chain) and, from 32 heads, 240 registers per consumer thread (gluon_regs) and q's descriptors
    made at each KV block (gluon_remat_q; H100, 2026-12-06, 32 gated rows: fp8 nhead 32 1.03-1.10x, 64-128
    1.25-1.32x, nhead 16 0.99-1.00x; bf16 0.98-1.03x, so off there); fp8 at 16-32 heads with S^T split by K between
    its consumers through swizzled rows (gluon_split_k, gluon_swizzled_parts: 0.89-0.90x S^T whole at 16 heads,
    0.93-0.94x at 32). None where it has no tile. More than one query
    token (MTP) only with 64-head tiles: it takes them one by one (mla_decode.one_token_lens), reading a sequence's KV
    once per query token, as the Triton tile reads it once per head group at those head counts; at 16-32 heads the
    Triton tile holds all of a sequence's query rows and reads its KV once."""
    if not (nhead in (16, 32) or nhead % 64 == 0) or qlen != 1 and nhead % 64:
        return None
    rows, fp8 = 64 if nhead >= 64 else 32, kv_dtype in E4M3_DTYPES
    return MlaKernelConfig(max_tile_rows=rows, block_n=64, gluon_ws=True, gluon_one_chain=fp8, gluon_split_s=rows == 64,
                           gluon_regs=240 if fp8 and nhead >= 32 else 232, gluon_remat_q=fp8 and nhead >= 32,
                           gluon_split_k=fp8 and rows < 64, gluon_swizzled_parts=fp8 and rows < 64)


def gluon_tile_name(config: MlaKernelConfig, kv_dtype: torch.dtype) -> str:
    """The Gluon tile with its knobs, as a row's path names it: e.g. "Gluon tile (S split, 232 registers)". Only the
    knobs the tile acts on for this KV dtype (mla_gluon.attend drops q's fp8 forms and V's conversion for bf16)."""
    fp8 = kv_dtype in E4M3_DTYPES
    q_form = ("q in one fp8 part" if config.fp8_q_one_part else "fp8 q in one chain" if config.gluon_one_chain
              else "") if fp8 else ""
    split_k = config.gluon_split_k and config.max_tile_rows < 64  # 64-row tiles split S by tokens instead
    knobs = [name for on, name in ((config.gluon_split_s, "S split"), (q_form, q_form),
                                   (config.gluon_remat_q, "q descriptors per block"), (split_k, "S^T split by K"),
                                   (split_k and config.gluon_swizzled_parts, "swizzled partial S^T"),
                                   (fp8 and config.gluon_convert_under_qk and config.gluon_split_s,
                                    "V converted under Q@K^T"),
                                   (config.gluon_stages, f"{config.gluon_stages}-stage KV ring")) if on]
    return f"Gluon tile ({', '.join(knobs + [f'{config.gluon_regs} registers'])})"


def tune_key(kv_dtype: torch.dtype, nhead: int, qlen: int, batch: int | None, *, persistent: bool = True) -> str:
    """What a tuned config is stored under: the KV element kind, the heads, the q length, the batch
    (rounded up to a power of two, at most 256: one decode batch plays like its neighbours) and the kernel."""
    batch_bucket = min(256, triton.next_power_of_2(max(1, batch))) if batch else "any"
    kv = "fp8" if kv_dtype in E4M3_DTYPES else dtype_kind(kv_dtype)
    kernel = "persistent" if persistent else "split_kv"
    return f"kv={kv},nhead={nhead},qlen={qlen},batch<={batch_bucket},kernel={kernel}"


def dtype_kind(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def default_config(kv_dtype: torch.dtype, nhead: int = 16, qlen: int = 1, device: torch.device | None = None,
                   batch: int | None = None, *, persistent: bool = True) -> MlaKernelConfig:
    """Launch knobs for a KV dtype and head count and one of the two kernels: the config `rocbench mla --tune`
    stored for this device (and batch) when there is one, else the sweep winners listed above."""
    return (tuned_config(kv_dtype, nhead, qlen, device, batch, persistent=persistent)
            or builtin_config(kv_dtype, nhead, qlen, batch, persistent=persistent))


def tuned_config(kv_dtype: torch.dtype, nhead: int, qlen: int, device: torch.device | None, batch: int | None, *,
                 persistent: bool = True) -> MlaKernelConfig | None:
    """The config `rocbench mla --tune` stored for this device, case and batch, or None."""
    stored = tuned.lookup("mla_decode", device, tune_key(kv_dtype, nhead, qlen, batch, persistent=persistent))
    return MlaKernelConfig(**stored) if stored else None


def builtin_config(kv_dtype: torch.dtype, nhead: int = 16, qlen: int = 1, batch: int | None = None, *,
                   persistent: bool = True) -> MlaKernelConfig:
    """The H100/H200 sweep winners listed above for a KV dtype, head count, q length and kernel (persistent or
    split-KV). With a batch, the small-batch winner where one differs; batch None gives the one config for every
    batch, which a batch-invariant caller (triton_det) must use."""
    config = _config_by_tile(kv_dtype, nhead, qlen, batch, persistent)
    if batch is None or qlen != 1 or batch > TINY_BATCH_MAX:
        return config
    fp8 = kv_dtype in E4M3_DTYPES  # batch 1-4, one query row per head: the winners listed with TINY_BATCH_CONFIG
    if nhead <= 16:
        config = dataclasses.replace(config, dependent_reduce=True) if batch == 1 else config
    elif not fp8 and nhead <= 64 or fp8 and nhead <= 32 and batch == 1:
        config = dataclasses.replace(TINY_BATCH_CONFIG, f16_mma=fp8)
    elif fp8 and (nhead <= 64 or persistent):
        config = FP8_CONFIG
    rows = batch * nhead
    if rows <= TINY_REDUCE_ROWS or batch == 1:
        config = dataclasses.replace(config, reduce_cols=64 if rows <= TINY_REDUCE_ROWS else 128, reduce_chunk=64)
    if batch == 1 and nhead <= 16 and not fp8 and not persistent:
        config = dataclasses.replace(config, **BATCH1_SPLITS128)
    if batch == 1 and 16 < nhead <= 32 and not fp8 and persistent:
        config = dataclasses.replace(config, **BATCH1_PERSISTENT_ONE_PER_SM)
    return config


def _config_by_tile(kv_dtype: torch.dtype, nhead: int, qlen: int, batch: int | None,
                    persistent: bool) -> MlaKernelConfig:
    """The winners by tile size (batch only splits fp8 16-32 row and bf16 32-row tiles at small batches; the kernel
    only fp8's 16-32 row tiles)."""
    small_tile = qlen * pick_heads_per_group(nhead, qlen, DEFAULT_CONFIG.max_tile_rows) <= 16
    large_tile = qlen * pick_heads_per_group(nhead, qlen, BF16_LARGE_TILE_CONFIG.max_tile_rows) >= 64
    if kv_dtype in E4M3_DTYPES:
        if small_tile and batch is not None and batch <= FP8_SMALL_BATCH_MAX:
            return FP8_SMALL_TILE_SMALL_BATCH_CONFIG
        if large_tile:
            return FP8_LARGE_TILE_CONFIG
        if small_tile:
            return FP8_PERSISTENT_CONFIG if persistent else FP8_SMALL_TILE_CONFIG
        if not persistent:
            return FP8_CONFIG
        # the tokens on M were timed from batch 64 only
        return FP8_PERSISTENT_CONFIG if batch is not None and batch <= TINY_BATCH_MAX else FP8_TOKENS_AS_M_CONFIG
    if large_tile:
        return BF16_LARGE_TILE_CONFIG
    if small_tile or batch is None or batch > BF16_SMALL_BATCH_MAX:
        return BF16_TWO_PER_SM_CONFIG
    return DEFAULT_CONFIG


def tune_candidates(kv_dtype: torch.dtype, nhead: int, qlen: int, batch: int | None = None, *,
                    persistent: bool = True, builtin: MlaKernelConfig | None = None) -> dict[str, MlaKernelConfig]:
    """What `--tune` tries for a case: the built-in choice (`builtin` where the platform's differs from
    builtin_config's Triton tile, e.g. the Gluon tile; the Triton tile is then `triton_tile`) and the alternatives
    that won somewhere."""
    fp8 = kv_dtype in E4M3_DTYPES
    c = functools.partial(MlaKernelConfig, f16_mma=True) if fp8 else MlaKernelConfig  # fp16 MMAs won everywhere
    # fp8: ncu on an H200 (nhead 16, batch 64, persistent, prefetch config) showed 255 registers per thread with
    # spills and one 8-warp program per SM (12.5% occupancy, DRAM 23%): the 4-warp, 2-per-SM shapes test that
    options = ({"reload_v": c(reload_v=True), "prefetch": c(prefetch=True, num_stages=1),
                "reload_v,stages3": c(reload_v=True, num_stages=3), "plain": c(),
                "warps4,2/sm": c(num_warps=4, programs_per_sm=2),
                "reload_v,warps4,2/sm": c(reload_v=True, num_warps=4, programs_per_sm=2),
                "fp8qk": c(fp8_qk=True), "fp8qk,reload_v": c(fp8_qk=True, reload_v=True),
                "fp8qk,rows64": c(fp8_qk=True, max_tile_rows=64, block_n=64),
                "fp8qk,rows64,block32": c(fp8_qk=True, max_tile_rows=64, block_n=32),
                "reload_v,stages3,warps4,2/sm": c(reload_v=True, num_stages=3, num_warps=4, programs_per_sm=2),
                "rows16,2/sm": c(max_tile_rows=16, programs_per_sm=2),
                # offline sm_90 SASS (Triton 3.6): the 16-row 4-warp config above spills 44 registers to local memory
                # and reloads 48 per 64-token block (ncu at nhead 16 batch 64: 1.5 M spill requests); 32-token blocks
                # spill none in the loop (1224 instructions per 32 tokens against 2213 per 64)
                "reload_v,warps4,2/sm,block32": c(reload_v=True, num_warps=4, programs_per_sm=2, block_n=32),
                # 16-row tiles take mma.sync, whose K^T and V operands live in registers: Triton reads the fp8 tile
                # that cp.async left in shared memory one byte per load (offline sm_90 SASS, Triton 3.6: 128 LDS.U8
                # per 32-token block) and converts K and V apart (reload_v). A register prefetch converts the tile
                # once, where it was loaded: 1224 -> 875 instructions per block, no spills in the loop (at 32 rows it
                # spills 282 registers per block). H200: slower (nhead 16 batch 64 108.8 -> 118.7 us; round 11)
                "prefetch,warps4,2/sm,block32": c(prefetch=True, num_stages=1, num_warps=4, programs_per_sm=2,
                                                  block_n=32),
                # the block's 64 tokens as the MMAs' M side (wgmma at 16-32 rows, K read as fp8 by the MMA): offline
                # sm_90 SASS (Triton 3.6), loop warp-instructions per token 153 -> 105 at 16 rows, 216 -> 122 at 32,
                # 255 registers, no spills (2 stages spill). H200: split-KV's built-in at 32 rows (round 11)
                "tokens_as_m,fp8qk,stages1,2/sm": c(tokens_as_m=True, fp8_qk=True, num_stages=1, num_warps=4,
                                                    programs_per_sm=2),
                # ... with V converted where it was loaded (convert_where_loaded): offline 105 -> 63 warp-instructions
                # per token at 16 rows (bf16's built-in: 64), 122 -> 80 at 32 (bf16: 85), no byte permutes, no spills;
                # H200: the persistent kernel's built-in at 32 rows, slower at 16 (round 11)
                "tokens_as_m,fp8qk,cvt,stages1,2/sm": FP8_TOKENS_AS_M_CONFIG} if fp8 else
               {"plain": c(), "warps4,2/sm": c(num_warps=4, programs_per_sm=2), "2/sm": c(programs_per_sm=2),
                "stages3": c(num_stages=3), "rows64,block32": c(max_tile_rows=64, block_n=32),
                "rows64": c(max_tile_rows=64, block_n=64), "rows64,stages3": c(max_tile_rows=64, block_n=64, num_stages=3),
                "rows16,2/sm": c(max_tile_rows=16, programs_per_sm=2),
                # 32 rows (nhead 32): the block's tokens on wgmma's M side instead of the row form's mma.sync, as fp8
                # takes it. Offline sm_90 SASS (Triton 3.6, persistent, batch 64): 1361 -> 1282 instructions per warp
                # and 64-token block, 255 registers, no local memory (with 1 stage it spills). H200 `--tune` (kernel us,
                # persistent, batch 64 skewed, 2026-12-06, device_moe.sh mla-tune32): 137.8 against the built-in's 115.3
                "tokens_as_m,2/sm": c(tokens_as_m=True, num_warps=4, programs_per_sm=2)})
    triton_tile = builtin_config(kv_dtype, nhead, qlen, batch, persistent=persistent)
    builtin = builtin or triton_tile
    if qlen * kernel_heads_per_group(nhead, qlen, triton_tile) > 32:
        # the built-in 64-row tile runs wgmma already, and needs fewer instructions per token and head (offline: 151
        # warp-instructions per token for 64 rows, against 122 for each of two 32-row tiles)
        for name in ("tokens_as_m,fp8qk,stages1,2/sm", "tokens_as_m,fp8qk,cvt,stages1,2/sm", "tokens_as_m,2/sm"):
            options.pop(name, None)
    elif fp8:  # 16-32 rows: the row form's conversion where loaded (offline, 16 rows: 153 -> 92 warp-instructions
        # per token, but 120 KB of shared memory, so one program per SM; the 64-row tile's code does not change)
        options["cvt"] = dataclasses.replace(triton_tile, convert_where_loaded=True)
    if fp8:
        options["bf16_mma"] = dataclasses.replace(triton_tile, f16_mma=False)
        if triton_tile.fp8_qk and not triton_tile.fp8_q_one_part:  # q's two fp8 parts: their products as one, or two
            name = "fp8qk_two_products" if triton_tile.fp8_qk_one_product else "fp8qk_one_product"
            options[name] = dataclasses.replace(triton_tile, fp8_qk_one_product=not triton_tile.fp8_qk_one_product)
    options["dependent_reduce"] = dataclasses.replace(triton_tile, dependent_reduce=True)
    if persistent:
        options["quota_cuts"] = dataclasses.replace(builtin, whole_units=False)  # the schedule's knobs: either tile
        options["no_even_pieces"] = dataclasses.replace(builtin, even_pieces=False)
        gluon = gluon_ws_config(kv_dtype, nhead, qlen)
        if gluon is not None:  # the Triton tile where the Gluon one cannot run (the row's path says why)
            options["gluon_ws"] = gluon
            other_regs = 232 if gluon.gluon_regs == 240 else 240
            options[f"gluon_ws,regs{other_regs}"] = dataclasses.replace(gluon, gluon_regs=other_regs)
            if fp8:
                options["gluon_ws,two_chains"] = dataclasses.replace(gluon, gluon_one_chain=False)
            if gluon.gluon_split_s:
                options["gluon_ws,whole_s"] = dataclasses.replace(gluon, gluon_split_s=False)
                if fp8:  # V's conversion under the Q@K^T MMAs, or after them
                    when = "convert_after_qk" if gluon.gluon_convert_under_qk else "convert_under_qk"
                    options[f"gluon_ws,{when}"] = dataclasses.replace(
                        gluon, gluon_convert_under_qk=not gluon.gluon_convert_under_qk)
            else:  # 16-32 rows: S^T by K between the consumers, or whole in each
                split_k = "whole_k" if gluon.gluon_split_k else "split_k"
                options[f"gluon_ws,{split_k}"] = dataclasses.replace(gluon, gluon_split_k=not gluon.gluon_split_k)
                if gluon.gluon_split_k:  # its partial S^T's rows swizzled, or not
                    parts = "plain_parts" if gluon.gluon_swizzled_parts else "swizzled_parts"
                    options[f"gluon_ws,{parts}"] = dataclasses.replace(
                        gluon, gluon_swizzled_parts=not gluon.gluon_swizzled_parts)
            remat = "hoisted_q" if gluon.gluon_remat_q else "remat_q"
            options[f"gluon_ws,{remat}"] = dataclasses.replace(gluon, gluon_remat_q=not gluon.gluon_remat_q)
    # Fewer, longer splits (split-KV 32 / 16, persistent 2 / 4 granules per program: half or a quarter of the
    # partials) lost on an H100 (`--tune`, batch 1 x 4096, 2026-12-06): 0.98-1.93x the built-in's time, nhead 16 the
    # worst; not candidates
    if batch is not None and batch <= TINY_BATCH_MAX:
        if persistent:  # one program per SM: fewer, longer work items (built in at 32 heads, bf16, batch 1)
            options["1/sm"] = dataclasses.replace(triton_tile, **BATCH1_PERSISTENT_ONE_PER_SM)
        else:  # twice the splits, of 32 tokens each, all merged in one load (BATCH1_SPLITS128), and the 64 splits of
            # 64 tokens otherwise built in: one is the built-in
            options["splits128,block32,chunk128"] = dataclasses.replace(triton_tile, **BATCH1_SPLITS128)
            options["splits64,block64,chunk64"] = dataclasses.replace(triton_tile, **SPLITS64)
        # the reduce's shapes: up to 64 partials per row in one load
        options["reduce64x64"] = dataclasses.replace(triton_tile, reduce_cols=64, reduce_chunk=64)
        options["reduce64x128"] = dataclasses.replace(triton_tile, reduce_cols=128, reduce_chunk=64)
        # reduce_shape's own choice by rows, where the built-in config asks for a shape
        options["reduce_by_rows"] = dataclasses.replace(triton_tile, reduce_cols=0, reduce_chunk=0)
    # each config once, under its first name (e.g. two fp8 products: "fp8qk,rows64"; a Gluon built-in's Triton tile)
    names = {builtin: "builtin"}
    names.setdefault(triton_tile, "triton_tile")
    for name, config in options.items():
        names.setdefault(config, name)
    return {name: config for config, name in names.items()}


def smaller_configs(config: MlaKernelConfig) -> list[MlaKernelConfig]:
    """`config`, then what to fall back on where a GPU cannot hold it (rocbench.kernels.fit): after a Gluon tile the
    Triton tile with the same knobs, then the KV block halved down to 16 tokens, then one pipeline stage. Offline
    compiles (Triton 3.6, `tests/compile_only.py`): on gfx942 (64 KiB of LDS) every bf16 config and half the fp8 ones
    need 68-80 KiB at 64-token blocks, and all fit at 32; on sm_89 (99 KiB) the 32- and 64-row tiles need 108-152 KiB.
    Neither knob changes which heads a tile holds, nor, from block_n 64 down, the schedule (its granularity is at
    least 64 tokens; callers build it per config anyway)."""
    if config.gluon_ws:  # the Gluon tile has one size: next, the Triton tile's chain
        return [config, *smaller_configs(dataclasses.replace(config, gluon_ws=False))]
    chain = [config]
    while chain[-1].block_n > 16:
        chain.append(dataclasses.replace(chain[-1], block_n=chain[-1].block_n // 2))
    if chain[-1].num_stages > 1:
        chain.append(dataclasses.replace(chain[-1], num_stages=1))
    return chain


def persistent_num_programs(num_sms: int, config: MlaKernelConfig) -> int:
    """Programs for the persistent grid (build the schedule with this many)."""
    return num_sms * config.programs_per_sm


def kernel_heads_per_group(nhead: int, qlen: int, config: MlaKernelConfig) -> int:
    """The head tile both kernels use for this config (build the schedule with the same). The Gluon tile takes a
    sequence's query tokens one by one, so its tile holds heads of one token."""
    return pick_heads_per_group(nhead, 1 if config.gluon_ws else qlen, config.max_tile_rows)
