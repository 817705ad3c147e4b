"""Backend plugins for A/B runs of MLA config knobs (scripts/device_moe.sh mla-whole-units, mla-one-product,
mla-batch1, mla-gluon-ws), gated as `triton` is. The first three are the Triton tile's built-in config (`triton_tile`,
below: what `triton` runs off Hopper and below mla_config.GLUON_MIN_KV_TOKENS) with MlaKernelConfig fields changed.

- `triton_quota_cuts`: whole_units off, the persistent schedule before whole units (every (sequence, head group) unit
  cut to the programs' quotas). ncu (H200, 2026-12-05): at nhead 128, batch 64 x 4096 the quota deal cut all 128 units
  over 132 programs and paid 256 fp32 partials and a 23.5 us reduce; whole units (built in since): H100 328.2 ->
  302.6 us there (bf16), 444.4 -> 418.5 (fp8); H200 sweep 311.7 -> 286.3, 448.2 -> 422.6.
- `triton_fp8_two_products`: fp8_qk_one_product off, q's two fp8 parts' Q@K^T as two products (the 64-row fp8 tile
  before one product was built in). H100 (2026-12-05, one product as the plugin then, 48 gated rows): one product
  took nhead 64 / 128 at batch 64 / 128 -17..-24% (persistent nhead 128 batch 64 422.2 -> 326.4 us), the rest within
  +-4% (other tiles).
- `triton_splits128_chunk128` (split-KV at batch 1-4): up to 128 splits of 32-token blocks, where the built-in stops
  at 64 of 64 (ncu, H200, batch 1 x 4096, nhead 16: 64 programs on 132 SMs, DRAM 5-11%, the reduce a third of the
  call), its reduce merging all 128 partials of a row in one load (reduce_chunk 128). Offline sm_90 (Triton 3.6, bf16,
  nhead 16 batch 1): the split-KV kernel 2328 -> 1760 instructions per warp, no local memory. Predicted nhead 16
  -10..-20%; H100 (2026-12-06, kernel us, ctx 4096, split-KV): nhead 16 bf16 10.27 -> 9.57 (-7%), fp8 10.66 -> 11.31
  (+6%), nhead 64 bf16 14.11 -> 16.56, fp8 16.03 -> 24.72: a `--tune` candidate (`splits128,block32,chunk128`).
  `--tune` on an H100 (2026-12-06) again 0.95x at nhead 16 bf16, so built in there (mla_config.BATCH1_SPLITS128),
  where `triton_tile_splits64` is the split-KV before it (as built in against it, H100, `mla-batch1-reduce-ab-h100`:
  9.51 against 10.34 us, 0.92x). The same splits with the 64-partial reduce (10.53 / 13.75
  / 17.82 / 26.18 us) lost and are gone, as is 8 warps at one program per SM (bf16 nhead 16: split-KV -4%,
  persistent +4%; fp8 and nhead 64 within 0.5%), which `--tune`'s `plain` candidate covers for bf16.
- `triton_gluon_ws` (persistent, nhead 16 / 32 / 64+, Hopper, bf16 or e4m3fn KV): the same schedule and reduce with the
  attention kernel written in Gluon and warp-specialized (rocbench/kernels/mla_gluon.py, MlaKernelConfig.gluon_ws): a
  1-warp TMA producer, two 4-warp consumers each owning half the output channels and syncing by mbarriers (with the
  producer; at 64-row tiles, with S split since, with each other too), where the product's 8-warp tile stalls most
  at its per-stage CTA barrier (ncu, H200, 2026-12-06).
  H100 (2026-12-06, bf16, ctx 4096, kernel us, 24/24 gated rows passed; results/examples/mla-gluon-ws-ab-h100): batch
  64 at nhead 16 / 32 / 64 / 128 113.5 -> 112.5, 127.6 -> 119.0, 183.5 -> 136.4, 305.4 -> 173.9 (89 / 84 / 73 / 61%
  of the roofline; the product's tile 88 / 78 / 54 / 35%), batch 128 1.09-1.78x, batch 1 0.86-1.01x (the product runs
  batch 1 with split-KV). fp8: wrong on its first GPU runs (the q split's residual, a Triton 3.6 sm_90 miscompile of
  the fp8 tile converted back); the split rewritten without that conversion. H100 (2026-12-06, 96 gated rows, bf16
  and fp8, uniform and skewed): all passed; batch 64 / 128 1.02-1.79x the Triton tile (fp8 1.03-1.31x), batch 1
  0.53-1.01x.
  Built in since from mla_config.GLUON_MIN_KV_TOKENS where the GPU can run it, so `triton` takes it there; this backend
  takes it at every batch.
- `triton_tile`: `triton` with the Triton tile's built-in config everywhere (mla_config.builtin_config), the
  baseline of the Gluon tile's A/B rows now that `triton` takes the Gluon tile on Hopper.
- `triton_gluon_plain`: the Gluon tile without the knobs built in since (H100, 2026-12-06, ctx 4096, persistent,
  80 gated rows, device_moe.sh mla-gluon-knobs, then 96): fp8's q parts in one Q@K^T chain (gluon_one_chain; nhead
  32-128 1.06-1.13x), S split between the 64-row consumers (gluon_split_s; bf16 nhead 128 1.08-1.10x, fp8 up to
  1.09x) and fp8's 240 registers (below). The first run also measured overlap (block i + 1's Q@K^T before block i's
  softmax: 0.64-0.95x at 64-128 heads, gone) and a launch at 224 registers (384 threads do not fit 64K registers, so
  the rows ran the Triton tile; gone).
- `triton_gluon_regs240`: the Gluon tile with each consumer at 240 registers and the producer's group at 24
  (mla_config.gluon_regs; 232 and 40 were built in). Offline sm_90: spills 4 -> 0 (bf16), 101 -> 92 (fp8). H100
  (2026-12-06, 96 gated rows): fp8 nhead 32 1.05x, 64-128 0.99-1.03x, 16 0.98x, bf16 within 1-2%: built in since for
  fp8 from 32 heads, where this backend repeats the built-in.
- `triton_gluon_remat_q`: the built-in Gluon tile with q's wgmma shared-memory descriptors computed at each KV block
  (mla_config.gluon_remat_q): hoisted out of the loop, the fp8 64-row tile keeps 24 64-bit descriptors and spills
  them. Offline sm_90 (Triton 3.6): fp8 64-row with S split 92 -> 1 spilled registers, its block loop 812 -> 862
  instructions per warp but no local loads; fp8 32-row 120 -> 0 bytes of stack (loop 833 -> 915). Predicted: fp8 at
  64-128 heads a few percent faster, 32-row tiles within +-3%. H100 (2026-12-06, 64 gated rows, kernel us, ctx 4096):
  fp8 nhead 64-128 1.25-1.32x (nhead 64 batch 64 163.1 -> 127.1), nhead 32 1.03-1.10x, nhead 16 0.99-1.00x; bf16
  0.98-1.03x. Built in since for fp8 from 32 heads; `triton_gluon_hoisted_q` is the tile before.
- `triton_fp8q_stages3`, `triton_fp8q_stages4`: `triton_fp8q` (q in one fp8 part) with the Gluon tile's KV ring one
  stage deeper than its default (mla_config.gluon_stages): the low part's 37 KB of shared memory (64 rows) hold a
  third stage, and at 16 heads a fourth fits (offline sm_90: 222 / 227 KB of 227). Elsewhere the config does not fit
  and the row falls back to the Triton tile, saying so. Predicted: 0-10% at batch 64-128 where DRAM is at 25-56% of
  its peak (ncu, `mla-gluon-remat-fp8q-h100`). H100 (2026-12-06, 48 gated rows): refuted, 3 stages at 64 rows within
  1% of 2, 4 at 16 heads 0-5% slower than 3 (`mla-gluon-ablate-h100`).
- `triton_no_even_pieces`: `triton` without MlaKernelConfig.even_pieces (the built-in before 2026-12-07): the
  persistent schedule prices two deals, whole units and quota cuts, not also each (sequence, head group) unit in equal
  pieces of at most the quota. At batch 64 x 4096 uniform the quota deal gives 60 of 132 programs two items (two
  partials, q loaded twice) for the same longest load of 32 granules as 128 halves. Predicted -3..-9% for the even
  pieces at 32-64 heads there, skewed batches at 32-128 heads -1..-5%, nhead 16 and batch 128 unchanged. H100
  (2026-12-07, 64 gated rows, device_moe.sh mla-even-pieces): bf16 batch 64 uniform nhead 32 116.7 -> 110.2 us, 64
  127.8 -> 116.3, skewed -6 / -8%, batch 128 skewed nhead 128 -7..-8%, the rest within +-1%: built in.
- `triton_reduce16`: `triton` with its reduce loading 16 partials at once (MlaKernelConfig.reduce_chunk) at batch 64+,
  as built in before the chunk shrank to the most partials the schedule's merges take (mla_decode.reduce_shape's
  most_partials: 4 at batch 64 x 4096 uniform). ncu (H200, 2026-12-05): that reduce 6.7 / 9.8 / 14.8 us at nhead 16 /
  32 / 64 at 32-58% of issue slots; offline sm_90 552 -> 224 instructions per program. Predicted: the reduce about
  halved, the call -2..-6% at nhead 16-64 batch 64 (bf16 nhead 32 from 82% of the roofline to about 85). H100
  (2026-12-06, 48 gated rows, device_moe.sh mla-reduce-chunk): batch 64 uniform 1.01-1.05x faster built in (nhead 64
  fp8 120.1 -> 114.9 us, bf16 132.5 -> 127.6; bf16 nhead 32 119.2 -> 117.1), skewed 1.00-1.03x, batch 128 within
  +-0.7% (noise 0.4-0.5%): confirmed, smaller than predicted.
- `triton_tile_reduce_by_rows`: `triton_tile` with its reduce's shape as mla_decode.reduce_shape picks it by rows to
  merge. At batch 1 and 128 heads the built-in now merges 64 partials per load over 128 channels, where this loads 32
  (`--tune`, H100, 2026-12-06: split-KV bf16 0.90x, fp8 0.92x, persistent bf16 0.95x the call's time). Predicted: the
  built-in's kernel_us 5-10% under this one's at batch 1 nhead 128. H100 (2026-12-06, 16 gated rows,
  `mla-batch1-reduce-ab-h100`): 0.90x / 0.92x split-KV bf16 / fp8, 0.93x / 0.94x persistent; confirmed. At nhead 64 the
  built-in merges 64 per load over 64 channels (as before the change) and this pick by rows is 8-10% slower.
- `triton_tile_warps8`, `triton_tile_warps16`: `triton_tile` on 8 or 16 warps, one program per SM. At batch 1 and 16
  heads, bf16, the built-in runs 4 warps (two programs per SM), and each of its 128 split-KV programs is one chain of
  latencies (ncu, `ncu-mla-batch1-source-h100`: 35% of the warp samples in the MMAs, softmax and shared-memory reads
  of one 32-token block). Offline sm_90 (Triton 3.6): 1760 -> 1184 / 912 instructions per warp, 127 -> 94 / 64
  registers, no local memory; nhead 32 (8 warps built in) 1496 -> 1040 on 16. Predicted: split-KV nhead 16 bf16
  -6..-9% (8 warps), -8..-12% (16); persistent -3..-6%; nhead 32 on 16 warps within +-5%. fp8 at 16 heads runs 8
  warps at 255 registers already; on 16 it is capped at 128 and spills 248 bytes, so it is not timed.
  H200 (2026-12-06, three runs, kernel us, ctx 4096, 36 gated rows; `mla-batch1-warps-ab-h200`): refuted for split-KV,
  nhead 16 bf16 8.99-9.04 -> 9.15 (8 warps) / 10.43-10.48 (16), persistent 10.59-10.62 -> 11.01-11.04 / 12.19-12.26;
  nhead 32 split-KV 10.34-10.37 -> 10.30-10.34 / 11.42-11.44. Unpredicted: nhead 32 persistent 13.60-13.79 ->
  11.70-11.78 on 8 warps, which differs from the built-in there only in one program per SM; a fourth run over
  16-128 heads x bf16 / fp8 found it at 32 heads bf16 only (-14%; elsewhere -1..+4%): built in there
  (mla_config.BATCH1_PERSISTENT_ONE_PER_SM), a `--tune` candidate ("1/sm") at batch 1-4 elsewhere.
- `triton_gluon_split_k`, `triton_fp8q_split_k`: `triton_gluon_ws` / `triton_fp8q` with the 16-32 row Gluon tile's
  S^T split by K between its consumers (MlaKernelConfig.gluon_split_k; fp8 at 32 rows then a 2-stage ring).
  Predicted: fp8 nhead 16 / 32 batch 64 -5..-12%, bf16 within +-3%. H100 (2026-12-06, 40 gated rows,
  `mla-gluon-split-k-ab-h100`): fp8 nhead 16 0.88-0.91x, nhead 32 1.05-1.08x slower, bf16 0.99-1.00x; built in for
  fp8 at 16 heads. `triton_gluon_whole_k`: the Gluon tile with S^T whole in each consumer (built in before e395432).
- `triton_gluon_split_k_swizzled`: `triton_gluon_split_k` with the partial S^T's rows swizzled in shared memory
  (MlaKernelConfig.gluon_swizzled_parts: the accumulator's 64-bit accesses meet 2-way bank conflicts at 16 rows and
  4-way at 32 unswizzled). Predicted: fp8 split at 32 heads -4..-8% (to within +-3% of S^T whole), at 16 -1..-3%.
  H100 (2026-12-06, 32 gated rows, `mla-gluon-swizzled-parts-ab-h100`): fp8 32 heads 0.86-0.88x the plain split
  (`triton_gluon_split_k`, which sets plain rows since fp8's config swizzles them), 16 heads 1.00x; built in for fp8.
- `triton_gluon_convert_under_qk`, `triton_fp8q_convert_under_qk`: the 64-row fp8 tile (S split) converting V to fp16
  while its Q@K^T MMAs run rather than after their wait (MlaKernelConfig.gluon_convert_under_qk; the same bits).
  Offline sm_90: the conversion's F2FP and STS.128 between the last QGMMA and the wait; spills 1 -> 3 stored words.
  Predicted: fp8 nhead 128 -8..-14%, nhead 64 -5..-10%, triton_fp8q alike. H100 (2026-12-06, 32 gated rows,
  `mla-convert-under-qk-ab-h100`): 1.3-3.2% slower in every row, both q forms: refuted, off.
- `triton_gluon_stages2`: the Gluon tile with a 2-stage KV ring, to time fp8 at 32 heads with S^T whole on the split
  tile's 2 stages: whether the split's loss there is its ring's lost stage (shared memory for the partial S^T). H100
  (2026-12-06, 6 gated rows): no, whole on 2 stages 104.1 / 182.8 us at batch 64 / 128 against 103.8 / 184.1 on 3,
  split 109.4 / 197.7.

    rocbench mla --plugin scripts/mla_variants_plugin.py --backends triton,triton_quota_cuts,triton_fp8_two_products
    rocbench mla --persist --plugin scripts/mla_variants_plugin.py --backends triton_tile,triton_gluon_ws"""
