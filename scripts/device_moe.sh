#!/usr/bin/env bash
# The MoE kernels (and one MLA tune) on one GPU: make bench, the GPU tests of the knobs that no GPU has timed yet,
# and A/B rows of those knobs against the built-in plans (scripts/moe_config_store.py forces a knob through a
# tuned-config store; the rows are gated as always). Name the parts; each fits inside the device's 10-minute limit:
#   bench       make bench, its sweeps tarred into $OUT (about 540 s on an H200; stopped at 570 s of the call; on an
#               H100 the DeepSeek-R1 sweep alone took 288 s and the call ran out in gpt-oss-120b's)
#   bench=NAME  make bench of configs/NAME.yaml only (BENCH_ARGS=--config): deepseek-r1-mxfp4 or gpt-oss-120b, one
#               device call each where the whole does not fit one
#   gpu-tests   the MoE kernel tests that run on the GPU (decodes bitwise, fragments, CUDA graphs; 240 s at most)
#   ab-decode   built-in vs upper_bytes vs f16_gemm1 + upper_bytes at 1-1024 tokens (3 shapes; about 140 s)
#   ab-prefill  built-in vs stacked gate/up on 8 warps (+ f16_gemm1, + the decode pipeline, + 128-row blocks) at
#               1024 and 4096 tokens (gpt-oss-120b TP1, DeepSeek-R1 TP8; about 200 s)
#   ab-fragments built-in vs weights in fragment order (MoeConfig.fragments) on the plans' pipelines and with the
#               register prefetch at 1-1024 tokens, GEMM1 stacked over 8 warps (and GEMM2 on 128 rows) at 64-1024
#               (3 shapes; about 400 s)
#   ab-fragments-prefill  the same at 4096 tokens, with the L2 hint and 1 stage, 2 stages, stacked; at 8192 tokens
#               128-row token blocks, also stacked (gpt-oss-120b TP1; about 250 s)
#   retiled     triton (weights in fragment order, the default on NVIDIA) against triton_layout (the layout's own bytes)
#               in one run at 1, 64, 1024 and 8192 tokens (3 shapes; about 300 s)
#   ab-wide-y   built-in (fragments) vs GEMM2's y back in fp32 at 1024 and 4096 tokens (gpt-oss-120b TP1 / TP8 padded,
#               DeepSeek-R1 TP8): the plans store y in bf16 where its fp32 round trip outweighs GEMM2's weights
#               (moe_plan._measured_on_fragments; on at gpt-oss TP8 from 1024 tokens by that rule, untimed: predicted
#               fp32 y +7% there at 1024 tokens, +10% at 4096, 50 / 200 MB more each way; about 450 s)
#   ab-bm64     built-in (fragments) vs 64-row token blocks at 1024 tokens (the plans take 32 up to 32 rows per expert;
#               with y in bf16 at DeepSeek-R1 the two have not been timed together; about 180 s). H100 (2026-12-05): 64
#               rows lost, gpt-oss-120b TP1 1039.9 -> 1188.8, TP8 189.0 -> 214.4, DeepSeek-R1 TP8 576.8 -> 609.2 us
#   ab-split4   built-in (fragments) vs GEMM1's K split 4 at 1 token (gpt-oss-120b TP1: the plan fits 3 to one wave;
#               about 90 s). H100 (2026-12-05): 4 lost, 31.8 -> 34.8 us (DeepSeek-R1 TP8, forced to 4: 20.5 -> 24.2)
#   ab-fill-wave built-in (fragments) vs the decode plans' K splits sized to one wave (moe_plan.filling_one_wave): GEMM1's
#               only, and both GEMMs', at 1, 4 and 16 tokens (3 shapes). ncu: gpt-oss-120b TP8 x 1 token's GEMM1 ran
#               192 programs (0.3 waves) at 14% of DRAM. Predicted: that call 14 -> ~9-10 us, DeepSeek-R1 TP8 x 1
#               token 20 -> ~16 us; at 16 tokens, where the fill lowers splits 2 -> 1, within +-5% (about 300 s).
#               H100 (2026-12-05): refuted, 13.9 -> 16.8-17.4 and 20.2 -> 21.4 us; at 16 tokens gpt-oss-120b TP1 both
#               GEMMs' 287.8 -> 251.5, the others +4-6%: a --tune candidate, not a plan
#   ab-bm128    built-in (fragments: 64-row token blocks, the register prefetch or the L2 hint, 1 stage) vs 128-row
#               blocks with 2 stages at 4096 and 8192 tokens (128+ rows per expert). Offline sm_90 (Triton 3.6,
#               gpt-oss-120b TP1 x 4096): GEMM1's loop 365 -> 463 instructions per warp and K step for 64 -> 128 tokens
#               (5.7 -> 3.6 per token) at 180 -> 253 registers (2 programs per SM either way), GEMM2's 206 -> 304 (3.2
#               -> 2.4) at 128 -> 172 (4 -> 2 per SM). Timed so far only against the plans before fragments (H200,
#               gpt-oss-120b TP1 x 8192 9033 -> 5907 us). Predicted -5% to -25% at 4096 (about 600 s: a call alone)
#   ncu         Nsight Compute of the default (fragment-order) kernels at issue 22's rows: gpt-oss-120b TP1 / TP8 (padded)
#               and DeepSeek-R1 TP8 at 1, 64, 1024 tokens, one profiled call each (the gate's first; as ncu-moe-h200
#               did for the kernels before), text reports and their digest (scripts/ncu_digest.py) tarred into ncu.tgz (about 250 s)
#   ncu-mla     Nsight Compute of the current MLA kernels at issue 22's rows: persistent, batch 64, ctx 4096 uniform,
#               nhead 16/32/64/128 x bf16/fp8 KV, and batch 1 (split-KV) at nhead 16 and 64: the gate's eager call,
#               with the warp-state details (stall reasons; --print-details all), digest beside the reports in
#               ncu-mla.tgz (about 250 s)
#   det         triton, triton_det (y in bf16 since), and triton_det with the 1-token plan's whole GEMM1 split and with
#               y in fp32 (plugins: scripts/moe_det_variants_plugin.py), batch-invariance gate on (1, 64, 1024 tokens;
#               about 250 s on an H100). H100 (2026-12-05, y in bf16 as the plugin then): the whole split DeepSeek-R1 x 1
#               token 1.43x -> 1.24x triton's time (predicted ~1.05x) but 1.12-1.64x at 64-1024 tokens; y in bf16 at
#               1024 tokens 1.12-1.34x -> 1.05-1.15x (predicted -10% at DeepSeek-R1: -13%). H100 (2026-12-06, 206 s):
#               the whole split again 1.39x -> 1.21x at DeepSeek-R1 x 1 token, 1.10 / 1.16x at 64 / 1024: built in for
#               that shape (moe_plan.deterministic_split1; results/examples/moe-det-split-h100). Now with GEMM2's K
#               split 2 / 4 ways for every batch instead of y in fp32 (predicted: gpt-oss-120b TP1 x 1 token 1.38x ->
#               1.15-1.25x, 1024 tokens +5-10%; about 300 s on an H100). H200 (2026-12-06, 366 s): split in two 1.36x ->
#               1.15x at gpt-oss-120b TP1 x 1 token, +1% / +5% at 64 / 1024, lost elsewhere: built in for TP1
#               (moe_plan.deterministic_split2; results/examples/moe-det-split-h200)
#   det-builtin triton and triton_det alone, batch-invariance gate on, at 1, 64, 1024 tokens (3 shapes): triton_det as
#               built in, GEMM2's K split in two at gpt-oss-120b TP1 (moe_plan.deterministic_split2; H200 2026-12-06 as
#               triton_det_split2x2: 1.36x -> 1.15x triton's time at 1 token; about 150 s on an H200)
#   mla-split-k-stages  fp8 nhead 32 batch 64 / 128: triton (S^T whole, 3 stages) against triton_gluon_split_k (split,
#               2 stages) and triton_gluon_stages2 (whole, 2 stages; about 60 s). H100 (2026-12-06, 20 s): whole on 2
#               stages as on 3 (104.1 vs 103.8 us batch 64, 182.8 vs 184.1 batch 128), split 109.4 / 197.7: the split
#               costs at 32 rows, not the stage
#   mla-swizzled-parts  the split tile's partial S^T in swizzled rows (MlaKernelConfig.gluon_swizzled_parts): its GPU
#               tests, then triton against triton_gluon_split_k, triton_gluon_split_k_swizzled and triton_gluon_whole_k
#               at nhead 16 / 32 x batch 64 / 128 x bf16 / fp8, uniform. Predicted: fp8 split at 32 heads -4..-8% (to
#               within +-3% of whole), at 16 -1..-3%; bf16 within +-2% (about 150 s). H100 (2026-12-06, 71 s): fp8 32
#               heads 0.86-0.88x the plain split, 0.93-0.94x whole; 16 heads 1.00x: built in for fp8 (99b87a4)
#   ncu-split-k-32  Nsight Compute's source counters (and digests) of the 32-row fp8 tile at batch 64 with S^T split by
#               K and whole: where the split's 5-8% goes at 32 heads, where it gains 9-12% at 16 (about 150 s; moot
#               since the swizzled split wins at 32)
#   mla-convert-under-qk  the fp8 64-row Gluon tile converting V while its Q@K^T MMAs run
#               (MlaKernelConfig.gluon_convert_under_qk): its GPU test (the same bits), then triton against
#               triton_gluon_convert_under_qk and triton_fp8q against triton_fp8q_convert_under_qk, nhead 64 / 128 x batch
#               64 / 128 x uniform / skewed, fp8. Predicted nhead 128 -8..-14%, 64 -5..-10% (about 150 s). H100
#               (2026-12-06): 1.3-3.2% slower in every row, refuted (results/examples/mla-convert-under-qk-ab-h100)
#   moe16-modes  DeepSeek-R1 TP 8 x 16 tokens, both layouts, kernel_us at 12 samples in three processes, at 400, and
#               as make bench takes it, each with --save-samples, then 12 samples thrice with the dependent launch off:
#               are a row's first samples the slow mode (168 against 148 us in two make bench runs, graph_us 158
#               throughout)? (about 350 s). H100 (2026-12-06): yes, the row timed second started slow in 5 of 8
#               processes, dependent launch or not (results/examples/moe16-warmup-h100)
#   moe16-warm  moe16-modes' three 12-sample runs again after timing.warm_up (30 ms of replays): no slow start now?
#               (about 100 s). H100 (2026-12-06, 78 s): all 72 samples 144.4-153.8 us, none slow at the start
#   mla-batch1-tune  --tune at batch 1 x ctx 4096, nhead 16 / 64 / 128 (TUNE_NHEAD), bf16 / fp8, persistent and
#               split-KV (TUNE_ARGS=--no-persist: split-KV only); WITH_TIER_TEST=1 runs the GPU tier's timed-row test
#               first (kernel_parts as own times). One KV dtype (TUNE_KV) and path per call (TUNE_LIMIT_S stops it
#               sooner). H100 (2026-12-06, 4 calls of 71-125 s; tier test passed): fewer, longer splits lost (0.98-1.93x
#               the built-in; dropped), the reduce's 64 partials per load over 128 channels won at nhead 128 (0.90x
#               split-KV bf16, 0.92x fp8, 0.95x persistent bf16; built in)
#   ncu-mla-batch1-source  where batch 1's split-KV attention kernel waits, per SASS instruction (as
#               ncu-mla-gluon-source): nhead 16 / 64 bf16 and 16 fp8, ctx 4096, the kernel's first launch; report, source
#               page CSV and digest in ncu-mla-batch1-source.tgz. Asks: is the 8.2 us at nhead 16 bf16 the dependent
#               loads (seq_len, page indices, then KV), the MMAs, or the partial's store? The timings say it is not the
#               instruction count (peel_tail: 264 fewer instructions, slower) nor the partials' bytes (fewer splits:
#               slower) (about 150 s)
#   mla-batch1-reduce  batch 1's two built-ins of 2026-12-06 outside --tune, at ctx 4096, bf16 / fp8, both kernels:
#               triton_tile against triton_tile_reduce_by_rows (the reduce's shape before) at nhead 64 / 128, and
#               against triton_tile_splits64 (split-KV before BATCH1_SPLITS128) at nhead 16. Predicted nhead 128
#               -5..-10%, nhead 16 bf16 split-KV -5..-7%, the other rows the same (about 120 s). H100 (2026-12-06):
#               0.90-0.94x at 128 heads, 0.92x at 16: confirmed (results/examples/mla-batch1-reduce-ab-h100)
#   mla-batch1-warps  batch 1 at nhead 16 / 32, bf16, both kernels: triton_tile against itself on 8 and 16 warps, one
#               program per SM (predicted nhead 16 split-KV -6..-9% / -8..-12%; about 80 s). H200 (2026-12-06, 17 s):
#               refuted, +2% / +16%; nhead 32 persistent on one program per SM -14%, built in since
#   ab-fused-combine  the fragment-order default against it with the top-k sum done by GEMM2's last program per
#               hidden tile (MoeConfig.fused_combine: no combine kernel) at 1 and 4 tokens, the default run again after
#               (versus_default). Predicted: 1 token -1..-3 us of 14-36 us (the combine kernel's launch and its read
#               of y), 4 tokens within +-3% (about 150 s)
#   split       one_mul against split_pairs (16, 64 tokens), the fused combine at 1 and 16 (about 100 s)
#   mla-tune32  rocbench mla --tune at nhead 32, bf16 and fp8 KV, batch 64, persistent (the bf16 tokens-on-M candidate;
#               every candidate's time lands in the tuned-config store's evidence, copied to $OUT; about 200 s)
#   mla-fp8q    triton against triton_fp8q (q cast to fp8 once, one fp8 MMA for Q@K^T; the fp8-query tolerance) with
#               fp8 KV, persistent, ctx 4096 uniform, nhead 16/32/64/128 x batch 1/64, gated; and its kernel test on the
#               GPU (test_q_in_one_fp8_part: the tolerance on random q). Offline sm_90 (Triton 3.6, batch 64): the
#               64-row loop 1215 -> 840 instructions per warp and 64-token block (bf16: 995), 72 -> 36 QGMMA, stack
#               256 -> 136 bytes; the 16-row loop unchanged (1224: mma.sync converts anyway). Predicted: nhead 64 / 128
#               -15..-25% (H100 243 / 447 us -> at or under bf16's 183 / 333), nhead 16 / 32 within +-5% (about 200 s)
#   mla-whole-units  triton (its persistent schedule dealing units whole where cutting saves less than the partials
#               cost: MlaKernelConfig.whole_units, built in) against triton_quota_cuts (scripts/mla_variants_plugin.py:
#               every unit cut to the quotas, the deal before) at nhead 16/64/128 x batch 64/128 x bf16/fp8 x
#               uniform/skewed, ctx 4096, gated. H100 (2026-12-05, whole units as the plugin then): nhead 128 batch 64
#               uniform 328.2 -> 302.6 us bf16, 444.4 -> 418.5 fp8; nhead 64 batch 128 fp8 455.5 -> 428.4; elsewhere
#               within +-2% (about 150 s)
#   mla-gluon-default  the MLA GPU tests (the GPU tier with the Gluon tile built in at batch 32 x 600 bf16), triton's
#               rows on both sides of mla_config.GLUON_MIN_KV_TOKENS (paths name the tile), and --tune at nhead 64
#               batch 64 bf16 with the Triton tile as a candidate (about 400 s)
#   mla-gluon-mtp  MTP (qlen 2) through the Gluon tile, its query tokens one by one (mla_decode.one_token_lens; 64-head
#               tiles only, where the Triton tile reads the KV once per head group anyway) against the Triton tile at
#               nhead 64 / 128 x batch 8 / 32 / 64 x bf16 / fp8 x uniform / skewed, persistent, ctx 4096, gated; first
#               the Gluon GPU tests (qlen 2 and 3 among them). Predicted from the qlen-1 rows of as many query tokens
#               (H100): nhead 64 batch 32 bf16 174 -> ~136 us (-22%), fp8 193 -> ~175 (-10%). H100 2026-12-06 (48
#               rows, 82 s): 174.0 -> 111.6 and 192.4 -> 163.2; bf16 1.21-1.78x, fp8 1.04-1.22x: built in since
#   mla-gluon-knobs  the Gluon tile as built in (fp8's one Q@K^T chain and, from 32 heads, 240 registers; S split at
#               64 rows) against triton_gluon_plain (none of them) and triton_gluon_regs240 at nhead 16-128 x batch 64 /
#               128 x fp8 / bf16 x uniform / skewed, ctx 4096, persistent, gated; then `triton` (the Gluon tile built in
#               for MTP) against triton_tile at qlen 2; first the Gluon GPU tests. H100 2026-12-06, first as plugins
#               (80 rows): one chain fp8 nhead 32-128 1.06-1.13x, S split nhead 64-128 1.03-1.10x, overlap 0.64-0.95x
#               and a 224-register launch (384 threads do not fit) gone; then this part (96 + 16 rows, 120 s): 240
#               registers fp8 nhead 32 1.05x, 64-128 0.99-1.03x, built in for fp8 from 32 heads. Now against
#               triton_gluon_remat_q (q's descriptors per block) instead of regs 240; H100 (64 rows): fp8 nhead 64-128
#               1.25-1.32x, 32 1.03-1.10x, 16 and bf16 within 3%: built in for fp8 from 32 heads
#   mla-gluon-fp8q  triton_fp8q (q cast to fp8, AITER's numerics, at the fp8-query tolerance) through the Gluon tile
#               (MlaKernelConfig.fp8_q_one_part: no low part; offline 104 -> 68 wgmma instructions at 64 rows) against
#               triton with fp8 and bf16 KV, nhead 16-128 x batch 64 / 128, ctx 4096 uniform, persistent; first its GPU
#               test. Predicted: at 64-128 heads, where MMAs bound the time, fp8q under bf16's time (q's two parts cost
#               as much MMA time as bf16's one product). H100 (2026-12-06, 24 gated rows): fp8q 1.19-1.64x triton's
#               fp8, at nhead 64 batch 64 104.2 us against bf16's 132.9; its GPU test failed at nhead 128 x 7 programs
#   mla-gluon-remat  the Gluon GPU tests (tracebacks in mla-gluon-tests.log) with q's descriptors per block built in
#               for fp8 from 32 heads, then triton against triton_fp8q (fp8, bf16; nhead 16-128, batch 64 / 128) and
#               MTP fp8 (qlen 2, nhead 64 / 128, batch 8 / 32) against the hoisted descriptors and the Triton tile
#               (about 250 s)
#   mla-gluon-crossover-fp8  the Gluon tile against the Triton tile with fp8 KV from 2K to 128K KV tokens (nhead
#               16-128, batch 2-32, ctx 1024 / 4096), now that q's descriptors per block took 64-128 heads 1.25-1.32x:
#               where GLUON_MIN_KV_TOKENS["fp8"] (128K) should now be (about 150 s)
#   ncu-mla-gluon  Nsight Compute of the Gluon tile as built in (batch 64, ctx 4096: nhead 16 / 64 / 128 fp8, 32 / 128
#               bf16), the digest in ncu-mla-gluon/digest.md (about 150 s)
#   mla-reduce-chunk  triton (its reduce's chunk shrunk to the most partials the schedule's merges take) against
#               triton_reduce16 (16 at once, as before; scripts/mla_variants_plugin.py) at nhead 16 / 32 / 64, batch 64
#               / 128, bf16 and fp8, uniform and skewed: predicted -2..-6% at batch 64 (about 120 s). H100 (2026-12-06,
#               66 s): batch 64 uniform 1.01-1.05x, skewed 1.00-1.03x, batch 128 within 0.7%: built in as written
#   mla-gluon-split-k  the 16-32 row Gluon tile with S^T's Q@K^T split by K between its consumers
#               (MlaKernelConfig.gluon_split_k): its GPU tests, then triton against triton_gluon_split_k (nhead 16 /
#               32, batch 64 / 128, bf16 / fp8, uniform / skewed) and triton_fp8q against triton_fp8q_split_k (fp8,
#               uniform), gated; then Nsight Compute's source counters of the split tile (fp8 nhead 16 batch 64) and
#               their digest (scripts/ncu_source_digest.py). Predicted fp8 nhead 16 / 32 batch 64 -5..-12%, bf16 within
#               +-3% (about 250 s). H100 (2026-12-06, 78 s to the ncu): fp8 nhead 16 0.88-0.91x, 32 1.05-1.08x slower,
#               bf16 0.99-1.00x: built in for fp8 at 16 heads (e395432); triton is then split there (triton_gluon_whole_k
#               the other choice)
#   mla-even-pieces  triton (MlaKernelConfig.even_pieces: the persistent schedule also prices each unit cut in equal
#               pieces, one per program where units are fewer than programs) against triton_no_even_pieces (the two
#               deals before), nhead 16-128 x batch 32 / 64 / 128 (EVEN_PIECES_BATCH: another list) x bf16 / fp8 x
#               uniform / skewed, ctx 4096, gated (about 200 s). H100 (2026-12-07, batch 64 / 128, 64 rows in
#               120 s): bf16 batch 64 uniform nhead 32 / 64 -6 / -9%, skewed -6 / -8%, fp8 -1..-7%, batch 128 skewed
#               nhead 128 -7..-8%, the rest within +-1%: built in (results/examples/mla-even-pieces-ab-h100)
#   ncu-mla-gluon-source  where the Gluon tile's consumers stall, per SASS instruction: Nsight Compute's warp-state
#               sampling (SourceCounters) of the tile as built in at batch 64, ctx 4096, fp8 nhead 16 (tokens on M) and
#               64 (64-row), bf16 nhead 32 (NCU_ROWS="32 bf16" for one: a comma list of "nhead kv"); each report
#               (.ncu-rep), its source page as CSV (--page source --print-source sass) and that page's digest in
#               ncu-mla-gluon-source.tgz (about 120 s; 40 s a row)
#   mla-gluon-stages  triton_fp8q against its Gluon tile's KV ring one stage deeper (3 at 64 rows, 4 at 16 heads;
#               scripts/mla_variants_plugin.py), fp8 nhead 16-128 x batch 64 / 128, uniform and skewed, after the GPU
#               tests of the deeper ring (bitwise the default's) (about 150 s). H100 (2026-12-06, 51 s): 3 stages at
#               64 rows within 1% of 2, 4 at 16 heads 0-5% slower than 3; at 32+ heads 4 do not fit (the Triton tile)
#   mla-gluon-ablate  where the Gluon tile's time goes (scripts/mla_gluon_ablate.py): the tile as built in, without
#               fp8's V conversion, and its producer's KV stream alone, at batch 64 x 4096: fp8 (two parts, one part)
#               nhead 16 / 64 / 128, bf16 nhead 32 / 128 (kernel_us as the harness takes it, ungated; H100
#               2026-12-06: 184 s, results/examples/mla-gluon-ablate-h100)
#   mla-one-product  triton (q's two fp8 parts' Q@K^T as one product in the 64-row tile: built in) against
#               triton_fp8_two_products (scripts/mla_variants_plugin.py) with fp8 KV, persistent and split-KV, nhead
#               16/32/64/128 x batch 1/64/128, ctx 4096 uniform, gated. H100 (2026-12-05, one product as the plugin
#               then; predicted -12..-20%): nhead 64 / 128 at batch 64 / 128 -17..-24%, elsewhere within +-4% (60 s)
#   mla-batch1  triton against triton_splits128_chunk128 (split-KV in up to 128 splits of 32-token blocks, the reduce
#               loading 128 partials at once; scripts/mla_variants_plugin.py) at batch 1, ctx 4096, nhead 16 / 64,
#               bf16 / fp8, both kernels, gated. Predicted split-KV nhead 16 -10..-20%; H100 (2026-12-06): bf16 -7%,
#               fp8 +6%, nhead 64 +17..+54%: refuted as a plan, kept as a --tune candidate (60 s)
#   mla-gluon-ws  triton against triton_gluon_ws (MlaKernelConfig.gluon_ws, rocbench/kernels/mla_gluon.py: the tiles
#               in Gluon, a TMA producer warp and two consumer warp groups that each own half the output channels,
#               synced by mbarriers only) at nhead 16 / 32 / 64 / 128 x batch 1 / 64 / 128 x bf16 / fp8 x uniform /
#               skewed, ctx 4096, persistent, gated, 60 s per row at most (a hang is a row); first its GPU tests
#               (tests/test_mla_gluon.py) and the fp8 probe's dump (scripts/mla_gluon_fp8_probe.py).
#               H100 2026-12-06 (bf16, uniform; results/examples/mla-gluon-ws-ab-h100): 24/24 passed, batch 64 / 128
#               1.01-1.78x triton (nhead 128 batch 64 305.4 -> 173.9 us), batch 1 0.86-1.01x; fp8 failed its check
#               (the q split's residual), fixed since. H100 2026-12-06 (96 rows, bf16 + fp8, uniform + skewed): all
#               passed, batch 64 / 128 1.02-1.79x (fp8 1.03-1.31x), batch 1 0.53-1.01x; graph_us beside kernel_us
#               at nhead 64 / 128 batch 64 (about 160 s). Built in since from mla_config.GLUON_MIN_KV_TOKENS on Hopper, so
#               the baseline is triton_tile (the Triton tile's built-in config)
#   mla-gluon-crossover  triton_tile against triton_gluon_ws at batch 2-64, ctx 1024 / 4096, nhead 16-128, bf16 / fp8,
#               uniform, persistent: where the Gluon tile starts to win (mla_config.GLUON_MIN_KV_TOKENS; about 150 s)
#   test        the whole make test (H200, 16 cores, 8 workers: 758 passed, 61 skipped in 411 s; H100 2026-12-06: 761
#               passed, 63 skipped in 304 s; stopped at 580 s)
# e.g.  scripts/device_moe.sh gpu-tests ab-decode det      then: python scripts/variants_table.py $OUT/ab-*
# Everything lands under $OUT (run directories tarred, since few files come back).
set -u
[ $# -gt 0 ] || { sed -n "2,/^set -u/{/^#/p}" "$0" >&2; exit 2; }
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
OUT=${OUT:-results/device}
STORES=$(mktemp -d)
mkdir -p "$OUT"
make venv > "$OUT/venv.log" 2>&1 || { tail -20 "$OUT/venv.log"; exit 1; }
PY=.venv/bin/python
# MoeConfig.fragments with its tiles (moe_plan.FRAGMENT_TILES)
FRAG='"fragments": true, "bn1": 64, "bn2": 64, "nb1": 4, "nb2": 4, "warps1": 4, "warps2": 4, "split_pairs": false,
      "prefetch": false, "stacked_gate_up": false, "f16_gemm1": false, "upper_bytes": false'
DECODE_PIPELINE='"prefetch": false, "prefetch_hint": "L2", "scale_words": false, "stages1": 1, "stages2": 1,
                 "dependent_launch": true, "split_pairs": true'

# shellcheck source=scripts/device_step.sh
source "$(dirname "$0")/device_step.sh"

# rows <variant> <tokens> <gpt-oss TPs> [backends...]: interleave, kernel time, into $OUT/ab-<variant>; a variant
# other than "builtin" runs under the store of that name
rows() {
    local variant=$1 tokens=$2 tps=$3 backends=${4:-triton} store=()
    [ "$variant" != builtin ] && store=(env "ROCBENCH_TUNED_CONFIGS=$STORES/$variant.json")
    local probes=(--skip-batch-probes)
    [[ $backends == *det* ]] && probes=()  # the deterministic backends keep their batch-invariance gate
    local common=(--layout interleave --times kernel --max-time 0.5 --tokens "$tokens" --backends "$backends"
                  --plugin scripts/moe_det_variants_plugin.py "${probes[@]}" --out "$OUT/ab-$variant")
    step 200 "${store[@]}" $PY -m rocbench moe --model gpt-oss-120b --tp "$tps" --pad "${common[@]}" | tail -14
    step 200 "${store[@]}" $PY -m rocbench moe --model deepseek-r1 --tp 8 "${common[@]}" | tail -8
}

# Nsight Compute as every ncu part runs it (unlocked clocks, child processes), and with the sections its digest reads
NCU_RUN=(ncu --clock-control none --target-processes all)
NCU=("${NCU_RUN[@]}" --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats
     --section WarpStateStats --section ComputeWorkloadAnalysis --section SchedulerStats)

ncu_source() {  # ncu_source <report> <kernel name> <rocbench mla args: the row>: Nsight Compute's source counters of
    # the named MLA kernel's first launch (ctx 4096 uniform), its source page as <report>.csv and that page's digest
    # (scripts/ncu_source_digest.py) as <report>.md
    local rep=$1 kernel=$2
    shift 2
    step 90 "${NCU_RUN[@]}" -k "regex:^$kernel\$" --launch-count 1 --section SourceCounters --section WarpStateStats \
        --import-source yes -o "$rep" $PY -m rocbench mla --ctx-dist uniform --times kernel --skip-batch-probes \
        --iters 3 --out "$STORES/ncu-mla-runs" "$@" > "$rep.log" 2>&1
    ncu --import "$rep.ncu-rep" --page source --print-source sass --csv > "$rep.csv" 2>&1
    $PY scripts/ncu_source_digest.py "$rep.csv" > "$rep.md" 2>&1
}

mla_rows() {  # mla_rows <limit> <table lines> <name> <rocbench mla args...>: kernel time, the A/B plugin loaded, 60 s
    # per case, into $OUT/ab-<name> (both kernels unless the args say); the last lines of its table
    local limit=$1 lines=$2 name=$3
    shift 3
    step "$limit" $PY -m rocbench mla --plugin scripts/mla_variants_plugin.py --times kernel --skip-batch-probes \
        --timeout 60 --out "$OUT/ab-$name" "$@" | tail -"$lines"
}

mla_ab() {  # mla_ab <limit> <table lines> <name> <rocbench mla args...>: mla_rows of the persistent kernel
    mla_rows "$1" "$2" "$3" --persist "${@:4}"
}

force() {  # force <variant> <MoeConfig fields as JSON> [--retiled: on the fragment-order plans]
    $PY scripts/moe_config_store.py "$STORES/$1.json" "$2" "${@:3}"
}

versus_default() {  # versus_default <variant> <MoeConfig fields as JSON> <tokens> <gpt-oss TPs>: the fragment-order
    # default against it changed by those fields, in one part: default, variant, default again. The same default row
    # drifted 10-13% over one H100 call while each run's spread stayed under 0.5% (moe-fragments-ab-h100); the second
    # default run (ab-builtin_again: no store of that name exists) shows how far, so the variant is judged between two
    force "$1" "$2" --retiled
    for variant in builtin "$1" builtin_again; do rows "$variant" "$3" "$4"; done
}

finish() {
    (cd "$OUT" && ls -d ab-* > /dev/null 2>&1 && tar czf ab.tgz ab-* && rm -rf ab-*)
    exit "$1"
}

for part in "$@"; do
    case "$part" in
        bench|bench=*)
            args=()
            [[ $part == bench=* ]] && args=("BENCH_ARGS=--config configs/${part#bench=}.yaml")
            mkdir -p "$OUT/bench" && mv results results.repo && ln -s "$(realpath "$OUT/bench")" results
            step "${BENCH_LIMIT_S:-570}" make bench "${args[@]}" > "$OUT/bench.log" 2>&1
            grep -E "passed|failed|report" "$OUT/bench.log" | tail -8
            rm results && mv results.repo results
            (cd "$OUT" && tar czf sweeps.tgz bench && rm -rf bench) ;;
        gpu-tests)
            # the tests that run on the GPU (the interpreter's skip there), one line per test as it ends (-v), so a
            # log cut by the limit still names a failure; 8 workers to compile in parallel
            step 240 $PY -m pytest -v -n 8 -p no:cacheprovider -rf --tb=short \
                tests/test_moe_kernel.py tests/test_kernel_target.py > "$OUT/gpu-tests.log" 2>&1
            grep -E "FAILED|ERROR|^E |passed|failed" "$OUT/gpu-tests.log" | tail -25 ;;
        ab-decode)
            force upper '{"upper_bytes": true}'
            force f16_upper '{"f16_gemm1": true, "upper_bytes": true}'
            for variant in builtin upper f16_upper; do rows $variant 1,16,64,1024 1,8; done ;;
        ab-prefill)
            force stacked8 '{"stacked_gate_up": true, "warps1": 8}'
            force stacked8_f16 '{"stacked_gate_up": true, "warps1": 8, "f16_gemm1": true, "upper_bytes": true}'
            force stacked8_pipeline "{\"stacked_gate_up\": true, \"warps1\": 8, \"upper_bytes\": true, $DECODE_PIPELINE}"
            force stacked8_bm128 '{"stacked_gate_up": true, "warps1": 8, "bm": 128, "f16_gemm1": true, "upper_bytes": true}'
            for variant in builtin stacked8 stacked8_f16 stacked8_pipeline stacked8_bm128; do rows $variant 1024,4096 1; done ;;
        ab-fragments)
            force fragments "{$FRAG}"  # on the plans' own pipelines: the L2 hint at decode, 3 stages at prefill
            force fragments_prefetch "{$FRAG, \"prefetch\": true, \"prefetch_hint\": \"\", \"stages1\": 1, \"stages2\": 1}"
            force fragments_stacked "{$FRAG, \"stacked_gate_up\": true, \"warps1\": 8}"
            force fragments_w8 "{$FRAG, \"stacked_gate_up\": true, \"warps1\": 8, \"bn2\": 128, \"warps2\": 8}"
            for variant in builtin fragments fragments_prefetch; do rows $variant 1,16,64,1024 1,8; done
            for variant in fragments_stacked fragments_w8; do rows $variant 64,1024 1,8; done ;;
        ab-fragments-prefill)
            force fragments "{$FRAG}"
            force fragments_hint "{$FRAG, \"prefetch_hint\": \"L2\", \"stages1\": 1, \"stages2\": 1}"
            force fragments_st2 "{$FRAG, \"stages1\": 2, \"stages2\": 2}"
            force fragments_stacked "{$FRAG, \"stacked_gate_up\": true, \"warps1\": 8}"
            force fragments_bm128 "{$FRAG, \"bm\": 128, \"stages1\": 2, \"stages2\": 2}"
            force fragments_stacked_bm128 "{$FRAG, \"bm\": 128, \"stages1\": 2, \"stages2\": 2, \"stacked_gate_up\": true, \"warps1\": 8}"
            for variant in builtin fragments fragments_hint fragments_st2 fragments_stacked; do rows $variant 4096 1; done
            for variant in builtin fragments_bm128 fragments_stacked_bm128; do rows $variant 8192 1; done ;;
        retiled) rows builtin 1,64,1024,8192 1,8 triton,triton_layout ;;
        ab-wide-y) versus_default wide_y '{"narrow_y": false}' 1024,4096 1,8 ;;
        ab-bm64) versus_default bm64 '{"bm": 64}' 1024 1,8 ;;
        ab-split4) versus_default split4 '{"split1": 4}' 1 1 ;;
        ab-fused-combine) versus_default fused '{"fused_combine": true}' 1,4 1,8 ;;
        ab-fill-wave)
            force fill1 '{}' --retiled --fill-wave gemm1
            force fill12 '{}' --retiled --fill-wave both
            for variant in builtin fill1 fill12 builtin_again; do rows "$variant" 1,4,16 1,8; done ;;
        ab-bm128) versus_default bm128 '{"bm": 128, "prefetch": false, "prefetch_hint": "", "stages1": 2, "stages2": 2}' \
                                       4096,8192 1,8 ;;
        ncu)
            mkdir -p "$OUT/ncu"
            for model in "gpt-oss-120b --tp 1 --pad" "gpt-oss-120b --tp 8 --pad" "deepseek-r1 --tp 8"; do
                for tokens in 1 64 1024; do
                    name=$(echo "$model-$tokens" | tr -c 'a-z0-9.\n-' '-' | tr -s '-')
                    # shellcheck disable=SC2086  # $model holds several flags
                    step 60 "${NCU[@]}" -k 'regex:_moe_|_chunk|_place' --launch-count 6 --section InstructionStats \
                        $PY -m rocbench moe --model $model --tokens "$tokens" --layout interleave --times graph \
                        --skip-batch-probes --iters 3 --backends triton --out "$STORES/ncu-runs" \
                        > "$OUT/ncu/$name.txt" 2>&1
                done
            done
            $PY scripts/ncu_digest.py "$OUT"/ncu/*.txt > "$OUT/ncu/digest.md"
            (cd "$OUT" && tar czf ncu.tgz ncu && rm -rf ncu) ;;
        ncu-mla)
            mkdir -p "$OUT/ncu-mla"
            for row in "16 64 --persist" "32 64 --persist" "64 64 --persist" "128 64 --persist" "16 1 --no-persist" \
                       "64 1 --no-persist"; do
                read -r nhead batch mode <<< "$row"
                for kv in bf16 fp8; do
                    step 60 "${NCU[@]}" -k 'regex:_persistent_kernel|_split_kv|_reduce|_merge' --launch-count 2 \
                        --print-details all $PY -m rocbench mla --nhead "$nhead" --batch "$batch" --kv-dtype "$kv" \
                        "$mode" --ctx-dist uniform --times graph --skip-batch-probes --iters 3 --backends triton \
                        --out "$STORES/ncu-mla-runs" > "$OUT/ncu-mla/nhead$nhead-batch$batch-$kv${mode#-}.txt" 2>&1
                done
            done
            $PY scripts/ncu_digest.py "$OUT"/ncu-mla/*.txt > "$OUT/ncu-mla/digest.md"
            (cd "$OUT" && tar czf ncu-mla.tgz ncu-mla && rm -rf ncu-mla) ;;
        det) rows builtin 1,64,1024 1,8 triton,triton_det,triton_det_full_split,triton_det_split2x2,triton_det_split2x4 ;;
        det-builtin) rows builtin 1,64,1024 1,8 triton,triton_det ;;
        split)
            force two_mul '{"one_mul": false}'
            force natural_k '{"split_pairs": false}'
            force fused '{"fused_combine": true}'
            for variant in two_mul natural_k; do rows $variant 16,64 1; done
            rows fused 1,16 1,8 ;;
        mla-tune32)
            step 400 env ROCBENCH_TUNED_CONFIGS="$OUT/mla-tune32.json" $PY -m rocbench mla --nhead 32 --batch 64 \
                --kv-dtype bf16,fp8 --persist --tune --times kernel --skip-batch-probes --out "$OUT/ab-mla-tune32" | tail -12 ;;
        mla-fp8q)
            step 120 $PY -m pytest -q -p no:cacheprovider tests/test_mla_kernels.py -k one_fp8_part 2>&1 | tail -3
            step 300 $PY -m rocbench mla --nhead 16,32,64,128 --batch 1,64 --kv-dtype fp8 --persist --ctx-dist uniform \
                --backends triton,triton_fp8q --times kernel --skip-batch-probes --out "$OUT/ab-mla-fp8q" | tail -22 ;;
        mla-whole-units)
            step 300 $PY -m rocbench mla --nhead 16,64,128 --batch 64,128 --kv-dtype bf16,fp8 --persist \
                --ctx-dist uniform,skewed --plugin scripts/mla_variants_plugin.py --backends triton,triton_quota_cuts \
                --times kernel --skip-batch-probes --out "$OUT/ab-mla-whole-units" | tail -30 ;;
        mla-gluon-ws)
            step 150 $PY -m pytest -q -p no:cacheprovider -rfs tests/test_mla_gluon.py 2>&1 | tail -6
            # fp8's outputs on crafted inputs, for scripts/mla_gluon_fp8_probe.py analyse on any machine
            PYTHONPATH=. step 60 $PY scripts/mla_gluon_fp8_probe.py dump "$OUT" 2>&1 | tail -2
            # the Gluon launch under CUDA-graph capture and replay (graph_us) beside kernel_us
            step 120 $PY -m rocbench mla --nhead 64,128 --batch 64 --kv-dtype bf16,fp8 --persist --ctx-dist uniform \
                --plugin scripts/mla_variants_plugin.py --backends triton_tile,triton_gluon_ws --times kernel,graph \
                --skip-batch-probes --timeout 60 --out "$OUT/ab-mla-gluon-ws-graph" | tail -12
            mla_ab 400 30 mla-gluon-ws --nhead 16,32,64,128 --batch 64,128,1 --kv-dtype fp8,bf16 \
                --ctx-dist uniform,skewed --backends triton_tile,triton_gluon_ws ;;
        mla-gluon-crossover)
            mla_ab 300 12 mla-gluon-crossover --nhead 16,32,64,128 --batch 2,4,8,16,32,64 --ctx 1024,4096 \
                --kv-dtype bf16,fp8 --ctx-dist uniform --backends triton_tile,triton_gluon_ws ;;
        mla-gluon-default)
            # the GPU tests of the MLA paths (the GPU tier: the Gluon tile built in at batch 32 in bf16), then triton's
            # own choice of tile on both sides of mla_config.GLUON_MIN_KV_TOKENS (each row's path names it), then
            # --tune at nhead 64 with the Gluon tile built in and the Triton tile a candidate (triton_tile)
            step 200 $PY -m pytest -v -n 8 -p no:cacheprovider -rfs --tb=short tests/test_gpu_tier.py \
                tests/test_mla_gluon.py tests/test_mla_kernels.py tests/test_tuning.py > "$OUT/mla-tests.log" 2>&1
            grep -E "FAILED|ERROR|^E |passed|failed" "$OUT/mla-tests.log" | tail -15
            step 120 $PY -m rocbench mla --nhead 16,128 --batch 16,64 --ctx 1024,4096 --kv-dtype bf16,fp8 --persist \
                --ctx-dist uniform --times kernel --skip-batch-probes --out "$OUT/ab-mla-gluon-default" | tail -4
            $PY -c "import pandas as p, glob; f = p.read_csv(glob.glob('$OUT/ab-mla-gluon-default/*/results.csv')[0]); \
print(f[['nhead', 'batch', 'ctx', 'kv_dtype', 'kernel_us_median', 'path']].to_string())"
            step 150 env ROCBENCH_TUNED_CONFIGS="$OUT/mla-tune64.json" $PY -m rocbench mla --nhead 64 --batch 64 \
                --kv-dtype bf16 --persist --tune --times kernel --skip-batch-probes --out "$OUT/ab-mla-tune64" | tail -6 ;;
        mla-gluon-mtp)
            step 150 $PY -m pytest -q -p no:cacheprovider -rfs tests/test_mla_gluon.py 2>&1 | tail -4
            mla_ab 300 26 mla-gluon-mtp --nhead 64,128 --batch 8,32,64 --qlen 2 --kv-dtype bf16,fp8 \
                --ctx-dist uniform,skewed --backends triton_tile,triton_gluon_ws ;;
        mla-gluon-knobs)
            step 200 $PY -m pytest -q -p no:cacheprovider -rfs -n 4 tests/test_mla_gluon.py 2>&1 | tail -4
            mla_ab 300 12 mla-gluon-knobs --nhead 16,32,64,128 --batch 64,128 --kv-dtype fp8,bf16 \
                --ctx-dist uniform,skewed --backends triton_gluon_ws,triton_gluon_plain,triton_gluon_remat_q
            mla_ab 150 20 mla-gluon-mtp-builtin --nhead 64,128 --qlen 2 --batch 8,32 --kv-dtype fp8,bf16 \
                --ctx-dist uniform --backends triton,triton_tile ;;
        mla-gluon-fp8q)
            step 100 $PY -m pytest -q -p no:cacheprovider -rfs tests/test_mla_gluon.py -k one_fp8_part 2>&1 | tail -3
            mla_ab 200 26 mla-gluon-fp8q --nhead 16,32,64,128 --batch 64,128 --kv-dtype fp8,bf16 --ctx-dist uniform \
                --backends triton,triton_fp8q ;;
        mla-gluon-remat)
            step 150 $PY -m pytest -q -n 4 -p no:cacheprovider -rfs --tb=long tests/test_mla_gluon.py \
                > "$OUT/mla-gluon-tests.log" 2>&1
            grep -E "^E |^FAILED|passed|failed" "$OUT/mla-gluon-tests.log" | tail -30
            mla_ab 200 6 mla-gluon-remat-fp8q --nhead 16,32,64,128 --batch 64,128 --kv-dtype fp8,bf16 \
                --ctx-dist uniform --backends triton,triton_fp8q
            mla_ab 150 6 mla-gluon-remat-mtp --nhead 64,128 --qlen 2 --batch 8,32 --kv-dtype fp8 --ctx-dist uniform \
                --backends triton_gluon_ws,triton_gluon_hoisted_q,triton_tile ;;
        mla-gluon-crossover-fp8)
            mla_ab 200 4 mla-gluon-crossover-fp8 --nhead 16,32,64,128 --batch 2,4,8,16,32 --ctx 1024,4096 \
                --kv-dtype fp8 --ctx-dist uniform --backends triton_tile,triton_gluon_ws ;;
        ncu-mla-gluon)
            mkdir -p "$OUT/ncu-mla-gluon"
            for row in "16 fp8" "32 bf16" "64 fp8" "128 fp8" "128 bf16"; do
                read -r nhead kv <<< "$row"
                step 60 "${NCU[@]}" -k 'regex:^_kernel$' --launch-count 2 --section InstructionStats \
                    $PY -m rocbench mla --nhead "$nhead" --batch 64 --kv-dtype "$kv" \
                    --persist --ctx-dist uniform --times kernel --skip-batch-probes --iters 3 --backends triton \
                    --out "$STORES/ncu-mla-runs" > "$OUT/ncu-mla-gluon/nhead$nhead-batch64-$kv.txt" 2>&1
            done
            $PY scripts/ncu_digest.py "$OUT"/ncu-mla-gluon/*.txt > "$OUT/ncu-mla-gluon/digest.md"
            cat "$OUT/ncu-mla-gluon/digest.md" | head -20
            (cd "$OUT" && tar czf ncu-mla-gluon.tgz ncu-mla-gluon && rm -rf ncu-mla-gluon) ;;
        mla-reduce-chunk)
            mla_ab 240 8 mla-reduce-chunk --nhead 16,32,64 --batch 64,128 --kv-dtype bf16,fp8 \
                --ctx-dist uniform,skewed --backends triton,triton_reduce16 ;;
        mla-split-k-stages)  # whole S^T on the split tile's 2 stages: is the split's loss at 32 heads the stage?
            mla_ab 120 8 mla-split-k-stages --nhead 32 --batch 64,128 --kv-dtype fp8 --ctx-dist uniform \
                --backends triton,triton_gluon_split_k,triton_gluon_stages2 ;;
        mla-swizzled-parts)
            step 120 $PY -m pytest -q -n 8 -p no:cacheprovider -rfs tests/test_mla_gluon.py -k "swizzled or split_by_k" \
                2>&1 | tail -3
            mla_ab 200 14 mla-swizzled-parts --nhead 16,32 --batch 64,128 --kv-dtype bf16,fp8 --ctx-dist uniform \
                --backends triton,triton_gluon_split_k,triton_gluon_split_k_swizzled,triton_gluon_whole_k ;;
        mla-batch1-tune)  # kernel_parts as own times on the GPU, then --tune at batch 1 with fewer, longer splits
            [[ -n ${WITH_TIER_TEST:-} ]] && step 150 $PY -m pytest -q -p no:cacheprovider -rfs tests/test_gpu_tier.py \
                -k timed_row 2>&1 | tail -3
            step "${TUNE_LIMIT_S:-420}" env ROCBENCH_TUNED_CONFIGS="$OUT/mla-batch1-tune.json" $PY -m rocbench mla \
                --nhead "${TUNE_NHEAD:-16,64,128}" \
                --batch 1 --kv-dtype "${TUNE_KV:-bf16,fp8}" --ctx-dist uniform --tune --times kernel --skip-batch-probes \
                ${TUNE_ARGS:-} \
                --out "$OUT/ab-mla-batch1-tune" | tail -30 ;;
        mla-batch1-reduce)
            mla_rows 200 20 mla-batch1-reduce --nhead 64,128 --batch 1 --kv-dtype bf16,fp8 --ctx-dist uniform \
                --backends triton_tile,triton_tile_reduce_by_rows
            mla_rows 120 12 mla-batch1-splits --nhead 16 --batch 1 --kv-dtype bf16,fp8 --ctx-dist uniform \
                --backends triton_tile,triton_tile_splits64 ;;
        mla-batch1-warps)  # batch 1 on 8 / 16 warps, one program per SM (mla_variants_plugin: predictions, and the
            # H200's answer: refuted for split-KV; one program per SM won at 32 heads persistent, built in since)
            mla_rows 150 16 mla-batch1-warps --nhead 16,32 --batch 1 --kv-dtype bf16 --ctx-dist uniform \
                --backends triton_tile,triton_tile_warps8,triton_tile_warps16 ;;
        mla-convert-under-qk)
            step 120 $PY -m pytest -q -n 8 -p no:cacheprovider -rfs tests/test_mla_gluon.py -k "converted_under_qk" \
                2>&1 | tail -3
            mla_ab 240 18 mla-convert-under-qk --nhead 64,128 --batch 64,128 --kv-dtype fp8 --ctx-dist uniform,skewed \
                --backends triton,triton_gluon_convert_under_qk,triton_fp8q,triton_fp8q_convert_under_qk ;;
        ncu-split-k-32)  # where the split tile loses at 32 heads: its consumers' source counters beside the whole tile's
            for backend in triton_gluon_split_k triton_gluon_whole_k; do
                ncu_source "$OUT/ncu-nhead32-batch64-fp8-$backend" _kernel --nhead 32 --batch 64 --kv-dtype fp8 \
                    --persist --plugin scripts/mla_variants_plugin.py --backends "$backend"
                head -12 "$OUT/ncu-nhead32-batch64-fp8-$backend.md"
            done ;;
        moe16-modes)  # DeepSeek-R1 TP 8 x 16 tokens: kernel_us samples near 148 or 168 us, graph_us steady at 158;
            # are the first samples of a row the slow ones? 12 samples (as the converged rows took) thrice, 400, and
            # make bench's way (graph then kernel, the stopping rule); every sample in order in each run's samples.csv
            for run in 12a 12b 12c 400 rule; do
                iters=(--iters "${run%[abc]}")
                times=(--times kernel)
                [ "$run" = rule ] && iters=() && times=()
                step 120 $PY -m rocbench moe --model deepseek-r1 --tp 8 --tokens 16 --layout interleave,separated \
                    "${times[@]}" "${iters[@]}" --skip-batch-probes --save-samples --out "$OUT/ab-moe16-modes-$run" \
                    | tail -4
            done
            # the guess in README: GEMM2, launched early as GEMM1's programmatic dependent, holding SMs that GEMM1's
            # last programs wait for; 12 samples thrice with the plans' dependent launch off
            force nopdl '{"dependent_launch": false}' --retiled
            for run in a b c; do
                step 120 env "ROCBENCH_TUNED_CONFIGS=$STORES/nopdl.json" $PY -m rocbench moe --model deepseek-r1 --tp 8 \
                    --tokens 16 --layout interleave,separated --times kernel --iters 12 --skip-batch-probes \
                    --save-samples --out "$OUT/ab-moe16-modes-nopdl-$run" | tail -4
            done ;;
        moe16-warm)  # moe16-modes' 12-sample runs again, after timing.warm_up (30 ms of replays before the samples)
            for run in a b c; do
                step 60 $PY -m rocbench moe --model deepseek-r1 --tp 8 --tokens 16 --layout interleave,separated \
                    --times kernel --iters 12 --skip-batch-probes --save-samples --out "$OUT/ab-moe16-warm-$run" | tail -3
            done ;;
        mla-gluon-split-k)
            step 120 $PY -m pytest -q -n 8 -p no:cacheprovider -rfs tests/test_mla_gluon.py -k split_by_k 2>&1 | tail -3
            mla_ab 200 6 mla-gluon-split-k --nhead 16,32 --batch 64,128 --kv-dtype bf16,fp8 \
                --ctx-dist uniform,skewed --backends triton,triton_gluon_split_k
            mla_ab 120 4 mla-gluon-split-k-fp8q --nhead 16,32 --batch 64,128 --kv-dtype fp8 --ctx-dist uniform \
                --backends triton_fp8q,triton_fp8q_split_k
            # where the split tile's consumers wait (as ncu-mla-gluon-source did for the tile without it)
            ncu_source "$OUT/ncu-split-k-nhead16-batch64-fp8" _kernel --nhead 16 --batch 64 --kv-dtype fp8 --persist \
                --plugin scripts/mla_variants_plugin.py --backends triton_gluon_split_k
            head -30 "$OUT/ncu-split-k-nhead16-batch64-fp8.md" ;;
        mla-even-pieces)
            mla_ab 300 30 mla-even-pieces --nhead 16,32,64,128 --batch "${EVEN_PIECES_BATCH:-32,64,128}" \
                --kv-dtype bf16,fp8 --ctx-dist uniform,skewed --backends triton,triton_no_even_pieces ;;
        ncu-mla-gluon-source)
            mkdir -p "$OUT/ncu-mla-gluon-source"
            IFS=, read -ra ncu_rows <<< "${NCU_ROWS:-16 fp8,64 fp8,32 bf16}"
            for row in "${ncu_rows[@]}"; do
                read -r nhead kv <<< "$row"
                rep="$OUT/ncu-mla-gluon-source/nhead$nhead-batch64-$kv"
                ncu_source "$rep" _kernel --nhead "$nhead" --batch 64 --kv-dtype "$kv" --persist --backends triton
                wc -l "$rep.csv"
            done
            (cd "$OUT" && tar czf ncu-mla-gluon-source.tgz ncu-mla-gluon-source && rm -rf ncu-mla-gluon-source) ;;
        ncu-mla-batch1-source)
            mkdir -p "$OUT/ncu-mla-batch1-source"
            for row in "16 bf16" "64 bf16" "16 fp8"; do
                read -r nhead kv <<< "$row"
                rep="$OUT/ncu-mla-batch1-source/nhead$nhead-batch1-$kv"
                ncu_source "$rep" _split_kv_kernel --nhead "$nhead" --batch 1 --kv-dtype "$kv" --no-persist \
                    --backends triton
                head -25 "$rep.md"
            done
            (cd "$OUT" && tar czf ncu-mla-batch1-source.tgz ncu-mla-batch1-source && rm -rf ncu-mla-batch1-source) ;;
        mla-gluon-stages)
            step 120 $PY -m pytest -q -p no:cacheprovider -rfs tests/test_mla_gluon.py \
                -k "gluon_stages or one_fp8_part" 2>&1 | tail -3
            mla_ab 200 6 mla-gluon-stages --nhead 16,32,64,128 --batch 64,128 --kv-dtype fp8 \
                --ctx-dist uniform,skewed --backends triton_fp8q,triton_fp8q_stages3,triton_fp8q_stages4 ;;
        mla-gluon-ablate)
            step 200 $PY scripts/mla_gluon_ablate.py --nhead 16,64,128 --batch 64 --kv-dtype fp8
            step 200 $PY scripts/mla_gluon_ablate.py --nhead 16,64,128 --batch 64 --kv-dtype fp8 --one-part
            step 120 $PY scripts/mla_gluon_ablate.py --nhead 32,128 --batch 64 --kv-dtype bf16 ;;
        mla-one-product)
            step 400 $PY -m rocbench mla --nhead 16,32,64,128 --batch 1,64,128 --kv-dtype fp8 \
                --ctx-dist uniform --plugin scripts/mla_variants_plugin.py --backends triton,triton_fp8_two_products \
                --times kernel --skip-batch-probes --out "$OUT/ab-mla-one-product" | tail -30 ;;
        mla-batch1)
            step 300 $PY -m rocbench mla --nhead 16,64 --batch 1 --kv-dtype bf16,fp8 --ctx-dist uniform \
                --plugin scripts/mla_variants_plugin.py --backends triton,triton_splits128_chunk128 \
                --times kernel --skip-batch-probes --out "$OUT/ab-mla-batch1" | tail -30 ;;
        # -vv (less the Makefile's -q: -v): each test's name and outcome as it ends, so a cut call still names failures
        test) PYTEST_ADDOPTS=-vv step 580 make test > "$OUT/test.log" 2>&1
              grep -E "[0-9]+ passed|FAILED|XPASS|ERROR " "$OUT/test.log" | tail -15 ;;
        *) echo "unknown part: $part" >&2; finish 2 ;;
    esac
done
finish 0
