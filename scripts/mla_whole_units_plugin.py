"""A backend plugin for the A/B run of the persistent schedule's whole units (scripts/device_moe.sh mla-whole-units):
`triton_whole_units` is `triton` with MlaKernelConfig.whole_units, so the schedule deals (sequence, head group) units
whole where cutting them saves less than their partials cost (rocbench.formats.mla_schedule, partial_cost).

Why: ncu on the H200 (2026-12-05, results/examples/ncu-mla-h200/2026-12-05): at nhead 128, batch 64 x 4096 tokens the
quota deal cuts all 128 units over 132 programs to load 63 granules instead of 64, and pays 256 fp32 partials (33.5 MB
each way) and a 23.5 us reduce, 7% of the call. Predicted: -5..-8% there and at nhead 64 / 128 x batch 128 (whole units
too), no change at 16-32 heads or on skewed batches (the deal stays cut).

    rocbench mla --plugin scripts/mla_whole_units_plugin.py --backends triton,triton_whole_units --persist"""
import dataclasses

from rocbench.plugin import backends
from rocbench.suites.mla.backends import TritonMla


@backends("mla").register
class TritonWholeUnits(TritonMla):
    name = "triton_whole_units"
    description = "triton, its persistent schedule dealing units whole where partials cost more (an A/B plugin)"

    def config(self, case, ctx):
        config, source = super().config(case, ctx)
        return dataclasses.replace(config, whole_units=True), f"{source}, whole units"
