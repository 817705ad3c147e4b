"""Backend plugins for A/B runs of MLA config knobs (scripts/device_moe.sh mla-whole-units, mla-one-product): each is
`triton` with one MlaKernelConfig field changed, gated as `triton` is.

- `triton_quota_cuts`: whole_units off, the persistent schedule before whole units (every (sequence, head group) unit
  cut to the programs' quotas). ncu (H200, 2026-12-05): at nhead 128, batch 64 x 4096 the quota deal cut all 128 units
  over 132 programs and paid 256 fp32 partials and a 23.5 us reduce; whole units (built in since): H100 328.2 ->
  302.6 us there (bf16), 444.4 -> 418.5 (fp8); H200 sweep 311.7 -> 286.3, 448.2 -> 422.6.
- `triton_fp8_two_products`: fp8_qk_one_product off, q's two fp8 parts' Q@K^T as two products (the 64-row fp8 tile
  before one product was built in). H100 (2026-12-05, one product as the plugin then, 48 gated rows): one product
  took nhead 64 / 128 at batch 64 / 128 -17..-24% (persistent nhead 128 batch 64 422.2 -> 326.4 us), the rest within
  +-4% (other tiles).

    rocbench mla --plugin scripts/mla_variants_plugin.py --backends triton,triton_quota_cuts,triton_fp8_two_products"""
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
_variant("triton_fp8_two_products", "triton, q's two fp8 parts' Q@K^T as two products (an A/B plugin)",
         "fp8_qk_one_product", False)
