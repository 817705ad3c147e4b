#!/usr/bin/env python3
"""MLA decode kernels on a real GPU, in one run: correctness against the fp32 reference (max abs
error, cosine), bitwise determinism (two runs), and CUDA-graph timing against the measured
device-to-device copy bandwidth.

    PYTHONPATH=. python3 scripts/device_mla_check.py [--budget-s 250] [--no-tune]

Phases, in priority order (a time budget cuts the tail, the table is always printed):
1. copy bandwidth: a 1 GiB D2D copy, bytes read + written / time.
2. tune: a few kernel configs on batch 64, ctx 4096, page 64 (nhead 16 and 128), persistent;
   the fastest correct config per (KV dtype, head tile) is used afterwards.
3. table: nhead 16/32/64/128 x KV bf16/fp8 x persistent/split-KV x a few batch/ctx/dist cases.
Kernels are compiled ahead of each phase in parallel worker processes (Triton's disk cache),
so compile time stays out of the budget's critical path.

GB/s counts the KV bytes a decode must read (sum(seq_lens) * 576 * elem size) per call; the
copy bandwidth counts read + write, so %copyBW = GB/s / copy GB/s (70% is the target).
Rows go to $OUT/mla_check.csv when OUT is set (else ./mla_check.csv), flushed as they come.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import statistics
import sys
import time
import traceback
import zlib

import torch

from rocbench.kernels import mla_decode as K
from rocbench.suites.mla.paged_kv import build_paged_kv, make_query, make_seq_lens

FP8_DTYPE = torch.float8_e4m3fn
from rocbench.suites.mla.reference import mla_decode_reference

SM_SCALE = 1.0 / math.sqrt(192)
DEVICE = "cuda"
Q_DTYPE = torch.bfloat16
KV_DTYPES = {"bf16": torch.bfloat16, "fp8": FP8_DTYPE}
T_START = time.time()

COLUMNS = ["phase", "nhead", "kv", "persist", "batch", "ctx", "dist", "page", "qlen", "config", "sched",
           "us", "GB/s", "%copyBW", "maxerr", "cos", "det", "regs", "spills", "error"]


@dataclasses.dataclass(frozen=True)
class Case:
    batch: int
    ctx: int
    dist: str
    page: int = 64
    qlen: int = 1

    def seq_lens(self) -> list[int]:
        return make_seq_lens(self.batch, self.ctx, self.dist, torch.Generator().manual_seed(1234))


def elapsed() -> float:
    return time.time() - T_START


def log(msg: str) -> None:
    print(f"[{elapsed():6.1f}s] {msg}", flush=True)


def cfg_name(c: K.MlaKernelConfig) -> str:
    name = f"bn{c.block_n}w{c.num_warps}s{c.num_stages}"
    if c.max_tile_rows != 32:
        name += f"r{c.max_tile_rows}"
    for flag, tag in ((c.swap_ab, "swap"), (c.prefetch, "pf"), (c.reload_v, "rv"), (c.fp8_in_fp16, "f16")):
        if flag:
            name += "+" + tag
    if c.programs_per_sm != 1:
        name += f"x{c.programs_per_sm}"
    return name


# ---------------------------------------------------------------------------------------------
# Measurements


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device=DEVICE).random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(5):
            dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 5 / 1e3)
    del src, dst
    return 2 * nbytes / statistics.median(times) / 1e9


def time_with_graph(fns, iters: int = 20, repeats: int = 7) -> float:
    """Median microseconds per call of a CUDA graph holding `iters` calls that rotate over
    `fns` (one per KV cache copy, so that the caches together exceed L2)."""
    for f in fns:
        f()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(iters):
            fns[i % len(fns)]()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / iters)
    del graph
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Inputs (cached across rows)

_caches: dict = {}
_queries: dict = {}
_refs: dict = {}


def caches_for(case: Case, kv_name: str, l2_bytes: int):
    key = (case, kv_name)
    if key not in _caches:
        for old in list(_caches):  # keep memory bounded: one case's caches at a time
            if old[0] != case:
                del _caches[old]
        lens = case.seq_lens()
        gen = torch.Generator(device=DEVICE).manual_seed(zlib.crc32(repr(key).encode()))
        first = build_paged_kv(lens, case.page, KV_DTYPES[kv_name], gen, DEVICE)
        copies = max(2, min(8, math.ceil(3 * l2_bytes / first.nbytes_read())))
        _caches[key] = [first] + [build_paged_kv(lens, case.page, KV_DTYPES[kv_name], gen, DEVICE)
                                  for _ in range(copies - 1)]
    return _caches[key]


def query_for(case: Case, nhead: int):
    key = (case, nhead)
    if key not in _queries:
        gen = torch.Generator(device=DEVICE).manual_seed(nhead * 7 + case.batch)
        _queries[key] = make_query(case.batch * case.qlen, nhead, Q_DTYPE, gen, DEVICE)
    return _queries[key]


def reference_for(case: Case, kv_name: str, nhead: int, q, kv):
    key = (case, kv_name, nhead)
    if key not in _refs:
        _refs[key] = mla_decode_reference(q, kv, SM_SCALE, case.qlen)[0]
    return _refs[key]


# ---------------------------------------------------------------------------------------------
# One row: build the call, check it, time it


def make_call(persist: bool, case: Case, q, kv0, config: K.MlaKernelConfig, num_sms: int):
    """Returns (call(kv) -> out, schedule description). Buffers are allocated here, outside
    any graph capture."""
    nhead = q.shape[1]
    lens = case.seq_lens()
    out = torch.empty(q.shape[0], nhead, 512, dtype=q.dtype, device=DEVICE)
    hpg = K.kernel_heads_per_group(nhead, case.qlen, config)
    if persist:
        sched = K.build_persistent_schedule(lens, case.qlen, nhead, num_sms, config).to(DEVICE)
        ws = K.alloc_persistent_workspace(sched, DEVICE)
        desc = sched.describe().split(" (")[0]

        def call(kv):
            return K.mla_decode_persistent(q, kv, sched, SM_SCALE, case.qlen, out=out, workspace=ws, config=config)
    else:
        splits = K.pick_num_kv_splits(case.batch, nhead // hpg, sum(lens) // len(lens), num_sms)
        ws = K.alloc_split_kv_workspace(q, splits, case.qlen, hpg)
        desc = f"splits={splits} hpg={hpg}"

        def call(kv):
            return K.mla_decode_split_kv(q, kv, SM_SCALE, case.qlen, splits, out=out, workspace=ws,
                                         config=config, heads_per_group=hpg)
    return call, out, desc


def run_row(phase, case, kv_name, nhead, persist, config, num_sms, l2_bytes, copy_gbs, writer, rows, time_it=True):
    row = dict(phase=phase, nhead=nhead, kv=kv_name, persist=int(persist), batch=case.batch, ctx=case.ctx,
               dist=case.dist, page=case.page, qlen=case.qlen, config=cfg_name(config))
    try:
        kvs = caches_for(case, kv_name, l2_bytes)
        q = query_for(case, nhead)
        ref = reference_for(case, kv_name, nhead, q, kvs[0])
        call, out, desc = make_call(persist, case, q, kvs[0], config, num_sms)
        row["sched"] = desc
        out.fill_(float("nan"))  # every element must be written
        first = call(kvs[0]).clone()
        second = call(kvs[0]).clone()
        torch.cuda.synchronize()
        kname = "persistent" if persist else "split_kv"
        compiled = K.LAST_COMPILED.get(kname)
        row["regs"] = getattr(compiled, "n_regs", "")
        row["spills"] = getattr(compiled, "n_spills", "")
        row["det"] = int(torch.equal(first.view(torch.int16), second.view(torch.int16)))
        diff = (first.float() - ref).abs()
        row["maxerr"] = f"{float(diff.max()):.2e}" if torch.isfinite(first).all() else "nan"
        row["cos"] = f"{float(torch.nn.functional.cosine_similarity(first.float().flatten(), ref.flatten(), dim=0)):.6f}"
        if time_it:
            us = time_with_graph([lambda kv=kv: call(kv) for kv in kvs])
            gbs = kvs[0].nbytes_read() / (us * 1e-6) / 1e9
            row.update(us=f"{us:.1f}", **{"GB/s": f"{gbs:.0f}", "%copyBW": f"{100 * gbs / copy_gbs:.1f}"})
    except Exception as exc:  # keep going: one broken row must not lose the rest
        row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        traceback.print_exc(limit=3)
    rows.append(row)
    writer.writerow({c: row.get(c, "") for c in COLUMNS})
    log(" ".join(f"{c}={row.get(c, '')}" for c in COLUMNS if row.get(c, "") != ""))
    return row


# ---------------------------------------------------------------------------------------------
# Parallel compile warm-up: the same launches on tiny inputs compile the same specializations


def _warm_job(job):
    persist, nhead, qlen, page, kv_name, config, splits, num_sms = job
    try:
        lens = [max(qlen, 70), max(qlen, 130)]
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        kv = build_paged_kv(lens, page, KV_DTYPES[kv_name], gen, DEVICE)
        q = make_query(len(lens) * qlen, nhead, Q_DTYPE, gen, DEVICE)
        hpg = K.kernel_heads_per_group(nhead, qlen, config)
        if persist:
            sched = K.build_persistent_schedule(lens, qlen, nhead, num_sms, config).to(DEVICE)
            K.mla_decode_persistent(q, kv, sched, SM_SCALE, qlen, config=config)
        else:
            K.mla_decode_split_kv(q, kv, SM_SCALE, qlen, splits, config=config, heads_per_group=hpg)
        torch.cuda.synchronize()
        return None
    except Exception as exc:
        return f"{job}: {type(exc).__name__}: {str(exc)[:300]}"


def warm_compile(jobs, workers: int) -> None:
    jobs = list(dict.fromkeys(jobs))
    if not jobs or workers <= 1:
        return
    t = time.time()
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(jobs))) as pool:
        errors = [e for e in pool.map(_warm_job, jobs, chunksize=1) if e]
    log(f"warm-compiled {len(jobs)} launch kinds in {time.time() - t:.1f}s; {len(errors)} errors")
    for e in errors:
        log("  warm error: " + e)


def splits_for(case: Case, nhead: int, config, num_sms: int) -> int:
    hpg = K.kernel_heads_per_group(nhead, case.qlen, config)
    lens = case.seq_lens()
    return K.pick_num_kv_splits(case.batch, nhead // hpg, sum(lens) // len(lens), num_sms)


# ---------------------------------------------------------------------------------------------


C = K.MlaKernelConfig
PF = dict(prefetch=True, num_stages=1)
# (kv, nhead) -> candidate configs, tuned on TUNE_CASE (persistent). Without tuning (or when no
# candidate passes) the library's default_config is used.
TUNE_CONFIGS = {
    ("bf16", 16): [C(programs_per_sm=2), C(num_warps=4, programs_per_sm=2), C(), C(num_warps=4), C(num_stages=3)],
    ("bf16", 32): [C(), C(num_stages=3), C(swap_ab=True), C(max_tile_rows=16, programs_per_sm=2)],
    ("bf16", 64): [C(), C(max_tile_rows=64, block_n=32), C(max_tile_rows=16, programs_per_sm=2)],
    ("bf16", 128): [C(), C(max_tile_rows=64, block_n=32), C(max_tile_rows=16, programs_per_sm=2)],
    ("fp8", 16): [C(**PF), C(**PF, fp8_in_fp16=True), C(reload_v=True, fp8_in_fp16=True),
                  C(reload_v=True, fp8_in_fp16=True, num_stages=3), C(reload_v=True), C(fp8_in_fp16=True)],
    ("fp8", 32): [C(reload_v=True), C(reload_v=True, fp8_in_fp16=True), C(**PF, block_n=32, fp8_in_fp16=True),
                  C(**PF, max_tile_rows=16, fp8_in_fp16=True)],
    ("fp8", 64): [C(reload_v=True), C(reload_v=True, fp8_in_fp16=True), C(**PF, max_tile_rows=16, fp8_in_fp16=True)],
    ("fp8", 128): [C(reload_v=True), C(reload_v=True, fp8_in_fp16=True), C(**PF, max_tile_rows=16, fp8_in_fp16=True)],
}
TUNE_CASE = Case(64, 4096, "uniform")
TABLE_CASES = [
    Case(64, 4096, "uniform"),
    Case(64, 4096, "skewed"),
    Case(4, 8192, "uniform"),
]
EXTRA_CASES = [  # nhead 16 only: the page-1 gather path and MTP (qlen 2)
    (Case(64, 4096, "uniform", page=1), 16),
    (Case(32, 4096, "uniform", qlen=2), 16),
]


def print_table(rows, copy_gbs, device):
    print(f"\nMLA decode on {device}; copy bandwidth {copy_gbs:.0f} GB/s (read+write); q bf16; sm_scale 1/sqrt(192)")
    cols = ["phase", "nhead", "kv", "persist", "batch", "ctx", "dist", "page", "qlen", "config", "us", "GB/s",
            "%copyBW", "maxerr", "cos", "det", "regs", "spills"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols} if rows else {}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).rjust(widths[c]) for c in cols) + (f"  ERROR {r['error']}" if r.get("error") else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=250.0, help="stop starting rows after this many seconds")
    ap.add_argument("--no-tune", action="store_true", help="use the library's default_config per (kv, nhead)")
    ap.add_argument("--workers", type=int, default=8, help="parallel compile processes")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no GPU: nothing to do")
        return 1
    props = torch.cuda.get_device_properties(0)
    num_sms = props.multi_processor_count
    l2_bytes = getattr(props, "L2_cache_size", 50 << 20)
    import triton

    device = f"{props.name} ({num_sms} SMs, L2 {l2_bytes >> 20} MB), torch {torch.__version__}, triton {triton.__version__}"
    log(device)
    out_dir = os.environ.get("OUT", ".")
    fh = open(os.path.join(out_dir, "mla_check.csv"), "w", newline="")
    writer = csv.DictWriter(fh, fieldnames=COLUMNS)
    writer.writeheader()
    rows: list[dict] = []

    copy_gbs = copy_bandwidth_gbs()
    log(f"copy bandwidth {copy_gbs:.0f} GB/s (read + write)")

    best = {(kv, nhead): K.default_config(KV_DTYPES[kv], nhead) for kv, nhead in TUNE_CONFIGS}
    if not args.no_tune:
        jobs = [(True, nhead, 1, TUNE_CASE.page, kv, cfg, 1, num_sms)
                for (kv, nhead), cands in TUNE_CONFIGS.items() for cfg in cands]
        warm_compile(jobs, args.workers)
        for (kv, nhead), cands in TUNE_CONFIGS.items():
            scored = []
            for cfg in cands:
                if elapsed() > args.budget_s * 0.5:
                    log("tune budget reached")
                    break
                r = run_row("tune", TUNE_CASE, kv, nhead, True, cfg, num_sms, l2_bytes, copy_gbs, writer, rows)
                ok = not r.get("error") and r.get("maxerr") not in (None, "nan") and float(r["cos"]) > 0.9999
                if ok and r.get("us"):
                    scored.append((float(r["us"]), cfg))
            if scored:
                best[(kv, nhead)] = min(scored, key=lambda x: x[0])[1]
            fh.flush()
        log("chosen: " + ", ".join(f"{k[0]}/nhead{k[1]}={cfg_name(v)}" for k, v in best.items()))

    plan = []
    for case in TABLE_CASES:
        for kv in KV_DTYPES:
            for nhead in (16, 32, 64, 128):
                for persist in (True, False):
                    plan.append((case, kv, nhead, persist))
    for case, nhead in EXTRA_CASES:
        for kv in KV_DTYPES:
            for persist in (True, False):
                plan.append((case, kv, nhead, persist))
    jobs = []
    for case, kv, nhead, persist in plan:
        cfg = best[(kv, nhead)]
        jobs.append((persist, nhead, case.qlen, case.page, kv, cfg, splits_for(case, nhead, cfg, num_sms), num_sms))
    warm_compile(jobs, args.workers)
    skipped = 0
    for case, kv, nhead, persist in plan:
        if elapsed() > args.budget_s:
            skipped += 1
            continue
        cfg = best[(kv, nhead)]
        run_row("table", case, kv, nhead, persist, cfg, num_sms, l2_bytes, copy_gbs, writer, rows)
        fh.flush()
    if skipped:
        log(f"budget reached: {skipped} table rows not run")
    fh.close()
    print_table(rows, copy_gbs, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
