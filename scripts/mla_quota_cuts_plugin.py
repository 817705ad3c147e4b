"""A backend plugin for the A/B run of the persistent schedule's whole units (scripts/device_moe.sh mla-whole-units):
`triton_quota_cuts` is `triton` with MlaKernelConfig.whole_units off, i.e. the schedule before whole units: every
(sequence, head group) unit cut to the programs' quotas, whatever its partials cost.

Why: ncu on the H200 (2026-12-05, results/examples/ncu-mla-h200/2026-12-05): at nhead 128, batch 64 x 4096 tokens the
quota deal cut all 128 units over 132 programs to load 63 granules instead of 64, and paid 256 fp32 partials (33.5 MB
each way) and a 23.5 us reduce, 7% of the call. Whole units (built in since; H100, 2026-12-05): 328.2 -> 302.6 us
there (bf16), 444.4 -> 418.5 (fp8); the skewed batches and nhead 16 keep the same schedule.

    rocbench mla --plugin scripts/mla_quota_cuts_plugin.py --backends triton,triton_quota_cuts --persist"""
import dataclasses

from rocbench.plugin import backends
from rocbench.suites.mla.backends import TritonMla


@backends("mla").register
class TritonQuotaCuts(TritonMla):
    name = "triton_quota_cuts"
    description = "triton, its persistent schedule cutting every unit to the quotas (the deal before whole units)"

    def config(self, case, ctx):
        config, source = super().config(case, ctx)
        return dataclasses.replace(config, whole_units=False), f"{source}, quota cuts"
