"""One-shot device check of the Triton a16w4 MoE kernel (rocbench.kernels.moe_a16w4).

For gpt-oss-120b at TP 1/2/4/8 (real shapes, and the padded shapes SGLang/vLLM use on ROCm)
and deepseek-r1 at TP 8, both AITER layouts, tokens 1/16/64/1024:
  * gate vs the fp32 reference (computed only on the selected experts): max abs err, cosine
  * INTERLEAVE vs SEPARATED bitwise, and determinism (two runs bitwise)
  * time: CUDA graph of R calls with R different routings (so the experts touched rotate and
    L2 cannot serve the weights), CUDA events; weight bytes of the selected experts / time
  * copy bandwidth measured once; % of it reported
Writes $OUT/moe_check.csv (row by row) and prints a table. Time-boxed: optional config sweeps
run only while the deadline allows.

    PYTHONPATH=. python3 scripts/device_moe_check.py [--deadline 250] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import time
import traceback

import torch

if not torch.cuda.is_available():  # must precede the kernel import (read at decoration time)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from rocbench.kernels import moe_a16w4 as K  # noqa: E402
from rocbench.moe import dequantize_mxfp4, shuffle_scale, shuffle_weight  # noqa: E402
from rocbench.suites.moe import layouts as L  # noqa: E402
from rocbench.suites.moe.reference import model_shape, moe_reference, route  # noqa: E402

T0 = time.time()
L2_BYTES = 50 * 2 ** 20
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: interpreter smoke run of this script
ACT_DTYPE = torch.bfloat16 if DEV == "cuda" else torch.float16  # interpreter bf16 dot is wrong
FIELDS = ["model", "tp", "padded", "hidden", "inter", "layout", "tokens", "status", "reason",
          "max_abs_err", "ref_max", "cosine", "layouts_bitwise", "deterministic", "bitwise_vs_plan", "us",
          "weight_MB", "GBps", "pct_copy_bw", "routings", "config"]


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def elapsed():
    return time.time() - T0


class LazyDequant:
    """Mapping expert -> fp32 dequantized weight, built on access (only selected experts)."""

    def __init__(self, q, s):
        self.q, self.s = q, s

    def __getitem__(self, e):
        return dequantize_mxfp4(self.q[e], self.s[e])


def copy_bandwidth(nbytes=1 << 30, iters=20):
    if DEV != "cuda":
        return float("nan")
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    sec = start.elapsed_time(end) / 1e3 / iters
    del src, dst
    return 2 * nbytes / sec / 1e9  # read + write


def per_expert_bytes(inter, hidden):
    return (2 * inter * hidden // 2 + 2 * inter * hidden // 32 + hidden * inter // 2 + hidden * inter // 32)


def make_routings(tokens, experts, topk, count, gen):
    out = []
    for _ in range(count):
        logits = torch.randn(tokens, experts, generator=gen, device=DEV)
        out.append(route(logits, topk, renormalize=True))
    return out


def time_graph(fn_list, min_ms=30.0):
    """Capture all calls in fn_list in one CUDA graph; return seconds per call."""
    if DEV != "cuda":
        t = time.perf_counter()
        for fn in fn_list:
            fn()
        return (time.perf_counter() - t) / len(fn_list)
    for fn in fn_list:  # warm (compiles are already done by the eager runs)
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fn_list:
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    one = max(start.elapsed_time(end), 1e-3)
    reps = max(3, min(2000, int(min_ms / one)))
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / reps
    del graph
    return ms / 1e3 / len(fn_list)


class Writer:
    def __init__(self, path):
        self.path = path
        self.rows = []
        self.f = open(path, "w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=FIELDS)
        self.w.writeheader()
        self.f.flush()

    def add(self, **row):
        row = {k: row.get(k, "") for k in FIELDS}
        self.rows.append(row)
        self.w.writerow(row)
        self.f.flush()
        short = {k: row[k] for k in ("model", "tp", "padded", "layout", "tokens", "status", "max_abs_err",
                                     "cosine", "layouts_bitwise", "deterministic", "us", "GBps", "pct_copy_bw")}
        print(f"[{elapsed():6.1f}s] {short}" + (f" reason={row['reason']}" if row["reason"] else ""), flush=True)


def fmt(v, digits=4):
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return v


def cfg_str(c):
    return (f"bm{c.bm}/bn{c.bn1}x{c.bn2}/nb{c.nb1}x{c.nb2}/split{c.split1}x{c.split2}/"
            f"{'inline' if c.inline else 'table'}/w{c.warps1}x{c.warps2}/st{c.stages1}x{c.stages2}"
            + ("/asm" if c.asm_dequant else "/generic") + ("/fused" if c.fused_combine else ""))


def run_case(shape, weights, biases, tokens, copy_bw, writer, gen, deadline, sweep_configs=()):
    """All layouts for one (shape, tokens). Returns None."""
    e, topk, h, i = shape["experts"], shape["topk"], shape["hidden"], shape["inter"]
    act = shape["activation"]
    base = dict(model=shape["model"], tp=shape["tp"], padded=shape["padded"], hidden=h, inter=i, tokens=tokens)
    supported = [lay for lay in L.LAYOUTS if lay in weights]
    x = torch.randn(tokens, h, generator=gen, device=DEV).to(ACT_DTYPE)
    b13, b2 = biases
    touched = per_expert_bytes(i, h) * min(e, tokens * topk)
    n_rout = 1 if touched >= 4 * L2_BYTES else min(32, math.ceil(4 * L2_BYTES / touched))
    routings = make_routings(tokens, e, topk, n_rout, gen)
    tw, ti = routings[0]
    q13, s13, q2, s2 = weights["logical"]
    ref = moe_reference(x, LazyDequant(q13, s13), LazyDequant(q2, s2), tw, ti, act, b13, b2,
                        intermediate_dtype=ACT_DTYPE)
    ref_max = ref.abs().max().item()
    bytes_per_call = sum(K.weight_bytes_read(r[1], e, i, h) for r in routings) / len(routings)
    sms = torch.cuda.get_device_properties(0).multi_processor_count if DEV == "cuda" else 132
    plan = K.plan_moe(tokens, topk, e, i, h, sms)

    def call(layout, tw_, ti_, out=None, cfg=None):
        return K.moe_a16w4(x, *weights[layout], tw_, ti_, layout=layout, experts=e, inter=i, hidden=h,
                           activation=act, b13=b13, b2=b2, out=out, config=cfg)

    outs, rows = {}, []
    for layout in L.LAYOUTS:
        if layout not in supported:
            rows.append(dict(**base, layout=layout, status="unsupported", reason=weights["reasons"][layout]))
            continue
        try:
            o1 = call(layout, tw, ti)
            o2 = call(layout, tw, ti)
            sync()
            det = torch.equal(o1.view(torch.int16), o2.view(torch.int16))
            err = (o1.float() - ref).abs().max().item()
            cos = torch.nn.functional.cosine_similarity(o1.float().reshape(1, -1), ref.reshape(1, -1)).item()
            ok = err <= 1e-2 * max(ref_max, 1.0) and cos >= 0.9999 and math.isfinite(err)
            outs[layout] = o1
            bufs = [torch.empty_like(x) for _ in routings]
            fns = [lambda r=r, b=b: call(layout, r[0], r[1], out=b) for r, b in zip(routings, bufs)]
            sec = time_graph(fns)
            gbps = bytes_per_call / sec / 1e9
            rows.append(dict(**base, layout=layout, status="ok" if ok and det else "FAIL",
                             max_abs_err=fmt(err), ref_max=fmt(ref_max), cosine=fmt(cos, 7),
                             deterministic=det, us=fmt(sec * 1e6), weight_MB=fmt(bytes_per_call / 1e6),
                             GBps=fmt(gbps), pct_copy_bw=fmt(100 * gbps / copy_bw, 3),
                             routings=len(routings), config=cfg_str(plan)))
        except Exception as exc:  # report and go on
            traceback.print_exc()
            rows.append(dict(**base, layout=layout, status="error", reason=repr(exc)[:300]))
    same = ""
    if len(outs) == 2:
        same = torch.equal(outs[L.INTERLEAVE].view(torch.int16), outs[L.SEPARATED].view(torch.int16))
        if not same:
            for row in rows:
                if row["status"] == "ok":
                    row["status"] = "FAIL"
    for row in rows:
        writer.add(**row, layouts_bitwise=same)

    # optional sweep of alternative configs (first supported layout only), time-boxed
    plan_out = outs.get(supported[0]) if supported else None
    for name, alt in sweep_configs:
        if elapsed() > deadline:
            print(f"    sweep stopped at the deadline ({deadline:.0f}s)", flush=True)
            break
        try:
            cfg = alt(plan)
            K._check_config(cfg, i, h)
        except Exception:
            continue
        layout = supported[0]
        try:
            o = call(layout, tw, ti, cfg=cfg)
            o_again = call(layout, tw, ti, cfg=cfg)
            sync()
            err = (o.float() - ref).abs().max().item()
            cos = torch.nn.functional.cosine_similarity(o.float().reshape(1, -1), ref.reshape(1, -1)).item()
            det = torch.equal(o.view(torch.int16), o_again.view(torch.int16))
            same_as_plan = plan_out is not None and torch.equal(o.view(torch.int16), plan_out.view(torch.int16))
            bufs = [torch.empty_like(x) for _ in routings]
            fns = [lambda r=r, b=b: call(layout, r[0], r[1], out=b, cfg=cfg) for r, b in zip(routings, bufs)]
            sec = time_graph(fns, min_ms=15.0)
            gbps = bytes_per_call / sec / 1e9
            ok = err <= 1e-2 * max(ref_max, 1.0) and cos >= 0.9999 and det
            writer.add(**base, layout=layout, status=f"sweep:{name}" + ("" if ok else ":FAIL"),
                       max_abs_err=fmt(err), ref_max=fmt(ref_max), cosine=fmt(cos, 7), deterministic=det,
                       bitwise_vs_plan=same_as_plan, us=fmt(sec * 1e6),
                       weight_MB=fmt(bytes_per_call / 1e6), GBps=fmt(gbps),
                       pct_copy_bw=fmt(100 * gbps / copy_bw, 3), routings=len(routings), config=cfg_str(cfg))
        except Exception as exc:
            traceback.print_exc(limit=3)
            writer.add(**base, layout=layout, status=f"sweep:{name}:error", reason=repr(exc)[:300],
                       config=cfg_str(cfg))


def build_weights(shape, gen):
    e, h, i = shape["experts"], shape["hidden"], shape["inter"]
    reasons = {lay: K.moe_a16w4_unsupported_reason(lay, e, i, h) for lay in L.LAYOUTS}
    weights = {"reasons": reasons}
    if all(reasons.values()):
        return weights, (None, None)
    dev = DEV
    # random fp4 bytes + scales near 2^-6: valid MXFP4 by construction, outputs O(1)
    q13 = torch.randint(0, 256, (e, 2 * i, h // 2), generator=gen, device=dev, dtype=torch.uint8)
    s13 = torch.randint(118, 123, (e, 2 * i, h // 32), generator=gen, device=dev, dtype=torch.uint8)
    q2 = torch.randint(0, 256, (e, h, i // 2), generator=gen, device=dev, dtype=torch.uint8)
    s2 = torch.randint(119, 124, (e, h, i // 32), generator=gen, device=dev, dtype=torch.uint8)
    weights["logical"] = (q13, s13, q2, s2)
    for lay in L.LAYOUTS:
        if reasons[lay] is None:
            weights[lay] = (shuffle_weight(q13, lay, True, e), shuffle_scale(s13, lay, True, e),
                            shuffle_weight(q2, lay, False, e), shuffle_scale(s2, lay, False, e))
    biases = (None, None)
    if shape["bias"]:
        biases = (torch.randn(e, 2 * i, generator=gen, device=dev) * 0.5,
                  torch.randn(e, h, generator=gen, device=dev) * 0.5)
    return weights, biases


def _r(**kw):
    return lambda c: dataclasses.replace(c, **kw)


# (name, config transform); "generic" must match the plan bitwise (the PTX dequant is exact)
SWEEPS = [
    ("generic", _r(asm_dequant=False)),
    ("fused", _r(fused_combine=True)),
    ("split1*2", lambda c: dataclasses.replace(c, split1=c.split1 * 2)),
    ("split2*2", lambda c: dataclasses.replace(c, split2=c.split2 * 2)),
    ("nb8", _r(nb1=8, nb2=8)),
    ("split1/2", lambda c: dataclasses.replace(c, split1=max(1, c.split1 // 2))),
    ("stages3", _r(stages1=3, stages2=3)),
    ("bn1=64,w8", _r(bn1=64, warps1=8)),
    ("bn2=128,w8", _r(bn2=128, warps2=8)),
    ("split2/2", lambda c: dataclasses.replace(c, split2=max(1, c.split2 // 2))),
    ("warps8", _r(warps1=8, warps2=8)),
    ("nb8,split1*2", lambda c: dataclasses.replace(c, nb1=8, nb2=8, split1=c.split1 * 2)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deadline", type=float, default=190.0, help="stop optional sweeps after this many s")
    ap.add_argument("--stop", type=float, default=270.0, help="skip remaining cases after this many s")
    ap.add_argument("--sweep", default="full", choices=["full", "none"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tokens", default="1,16,64,1024")
    args = ap.parse_args()
    out_dir = os.environ.get("OUT", "results")
    os.makedirs(out_dir, exist_ok=True)
    import triton
    name = torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu (TRITON_INTERPRET)"
    print(f"torch {torch.__version__} triton {triton.__version__} device {name}", flush=True)
    copy_bw = copy_bandwidth()
    print(f"copy bandwidth (read+write): {copy_bw:.0f} GB/s", flush=True)
    writer = Writer(os.path.join(out_dir, "moe_check.csv"))
    tokens_list = [int(t) for t in args.tokens.split(",")]
    gen = torch.Generator(device=DEV).manual_seed(1234)
    shapes = [("gpt-oss-120b", 8, True), ("gpt-oss-120b", 1, True), ("gpt-oss-120b", 1, False),
              ("deepseek-r1", 8, False), ("gpt-oss-120b", 2, True), ("gpt-oss-120b", 4, True),
              ("gpt-oss-120b", 2, False), ("gpt-oss-120b", 4, False), ("gpt-oss-120b", 8, False)]
    if args.quick:
        shapes = shapes[:2]
    if DEV == "cpu":  # interpreter smoke run of the script itself: tiny stand-in shapes
        shapes = [("smoke-swiglu", 1, False), ("smoke-silu", 1, False)]
    sweep_cases = {("gpt-oss-120b", 8, True, 1): len(SWEEPS), ("gpt-oss-120b", 1, True, 1): len(SWEEPS),
                   ("gpt-oss-120b", 8, True, 64): 8, ("gpt-oss-120b", 1, True, 64): 8,
                   ("gpt-oss-120b", 1, True, 16): 5, ("deepseek-r1", 8, False, 1): 5,
                   ("smoke-swiglu", 1, False, 1): 3}
    for model, tp, padded in shapes:
        if model.startswith("smoke"):
            shape = dict(experts=8, topk=2, hidden=256, inter=128, tp=1, padded=False,
                         activation=model.split("-")[1], bias=model.endswith("swiglu"))
        else:
            shape = model_shape(model, tp=tp, padded=padded)
        shape["model"] = model
        print(f"== {model} tp{tp} padded={padded}: hidden {shape['hidden']} inter {shape['inter']}", flush=True)
        try:
            weights, biases = build_weights(shape, gen)
        except Exception as exc:
            traceback.print_exc()
            writer.add(model=model, tp=tp, padded=padded, status="error", reason=repr(exc)[:300])
            continue
        for t in tokens_list:
            if elapsed() > args.stop:
                writer.add(model=model, tp=tp, padded=padded, hidden=shape["hidden"], inter=shape["inter"],
                           tokens=t, status="skipped", reason=f"time box {args.stop:.0f}s reached")
                continue
            if all(weights["reasons"].values()):
                for lay in L.LAYOUTS:
                    writer.add(model=model, tp=tp, padded=padded, hidden=shape["hidden"], inter=shape["inter"],
                               layout=lay, tokens=t, status="unsupported", reason=weights["reasons"][lay])
                continue
            n_sweeps = sweep_cases.get((model, tp, padded, t), 0) if args.sweep == "full" else 0
            sweeps = SWEEPS[:n_sweeps]
            run_case(shape, weights, biases, t, copy_bw, writer, gen, args.deadline, sweeps)
        del weights, biases
        if DEV == "cuda":
            torch.cuda.empty_cache()

    # summary table
    cols = ("model", "tp", "padded", "layout", "tokens", "status", "max_abs_err", "cosine",
            "layouts_bitwise", "deterministic", "bitwise_vs_plan", "us", "weight_MB", "GBps", "pct_copy_bw",
            "config", "reason")
    print("\n" + " | ".join(cols))
    for r in writer.rows:
        print(" | ".join(str(r[k]) for k in cols))
    print(f"done in {elapsed():.0f}s; copy bw {copy_bw:.0f} GB/s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
