"""Offline probe (moe-tiles-h200/README.md, "Gluon"): the decode plan's GEMM1 K loop written in Gluon, with the
packed bytes loaded straight into wgmma's A-operand fragment (no layout change: --trivial asserts it). One program:
64 gate and 64 up rows of one expert (strip layout: [K block][16 rows][16 bytes] per 16-row strip), x [BM, K] bf16
permuted in registers to the split-pairs K order, two [64, BM] fp32 accumulators. Compiled for sm_90 only; nothing
runs, the values are not checked. Run from the repository root with Triton 3.6 (see scripts/sass_loops.py):
    python results/examples/moe-tiles-h200/gluon_gemm1_probe.py --trivial [--f16] [--low] [--natural-x]"""
import os, sys, tempfile
sys.path.insert(0, os.getcwd()); sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
cache = tempfile.mkdtemp(prefix="gluon-"); os.environ["TRITON_CACHE_DIR"] = cache
import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma, warpgroup_mma_init, warpgroup_mma_wait, fence_async_shared
from rocbench.kernels.mxfp4_weights import ptx_decode, ptx_decode_f16

UPPER = "--low" not in sys.argv
LO_ASM, HI_ASM = ptx_decode(True, UPPER)
LO_F16, HI_F16 = ptx_decode_f16()
BM = int(os.environ.get("BM", "16"))
NB = 4


@gluon.jit
def _decoded(w_ptrs, s_ptrs, A_L: gl.constexpr, LO: gl.constexpr, HI: gl.constexpr, NB: gl.constexpr,
             TRIVIAL: gl.constexpr):
    wq = gl.load(w_ptrs)
    sc = gl.load(s_ptrs)
    f = (((sc.to(gl.int32) + 94) << 7).to(gl.int16).to(gl.bfloat16, bitcast=True))
    f = gl.broadcast(f[:, :, :, :, None], wq)[0]
    lo = gl.inline_asm_elementwise(LO, "=r,=r,r,r,r", [wq, f], dtype=gl.bfloat16, is_pure=True, pack=4)
    hi = gl.inline_asm_elementwise(HI, "=r,=r,r,r,r", [wq, f], dtype=gl.bfloat16, is_pure=True, pack=4)
    # K order: block b, half (lo 0 / hi 1), i1, q, i0 <- byte j = 4q + 2 i1 + i0
    t = gl.join(lo, hi)  # [4, 2, 8, NB, 16, 2]
    t = gl.reshape(t, [4, 2, 8, NB, 4, 2, 2, 2])  # w h r b q i1 i0 half
    t = gl.permute(t, [0, 1, 2, 3, 7, 5, 4, 6])  # w h r b half i1 q i0
    a = gl.reshape(t, [64, NB * 32])
    return gl.convert_layout(a, A_L, assert_trivial=TRIVIAL)


# e2m1 nibble -> e4m3 byte of value * 2^-6: sign to bit 7, e1 e0 m to bits 4..2 (E8M0-free; exact, 0.5 subnormal)
# then cvt.rn.f16x2.e4m3x2 (exact) and one fp16x2 multiply by the block factor
@gluon.jit
def _decoded_f16(w_ptrs, s_ptrs, A_L: gl.constexpr, LO: gl.constexpr, HI: gl.constexpr, NB: gl.constexpr,
                 TRIVIAL: gl.constexpr):
    wq = gl.load(w_ptrs)  # uint8 [4, 2, 8, NB, 16]
    sc = gl.load(s_ptrs)
    f = (((sc.to(gl.int32) - 9) << 10).to(gl.int16).to(gl.float16, bitcast=True))  # probe: some fp16 power of two
    f = gl.broadcast(f[:, :, :, :, None], wq)[0]
    lo = gl.inline_asm_elementwise(LO, "=r,=r,r,r,r", [wq, f], dtype=gl.float16, is_pure=True, pack=4)
    hi = gl.inline_asm_elementwise(HI, "=r,=r,r,r,r", [wq, f], dtype=gl.float16, is_pure=True, pack=4)
    t = gl.join(lo, hi)
    t = gl.reshape(t, [4, 2, 8, NB, 4, 2, 2, 2])
    t = gl.permute(t, [0, 1, 2, 3, 7, 5, 4, 6])
    a = gl.reshape(t, [64, NB * 32])
    return gl.convert_layout(a, A_L, assert_trivial=TRIVIAL)


