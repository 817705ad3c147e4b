"""Where the Gluon MLA tile's time goes: the persistent decode timed with parts of its work taken out (device only).

Each variant runs in a process of its own (the Gluon functions are swapped in rocbench.kernels.mla_gluon before the
first compile) and prints one line: its kernel_us as rocbench takes it (rocbench.core.harness.kernel_time: caches
flushed before each call, the union of the call's kernels, the median), so that the full variant reads as the sweeps'
rows. The outputs of the ablated variants are wrong by construction and not checked; the full variant is the
product's kernel. Variants:

    full          the tile as configured (the built-in gluon_ws_config, or with q in one fp8 part: --one-part)
    no_v_convert  fp8: each consumer releases the stage without converting its V boxes to fp16, after the Q@K^T wait
                  or under its MMAs alike (P @ V reads the fp16 buffer as it is): what the conversion costs on the
                  consumers' path
    stream_only   the consumers only wait for each KV block and q and release them: the producer's TMA stream alone,
                  the floor of this pipeline's memory side

    python scripts/mla_gluon_ablate.py --nhead 16,64,128 --batch 64 --kv-dtype fp8 [--one-part] [--stages N]
"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("full", "no_v_convert", "stream_only")


def _swap(variant: str) -> None:
    """Replace the Gluon functions the variant takes out (before anything compiles): rocbench.kernels.mla_gluon looks
    its callees up by name when it compiles."""
    import mla_gluon_ablated as ablated  # the stand-ins, beside this script (they import Triton's Gluon)
    from rocbench.kernels import mla_gluon

    if variant == "no_v_convert":
        mla_gluon._v_to_f16 = ablated._no_conversion
    elif variant == "stream_only":
        mla_gluon._consumer_of = ablated._wait_and_release
    elif variant != "full":
        raise SystemExit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")


def _time_one(variant: str, kv_name: str, nhead: int, batch: int, ctx: int, one_part: bool, stages: int,
              max_time_s: float) -> float:
    """kernel_us of the persistent decode through the Gluon tile, the variant swapped in."""
    import torch

    from rocbench.core import platform
    from rocbench.core.harness import kernel_time
    from rocbench.core.stats import StoppingRule

    _swap(variant)
    from rocbench.formats.paged_kv import build_paged_kv, make_query
    from rocbench.kernels import mla_config, mla_decode

    kv_dtype = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}[kv_name]
    config = mla_config.gluon_ws_config(kv_dtype, nhead, 1)
    if config is None:
        raise SystemExit(f"no Gluon tile at nhead {nhead}")
    config = dataclasses.replace(config, gluon_stages=stages)
    if one_part:
        config = dataclasses.replace(config, fp8_qk=True, fp8_q_one_part=True)
    g = torch.Generator(device="cuda").manual_seed(0)  # drawn on the GPU: 150-300 MB of KV
    lens = [ctx] * batch
    kv = build_paged_kv(lens, 64, kv_dtype, g, "cuda")
    q = make_query(batch, nhead, torch.bfloat16, g, "cuda")
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    schedule = mla_decode.build_persistent_schedule(lens, 1, nhead, num_sms, config,
                                                    kv_element_bytes=kv.kv_buffer.element_size()).to("cuda")
    out = torch.empty((batch, nhead, 512), dtype=torch.bfloat16, device="cuda")

    def call():
        mla_decode.mla_decode_persistent(q, kv, schedule, 192 ** -0.5, 1, out, config=config)

    device = torch.device("cuda")
    flusher = kernel_time.Flusher(device, platform.detect().cache_bytes or 0)  # the harness's cold caches
    measured = kernel_time.kernel_time(call, device, StoppingRule(max_seconds=max_time_s), flusher)
    return measured.stats.median_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nhead", default="16,64,128")
    parser.add_argument("--batch", default="64")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--kv-dtype", default="fp8", choices=("bf16", "fp8"))
    parser.add_argument("--one-part", action="store_true", help="q in one fp8 part (triton_fp8q's numerics)")
    parser.add_argument("--stages", type=int, default=0, help="the KV ring's depth (0: the tile's default)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--max-time", type=float, default=2.0, help="seconds of sampling per variant at most")
    parser.add_argument("--one", nargs=4, metavar=("VARIANT", "NHEAD", "BATCH", "KV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        variant, nhead, batch, kv_name = args.one
        us = _time_one(variant, kv_name, int(nhead), int(batch), args.ctx, args.one_part, args.stages, args.max_time)
        print(f"{us:.1f}")
        return
    variants = args.variants.split(",")
    if args.kv_dtype == "bf16" and "no_v_convert" in variants:
        variants.remove("no_v_convert")  # bf16 converts nothing
    print(f"kv {args.kv_dtype}{', q in one fp8 part' if args.one_part else ''}, ctx {args.ctx}, "
          f"stages {args.stages or 'default'}: kernel_us per call")
    print("nhead batch " + " ".join(f"{v:>13}" for v in variants))
    for nhead in (int(n) for n in args.nhead.split(",")):
        for batch in (int(b) for b in args.batch.split(",")):
            cells = []
            for variant in variants:
                cmd = [sys.executable, __file__, "--one", variant, str(nhead), str(batch), args.kv_dtype,
                       "--ctx", str(args.ctx), "--stages", str(args.stages), "--max-time", str(args.max_time)]
                if args.one_part:
                    cmd.append("--one-part")
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
                lines = done.stdout.strip().splitlines()
                cells.append(lines[-1] if done.returncode == 0 and lines else f"rc {done.returncode}")
                if done.returncode:
                    print(done.stderr[-1500:], file=sys.stderr)
            print(f"{nhead:<5} {batch:<5} " + " ".join(f"{c:>13}" for c in cells))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