import dataclasses

from rocbench.kernels import mla_config as kc
from rocbench.plugin import backends
from rocbench.suites.mla.backends import TritonMla, TritonMlaFp8Query, gluon_unsupported_reason


@backends("mla").register
class TritonTile(TritonMla):
    """`triton` with the Triton tile's built-in config at every batch and on every GPU (no Gluon tile)."""

    name = "triton_tile"
    description = "triton with the Triton tile's built-in config everywhere (no Gluon tile; an A/B plugin)"

    def config(self, case, ctx):
        return kc.builtin_config(case["kv_dtype"], case["nhead"], case["qlen"], case["batch"],
                                 persistent=case["persist"]), "the Triton tile's built-in config"


def _variant(name: str, description: str, base: type, **fields) -> type:
    """`base` (a backend here) with MlaKernelConfig fields changed; the row's path names them."""
    def config(self, case, ctx):
        config, source = base.config(self, case, ctx)
        changed = ", ".join(f"{field}={value}" for field, value in fields.items())
        return dataclasses.replace(config, **fields), f"{source}, {changed}"

    return backends("mla").register(type(name, (base,), {"name": name, "description": description,
                                                         "config": config}))


_variant("triton_quota_cuts", "triton, its persistent schedule cutting every unit to the quotas (before whole units)",
         TritonTile, whole_units=False)
