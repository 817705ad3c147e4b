"""Backend plugins for A/B runs of MLA config knobs (scripts/device_moe.sh mla-whole-units, mla-one-product): each is
`triton` with one MlaKernelConfig field changed, gated as `triton` is.

- `triton_quota_cuts`: whole_units off, the persistent schedule before whole units (every (sequence, head group) unit
  cut to the programs' quotas). ncu (H200, 2026-12-05): at nhead 128, batch 64 x 4096 the quota deal cut all 128 units
  over 132 programs and paid 256 fp32 partials and a 23.5 us reduce; whole units (built in since): H100 328.2 ->
  302.6 us there (bf16), 444.4 -> 418.5 (fp8); H200 sweep 311.7 -> 286.3, 448.2 -> 422.6.
- `triton_fp8_one_product`: fp8_qk_one_product on, q's two fp8 parts' Q@K^T as one product (the low part's accumulated
  onto the high part's, rescaled per row). Offline sm_90 SASS (Triton 3.6, persistent fp8, 64-row tile, nhead 64 and
  128): 1215 -> 1010 instructions per warp and 64-token block (152 warpgroup syncs -> 0), stack 256 -> 176 bytes; the
  32-row tokens-on-M tile unchanged (1275 -> 1272). `triton_fp8q` (one part: 840 instructions) took 243 / 448 us to
  163 / 293 there; predicted -12..-20% at nhead 64 / 128 (fp8, batch 64 / 128), nothing at 16-32 heads.

    rocbench mla --plugin scripts/mla_variants_plugin.py --backends triton,triton_quota_cuts,triton_fp8_one_product"""
import dataclasses

from rocbench.plugin import backends
from rocbench.suites.mla.backends import TritonMla


def _variant(name: str, description: str, field: str, value: bool) -> type:
    def config(self, case, ctx):
        config, source = TritonMla.config(self, case, ctx)
        return dataclasses.replace(config, **{field: value}), f"{source}, {field}={value}"

    return backends("mla").register(type(name, (TritonMla,), {"name": name, "description": description,
                                                              "config": config}))


_variant("triton_quota_cuts", "triton, its persistent schedule cutting every unit to the quotas (before whole units)",
         "whole_units", False)
_variant("triton_fp8_one_product", "triton, q's two fp8 parts' Q@K^T as one product (an A/B plugin)",
         "fp8_qk_one_product", True)
