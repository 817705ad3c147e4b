"""Write a tuned-config store (rocbench.kernels.tuned) that forces MoE config fields for every shape the moe suite's
models take, on this GPU: the heuristic plan of each shape and token count with the given fields changed. Point a
run at it to time a knob against the built-in plan without `--tune` (the row's `tuned` column and path say so);
--retiled changes the plans on weights in fragment order (the `triton` backend's on NVIDIA), --fill-wave then sizes
the decode plans' K splits to one wave (moe_plan.filling_one_wave):

    python scripts/moe_config_store.py /tmp/upper.json '{"upper_bytes": true}'
    ROCBENCH_TUNED_CONFIGS=/tmp/upper.json rocbench moe --model gpt-oss-120b --tp 1,8 --pad --tokens 1,16,64

Shapes: gpt-oss-120b at TP 1/2/4/8 padded and DeepSeek-R1 at TP 8 (the sweeps'), tokens 1..8192."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
MODELS = (("gpt-oss-120b", (1, 2, 4, 8), True), ("deepseek-r1", (8,), False))


def store(overrides: dict, device_name: str, num_sms: int, retiled: bool = False, fill_wave: str = "") -> dict:
    from rocbench.kernels.moe_plan import MoeConfig, check_config, filling_one_wave, heuristic_plan, tune_key
    from rocbench.suites.moe.reference import model_shape

    unknown = set(overrides) - {field.name for field in dataclasses.fields(MoeConfig)}
    if unknown:
        raise SystemExit(f"moe_config_store: not MoeConfig fields: {sorted(unknown)}")
    entries = {}
    for model, tps, padded in MODELS:
        for tp in tps:
            shape = model_shape(model, tp, padded)
            experts, topk, hidden, inter = shape["experts"], shape["topk"], shape["hidden"], shape["inter"]
            for tokens in TOKENS:
                plan = heuristic_plan(tokens, topk, experts, inter, hidden, num_sms, True, retiled)
                config = dataclasses.replace(plan, **overrides)
                if fill_wave:
                    config = filling_one_wave(config, tokens, topk, experts, inter, hidden, num_sms,
                                              gemm2=fill_wave == "both")
                try:
                    check_config(config, inter, hidden)
                except ValueError:
                    continue  # this shape cannot take it: the built-in plan runs there
                entries[tune_key(tokens, topk, experts, inter, hidden)] = {
                    "config": dataclasses.asdict(config), "evidence": {"forced": overrides}}
    return {device_name: {"moe_a16w4": entries}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the store to write (ROCBENCH_TUNED_CONFIGS)")
    parser.add_argument("overrides", help="MoeConfig fields to force, as JSON")
    parser.add_argument("--retiled", action="store_true",
                        help="change the plans of the backend that re-tiles (triton on NVIDIA: weights in fragment "
                             "order), not those on the layout's bytes")
    parser.add_argument("--fill-wave", choices=("gemm1", "both"), default="",
                        help="then at decode raise or lower the K split of GEMM1 (or both GEMMs) to fill one wave "
                             "(moe_plan.filling_one_wave)")
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("moe_config_store: tuned configs are kept per GPU, and there is none here")
    properties = torch.cuda.get_device_properties(0)
    data = store(json.loads(options.overrides), torch.cuda.get_device_name(0), properties.multi_processor_count,
                 options.retiled, options.fill_wave)
    options.out.write_text(json.dumps(data, indent=1) + "\n")
    fill = f", K splits filling one wave ({options.fill_wave})" if options.fill_wave else ""
    print(f"{options.out}: {len(next(iter(data.values()))['moe_a16w4'])} shapes forced to {options.overrides}{fill}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