@gluon.jit
def _probe(w_ptr, s_ptr, x_ptr, out_ptr, KSTEPS, KPB, SC,
           BM: gl.constexpr, NB: gl.constexpr, LO: gl.constexpr, HI: gl.constexpr, LO16: gl.constexpr,
           HI16: gl.constexpr, TRIVIAL: gl.constexpr,
           PERMUTE_X: gl.constexpr, F16: gl.constexpr):
    # bytes [4 warps, 2 halves, 8 rows, NB blocks, 16 bytes]: thread (warp w, lane l) holds rows 16w + 8h + l//4
    # (h = 0, 1), bytes 4(l%4)..4(l%4)+3 of each block: exactly its wgmma A fragment (with the K order below)
    BL: gl.constexpr = gl.BlockedLayout([1, 2, 1, NB, 4], [1, 1, 8, 1, 4], [4, 1, 1, 1, 1], [4, 3, 2, 1, 0])
    MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BM, 16])
    A_L: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    L4: gl.constexpr = gl.SliceLayout(4, BL)
    w_i = gl.arange(0, 4, layout=gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4))))
    h_i = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, L4))))
    r_i = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, L4))))
    b_i = gl.arange(0, NB, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, L4))))
    j_i = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, BL)))))
    row = (w_i[:, None, None] * 16 + h_i[None, :, None] * 8 + r_i[None, None, :])  # [4, 2, 8]
    # strip layout: strip = row // 16 (= w), row in strip = 8h + r; block b of the strip at b * 256
    row_off = (w_i[:, None, None] * 16 * KPB + (h_i[None, :, None] * 8 + r_i[None, None, :]) * 16)
    off4 = row_off[:, :, :, None] + b_i[None, None, None, :] * 256  # [4, 2, 8, NB] in L4
    off5 = off4[:, :, :, :, None] + j_i[None, None, None, None, :]
    s_off = row[:, :, :, None] * SC + b_i[None, None, None, :]  # simplified scale addressing (probe)
    # x [BM, NB*32] (pre-permuted K) -> shared, K-major for the B operand
    XL: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    xr = gl.arange(0, BM, layout=gl.SliceLayout(1, XL))
    xk = gl.arange(0, NB * 32, layout=gl.SliceLayout(0, XL))
    X_S: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BM, NB * 32], gl.bfloat16)
    if F16:
        x_smem = gl.allocate_shared_memory(gl.float16, [BM, NB * 32], X_S)
    else:
        x_smem = gl.allocate_shared_memory(gl.bfloat16, [BM, NB * 32], X_S)
    acc_g = gl.zeros([64, BM], gl.float32, layout=MMA)
    acc_u = gl.zeros([64, BM], gl.float32, layout=MMA)
    UP = 64 * KPB  # the up rows' strips follow the gate rows' (probe)
    for ks in range(KSTEPS):
        x = gl.load(x_ptr + xr[:, None] * (KSTEPS * NB * 32) + ks * NB * 32 + xk[None, :])
        if PERMUTE_X:  # natural K = 32b + 2(4q + 2 i1 + i0) + half -> split order 32b + 16 half + 8 i1 + 2q + i0
            x = gl.reshape(x, [BM, NB, 4, 2, 2, 2])  # m b q i1 i0 half
            x = gl.permute(x, [0, 1, 5, 3, 2, 4])  # m b half i1 q i0
            x = gl.reshape(x, [BM, NB * 32])
        if F16:  # probe: x's rows as fp16 (the real kernel scales them by a power of two first)
            x = x.to(gl.float16)
        x_smem.store(x)
        fence_async_shared()
        if F16:
            a = _decoded_f16(w_ptr + ks * (NB * 256) + off5, s_ptr + ks * NB + s_off, A_L, LO16, HI16, NB, TRIVIAL)
        else:
            a = _decoded(w_ptr + ks * (NB * 256) + off5, s_ptr + ks * NB + s_off, A_L, LO, HI, NB, TRIVIAL)
        acc_g = warpgroup_mma(a, x_smem.permute([1, 0]), acc_g)
        if F16:
            a = _decoded_f16(w_ptr + UP + ks * (NB * 256) + off5, s_ptr + 64 * SC + ks * NB + s_off, A_L, LO16, HI16, NB,
                             TRIVIAL)
        else:
            a = _decoded(w_ptr + UP + ks * (NB * 256) + off5, s_ptr + 64 * SC + ks * NB + s_off, A_L, LO, HI, NB,
                         TRIVIAL)
        acc_u = warpgroup_mma(a, x_smem.permute([1, 0]), acc_u)
    acc = acc_g * acc_u
    orow = gl.arange(0, 64, layout=gl.SliceLayout(1, MMA))
    ocol = gl.arange(0, BM, layout=gl.SliceLayout(0, MMA))
    gl.store(out_ptr + orow[:, None] * BM + ocol[None, :], acc)


from tests.compile_only import compile_only
ksteps = 3072 // 32 // NB
w = torch.zeros(2 * 16 * 4 * ksteps * NB * 256 // 16, dtype=torch.uint8)
s = torch.zeros(2 * 64 * ksteps * NB * 4, dtype=torch.uint8)
x = torch.zeros(BM, ksteps * NB * 32, dtype=torch.bfloat16)
out = torch.zeros(64, BM, dtype=torch.float32)
with compile_only("sm90"):
    _probe[(1,)](w, s, x, out, ksteps, ksteps * NB * 16, ksteps * NB, BM=BM, NB=NB, LO=LO_ASM, HI=HI_ASM, LO16=LO_F16, HI16=HI_F16, TRIVIAL="--trivial" in sys.argv,
                 PERMUTE_X="--natural-x" not in sys.argv, F16="--f16" in sys.argv, num_warps=4)
from pathlib import Path
from sass_loops import read_cubin
for cubin in Path(cache).rglob("*.cubin"):
    print("\n".join(read_cubin(cubin).lines()))