_variant("triton_fp8_two_products", "triton, q's two fp8 parts' Q@K^T as two products (an A/B plugin)", TritonTile,
         fp8_qk_one_product=False)
_variant("triton_splits128_chunk128", "triton, split-KV in up to 128 splits of 32-token blocks, its reduce loading "
         "128 partials at once (an A/B plugin)", TritonTile, **kc.BATCH1_SPLITS128)


@backends("mla").register
class TritonGluonWs(TritonMla):
    """`triton` with MlaKernelConfig.gluon_ws and its head tile (mla_config.gluon_ws_config) where the Gluon tile can
    run; unsupported elsewhere, so that no row repeats `triton`'s."""

    name = "triton_gluon_ws"
    description = "triton's persistent schedule and reduce, its tile in warp-specialized Gluon (gluon_ws; A/B plugin)"
    platforms = ("cuda",)

    def unsupported_reason(self, case, platform):
        return gluon_unsupported_reason(case, platform)

    def config(self, case, ctx):
        return kc.gluon_ws_config(case["kv_dtype"], case["nhead"], case["qlen"]), "gluon_ws"


_variant("triton_gluon_plain", "the Gluon tile with two fp8 Q@K^T chains and S whole in each consumer (the Gluon tile "
         "before 2026-12-06; A/B plugin)", TritonGluonWs, gluon_one_chain=False, gluon_split_s=False, gluon_regs=232)
_variant("triton_gluon_regs240", "the Gluon tile, 240 registers per consumer thread (A/B plugin)", TritonGluonWs,
         gluon_regs=240)
_variant("triton_gluon_remat_q", "the Gluon tile, q's wgmma descriptors computed at each KV block, not hoisted and "
         "spilled (A/B plugin)", TritonGluonWs, gluon_remat_q=True)
_variant("triton_fp8q_stages3", "triton_fp8q with the Gluon tile's KV ring 3 deep (the 64-row tile's default is 2; "
         "A/B plugin)", TritonMlaFp8Query, gluon_stages=3)
_variant("triton_fp8q_stages4", "triton_fp8q with the Gluon tile's KV ring 4 deep (fits the 16-head tile only; "
         "A/B plugin)", TritonMlaFp8Query, gluon_stages=4)
_variant("triton_gluon_hoisted_q", "the Gluon tile, q's wgmma descriptors hoisted out of the KV loop (built in before "
         "2026-12-06 for fp8; A/B plugin)", TritonGluonWs, gluon_remat_q=False)
_variant("triton_gluon_split_k", "the Gluon tile, S^T's Q@K^T split by K between the 16-32 row consumers, their "
         "partial S^T in plain rows (A/B plugin)", TritonGluonWs, gluon_split_k=True, gluon_swizzled_parts=False)
_variant("triton_fp8q_split_k", "triton_fp8q, S^T's Q@K^T split by K between the 16-32 row Gluon consumers (A/B "
         "plugin)", TritonMlaFp8Query, gluon_split_k=True)
_variant("triton_gluon_split_k_swizzled", "the Gluon tile, S^T split by K between the 16-32 row consumers, their "
         "partial S^T in swizzled rows (A/B plugin)", TritonGluonWs, gluon_split_k=True, gluon_swizzled_parts=True)
_variant("triton_gluon_whole_k", "the Gluon tile, S^T whole in each 16-32 row consumer (A/B plugin)", TritonGluonWs,
         gluon_split_k=False)
_variant("triton_gluon_stages2", "the Gluon tile, its KV ring 2 deep (A/B plugin)", TritonGluonWs, gluon_stages=2)
_variant("triton_gluon_convert_under_qk", "the Gluon tile, fp8 V converted while the 64-row consumers' Q@K^T MMAs run "
         "(A/B plugin)", TritonGluonWs, gluon_convert_under_qk=True)
_variant("triton_fp8q_convert_under_qk", "triton_fp8q, fp8 V converted while the 64-row Gluon consumers' Q@K^T MMAs "
         "run (A/B plugin)", TritonMlaFp8Query, gluon_convert_under_qk=True)
_variant("triton_no_even_pieces", "triton, its persistent schedule pricing whole units and quota cuts only, not "
         "each unit in equal pieces (the built-in before 2026-12-07; A/B plugin)", TritonMla, even_pieces=False)
_variant("triton_reduce16", "triton, its reduce loading 16 partials at once however few its merges take (the "
         "built-in before 2026-12-06; A/B plugin)", TritonMla, reduce_chunk=16)
_variant("triton_tile_splits64", "triton_tile, split-KV in up to 64 splits of 64-token blocks, its reduce loading 64"
         " partials at once (at batch 1, 16 heads, bf16 the built-in before 2026-12-06; A/B plugin)", TritonTile,
         **kc.SPLITS64)
_variant("triton_tile_warps8", "triton_tile on 8 warps, one program per SM (A/B plugin)", TritonTile, num_warps=8,
         programs_per_sm=1)
_variant("triton_tile_warps16", "triton_tile on 16 warps, one program per SM (A/B plugin)", TritonTile, num_warps=16,
         programs_per_sm=1)
_variant("triton_tile_reduce_by_rows", "triton_tile, its reduce's shape picked by rows to merge "
         "(mla_decode.reduce_shape; at batch 1 and 128 heads the built-in before 2026-12-06; A/B plugin)", TritonTile,
         reduce_cols=0, reduce_chunk=0)
