"""Triton a16w4 MoE kernel: under the interpreter on CPU (fp16/fp32 activations, tiny shapes),
and a bf16 + CUDA-graph test that only runs where CUDA exists."""

import dataclasses
import functools
import zlib

import pytest
import torch

from rocbench.kernels import moe_a16w4 as K
from rocbench.kernels.moe_plan import CACHE_HINT_DECODE_PIPELINE, FRAGMENT_PREFETCH, FRAGMENT_TILES
from tests import moe_debug_kernels
from rocbench.moe import dequantize_mxfp4, quantize_mxfp4, shuffle_scale, shuffle_weight
from rocbench.formats import moe_layouts as L
from rocbench.suites.moe.reference import moe_reference, route
from tests.helpers import needs_interpreter
from tests.ptx_emulator import bf16_dots_in_fp32, inline_asm_emulated

pytestmark = [needs_interpreter(on_cpu_only=True), pytest.mark.gpu]  # on a GPU these run compiled

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _problem(e=6, h=128, inter=128, t=5, topk=2, bias=True, seed=0, dtype=torch.float16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, h, generator=g).to(dtype)
    w13 = torch.randn(e, 2 * inter, h, generator=g) * 0.2
    w2 = torch.randn(e, h, inter, generator=g) * 0.2
    q13, s13 = quantize_mxfp4(w13)
    q2, s2 = quantize_mxfp4(w2)
    b13 = torch.randn(e, 2 * inter, generator=g) if bias else None
    b2 = torch.randn(e, h, generator=g) if bias else None
    tw, ti = route(torch.randn(t, e, generator=g), topk)
    def to(v):
        return None if v is None else v.to(DEV)

    return dict(x=x.to(DEV), q13=q13.to(DEV), s13=s13.to(DEV), q2=q2.to(DEV), s2=s2.to(DEV),
                b13=to(b13), b2=to(b2), tw=tw.to(DEV), ti=ti.to(DEV), e=e, h=h, inter=inter)


def _shuffled(p, layout):
    e = p["e"]
    return (shuffle_weight(p["q13"], layout, True, e), shuffle_scale(p["s13"], layout, True, e),
            shuffle_weight(p["q2"], layout, False, e), shuffle_scale(p["s2"], layout, False, e))


def _run(p, layout, activation, config=None, weights=None, ti=None, tw=None, scale_max=None, w13_live_scales=None):
    w = weights if weights is not None else _shuffled(p, layout)
    return K.moe_a16w4(p["x"], *w, p["tw"] if tw is None else tw, p["ti"] if ti is None else ti,
                       layout=layout, experts=p["e"], inter=p["inter"], hidden=p["h"],
                       activation=activation, b13=p["b13"], b2=p["b2"], config=config, scale_max=scale_max,
                       w13_live_scales=w13_live_scales)


def _reference(p, activation, ti=None, tw=None):
    return moe_reference(p["x"].float().cpu(), dequantize_mxfp4(p["q13"], p["s13"]).cpu(),
                         dequantize_mxfp4(p["q2"], p["s2"]).cpu(),
                         (p["tw"] if tw is None else tw).cpu(), (p["ti"] if ti is None else ti).cpu(),
                         activation, None if p["b13"] is None else p["b13"].cpu(),
                         None if p["b2"] is None else p["b2"].cpu(), intermediate_dtype=p["x"].dtype)


def _close(out, ref, rel=2e-3):
    out = out.float().cpu()
    err = (out - ref).abs().max().item()
    scale = ref.abs().max().item()
    cos = torch.nn.functional.cosine_similarity(out.reshape(1, -1), ref.reshape(1, -1)).item()
    return err <= rel * max(scale, 1.0) and cos > 0.99999, (err, scale, cos)


# ---- index math: the kernel's own address helpers read every byte back -----------------------

@pytest.mark.parametrize("layout", L.LAYOUTS)
@pytest.mark.parametrize("gate_up", [True, False])
@pytest.mark.parametrize("shape", [(2, 64, 256), (3, 96, 512), (1, 32, 1024)])
def test_kernel_address_math_reads_every_byte(layout, gate_up, shape):
    e, n, k = shape
    g = torch.Generator().manual_seed(7)
    w = torch.randint(0, 256, (e, n, k // 2), generator=g, dtype=torch.uint8)
    s = torch.randint(0, 256, (e * n, k // 32), generator=g, dtype=torch.uint8)
    sw = shuffle_weight(w, layout, gate_up, e).to(DEV)
    ss = shuffle_scale(s, layout, gate_up, e).to(DEV)
    assert torch.equal(moe_debug_kernels.debug_read_weight(sw, layout, gate_up).cpu(), w)
    assert torch.equal(moe_debug_kernels.debug_read_scale(ss, layout, gate_up, e, n, k // 32).cpu(), s.view(e, n, -1))


def test_separated_scale_with_straddling_tiles():
    # E*N rows not a multiple of 32: separated tiles straddle experts; inter=16 per expert
    e, n, k = 3, 16, 256
    s = torch.randint(0, 256, (e * n, k // 32), dtype=torch.uint8)
    ss = shuffle_scale(s, L.SEPARATED, False, e).to(DEV)
    assert torch.equal(moe_debug_kernels.debug_read_scale(ss, L.SEPARATED, False, e, n, k // 32).cpu(), s.view(e, n, -1))


# ---- end to end --------------------------------------------------------------------------------

CONFIG_VARIANTS = {
    "plan": lambda c: c,
    "table": lambda c: dataclasses.replace(c, inline=False),
    "split_both": lambda c: dataclasses.replace(c, split1=4, split2=2, nb1=2, nb2=2),
    "table_split_bm32": lambda c: dataclasses.replace(c, inline=False, split1=2, split2=2, bm=32,
                                                      bn1=16, nb1=2, nb2=2),
    "fused_combine": lambda c: dataclasses.replace(c, fused_combine=True, split1=2, split2=2, nb1=2, nb2=2),
    "prefetch_split": lambda c: dataclasses.replace(c, prefetch=True, split1=2, split2=2, nb1=2, nb2=2),
    "scale_bytes_bn32": lambda c: dataclasses.replace(c, scale_words=not c.scale_words, bn1=32, nb1=2, nb2=2),
    # NVIDIA-only knobs (PTX prefetch, grid dependency control): elsewhere they must leave a working plain kernel
    "hint_dependent": lambda c: dataclasses.replace(c, prefetch=False, prefetch_hint="L2", scale_words=False,
                                                    dependent_launch=True, split2=2, nb2=2),
    # each MX block's even K, then its odd K, in both operands
    "split_pairs": lambda c: dataclasses.replace(c, split_pairs=True, inline=False, split1=2, nb1=2),
}


# Every config variant once; the (activation, bias, dtype) combinations rotate over them so each one
# meets both the inline and the table routing and a K split.
@pytest.mark.parametrize("variant, activation, bias, dtype", [
    ("plan", "swiglu", True, torch.float16), ("table", "silu", False, torch.float16),
    ("split_both", "swiglu", True, torch.float16), ("table_split_bm32", "silu", True, torch.float32),
    ("fused_combine", "silu", False, torch.float16), ("prefetch_split", "swiglu", False, torch.float16),
    ("scale_bytes_bn32", "silu", True, torch.float16), ("hint_dependent", "swiglu", True, torch.float16),
    ("split_pairs", "silu", True, torch.float16)])
def test_kernel_matches_reference_and_layouts_agree_bitwise(variant, activation, bias, dtype):
    p = _problem(bias=bias, dtype=dtype, seed=zlib.crc32(f"{variant}/{activation}".encode()) % 1000)
    plan = K.plan_moe(p["x"].shape[0], p["ti"].shape[1], p["e"], p["inter"], p["h"])
    cfg = CONFIG_VARIANTS[variant](plan)
    ref = _reference(p, activation)
    outs = {}
    for layout in L.LAYOUTS:
        out = _run(p, layout, activation, cfg)
        assert out.dtype == dtype and out.shape == p["x"].shape
        ok, info = _close(out, ref, rel=1e-4 if dtype == torch.float32 else 2e-3)
        assert ok, (layout, info)
        outs[layout] = out
    a, b = outs[L.INTERLEAVE], outs[L.SEPARATED]
    assert torch.equal(a.view(torch.int16 if dtype != torch.float32 else torch.int32),
                       b.view(torch.int16 if dtype != torch.float32 else torch.int32))


def test_narrow_y_rounds_each_pairs_output_once_and_only_without_a_gemm2_split():
    """MoeConfig.narrow_y: GEMM2's per-pair outputs in x's dtype before the top-k sum. Within the reference's tolerance,
    both layouts the same bits, not the fp32 partials' bits (the rounding happened), and with a GEMM2 K split (whose
    partials stay fp32) exactly the fp32 partials' bits."""
    p = _problem(e=6, h=128, inter=128, t=5, topk=4, dtype=torch.float16, seed=71)
    plan = dataclasses.replace(K.plan_moe(5, 4, p["e"], p["inter"], p["h"]), split2=1)
    ref = _reference(p, "swiglu")
    narrow = {layout: _run(p, layout, "swiglu", dataclasses.replace(plan, narrow_y=True)) for layout in L.LAYOUTS}
    assert _close(narrow[L.INTERLEAVE], ref, rel=2e-3)[0]
    assert torch.equal(narrow[L.INTERLEAVE].view(torch.int16), narrow[L.SEPARATED].view(torch.int16))
    wide = _run(p, L.INTERLEAVE, "swiglu", plan)
    assert not torch.equal(narrow[L.INTERLEAVE].view(torch.int16), wide.view(torch.int16))
    assert "y-in-x-dtype" in K.pipeline_description(dataclasses.replace(plan, narrow_y=True), torch.device(DEV))
    split = dataclasses.replace(plan, split2=2, nb2=2)
    assert torch.equal(_run(p, L.INTERLEAVE, "swiglu", dataclasses.replace(split, narrow_y=True)).view(torch.int16),
                       _run(p, L.INTERLEAVE, "swiglu", split).view(torch.int16))
    assert "y-in-x-dtype" not in K.pipeline_description(dataclasses.replace(split, narrow_y=True), torch.device(DEV))


@pytest.mark.parametrize("tokens", [3, 40])  # inline routing, then the block table
def test_scaled_dot_matches_reference_and_layouts_agree_bitwise(tokens):
    # tl.dot_scaled is bf16-only here; the interpreter computes it correctly (unlike its bf16 tl.dot)
    p = _problem(t=tokens, topk=2, dtype=torch.bfloat16, seed=20 + tokens)
    cfg = dataclasses.replace(K.plan_moe(tokens, 2, p["e"], p["inter"], p["h"]), scaled_dot=True)
    ref = _reference(p, "swiglu")
    outs = [_run(p, layout, "swiglu", cfg) for layout in L.LAYOUTS]
    ok, info = _close(outs[0], ref, rel=1e-2)
    assert ok, info
    assert torch.equal(outs[0].view(torch.int16), outs[1].view(torch.int16))


def test_scale_words_match_byte_loads_bitwise():
    # K of 512 and 256 (16 and 8 MX blocks): each scale word's both halves (column blocks kp = 0 and 1) are read;
    # a 128-wide K, as in the other cases, reads only the lower half
    p = _problem(e=4, h=512, inter=256, t=3, topk=2, seed=9)
    plan = K.plan_moe(3, 2, p["e"], p["inter"], p["h"])
    ref = _reference(p, "swiglu")
    for layout in L.LAYOUTS:
        words = _run(p, layout, "swiglu", dataclasses.replace(plan, scale_words=True))
        assert _close(words, ref)[0], layout
        bytes_ = _run(p, layout, "swiglu", dataclasses.replace(plan, scale_words=False))
        assert torch.equal(words.view(torch.int16), bytes_.view(torch.int16)), layout


@pytest.mark.parametrize("tokens", [3, 40])  # inline routing with a GEMM1 K split, then the block table
def test_stacked_gate_up_gives_the_same_bits(tokens):
    """GEMM1 with its gate and up rows as one operand (stacked_gate_up), with and without the register prefetch: each
    output row is the same dot product as in the two separate dots, so the same bits; and it refuses tl.dot_scaled."""
    p = _problem(e=4, h=256, inter=128, t=tokens, topk=2, seed=11)
    plan = dataclasses.replace(K.plan_moe(tokens, 2, p["e"], p["inter"], p["h"]), split1=2)
    expected = _run(p, L.INTERLEAVE, "swiglu", plan)  # (both layouts give these bits: test_kernel_matches_reference...)
    # inline routing (3 tokens) with and without the register prefetch; the block table (40) also at 128-row token
    # blocks, a prefill candidate
    changes = (dict(prefetch=False), dict(prefetch=True)) if tokens == 3 else (dict(prefetch=False), dict(bm=128))
    for layout, change in [(L.SEPARATED, changes[0])] + [(L.INTERLEAVE, c) for c in changes]:
        got = _run(p, layout, "swiglu", dataclasses.replace(plan, stacked_gate_up=True, **change))
        assert torch.equal(got.view(torch.int16), expected.view(torch.int16)), (layout, change)
    assert K.pipeline_description(dataclasses.replace(plan, stacked_gate_up=True, warps1=8),
                                  torch.device("cpu")).endswith("stacked-gate-up/8w")
    with pytest.raises(ValueError, match="stacked_gate_up"):
        K.check_config(dataclasses.replace(plan, stacked_gate_up=True, scaled_dot=True), p["inter"], p["h"])


def _fragments(p, layout):
    """MoeFragments re-tiled from a layout's shuffled bytes, as the backend builds them."""
    q13, s13, q2, s2 = _shuffled(p, layout)
    e = p["e"]
    return K.moe_fragments(L.unshuffle_weight(q13, layout, True, e), L.unshuffle_scale(s13, layout, True, e, p["s13"].shape),
                           L.unshuffle_weight(q2, layout, False, e), L.unshuffle_scale(s2, layout, False, e, p["s2"].shape))


@pytest.mark.parametrize("tokens", [3, 40])  # inline routing with a GEMM1 K split, then the block table
def test_fragments_give_the_same_bits_as_the_shuffled_bytes(tokens):
    """The weights re-tiled in wgmma's fragment order (MoeConfig.fragments) hold the same values in the same K order:
    the same dots, the same bits, from either layout, with 128-row token blocks, the register prefetch, GEMM1's tiles
    stacked over 8 warps, GEMM2's 128-row tiles (split in K) and the fused combine; a config without them, or of the
    wrong shape, is refused."""
    p = _problem(e=2, h=256, inter=128, t=tokens, topk=2, seed=12)
    plan = dataclasses.replace(K.plan_moe(tokens, 2, p["e"], p["inter"], p["h"]), split1=2, prefetch=False)
    frag = dataclasses.replace(plan, **FRAGMENT_TILES, fragments=True)
    def fragments_run(layout, change):
        return K.moe_a16w4(p["x"], *_shuffled(p, layout), p["tw"], p["ti"], layout=layout, experts=p["e"],
                           inter=p["inter"], hidden=p["h"], activation="swiglu", b13=p["b13"], b2=p["b2"],
                           config=dataclasses.replace(frag, **change), fragments=_fragments(p, layout))

    expected = _run(p, L.INTERLEAVE, "swiglu", plan)
    for layout in L.LAYOUTS:
        assert torch.equal(fragments_run(layout, {}).view(torch.int16), expected.view(torch.int16)), layout
    # inline routing (3 tokens): the register prefetch and the fused combine; the block table (40): 128-row token
    # blocks, GEMM1 stacked over 8 warps, GEMM2's 128-row tiles split in K (which sums GEMM2 in another order)
    changes = ((dict(prefetch=True), dict(fused_combine=True)) if tokens == 3 else
               (dict(bm=128), dict(stacked_gate_up=True, warps1=8), dict(bn2=128, warps2=8, split2=2)))
    for change in changes:
        want = _run(p, L.INTERLEAVE, "swiglu", dataclasses.replace(plan, **change)) if "split2" in change else expected
        assert torch.equal(fragments_run(L.INTERLEAVE, change).view(torch.int16), want.view(torch.int16)), change
    with pytest.raises(ValueError, match="fragment order"):
        _run(p, L.INTERLEAVE, "swiglu", frag)
    with pytest.raises(ValueError, match="fragments take"):
        K.check_config(dataclasses.replace(frag, warps1=8), p["inter"], p["h"])  # 8 warps only stacked
    with pytest.raises(ValueError, match="fragments take"):
        K.check_config(dataclasses.replace(frag, bn1=32), p["inter"], p["h"])
    with pytest.raises(ValueError, match="fragments take GEMM2"):
        K.check_config(dataclasses.replace(frag, bn2=128), p["inter"], p["h"])  # 128 rows only on 8 warps
    assert "fragments" in K.pipeline_description(frag, torch.device("cpu"))


def test_register_prefetch_carries_each_next_step():
    """The register prefetch of the next K step, over loops of several K steps in both GEMMs (the other tests take
    one step per program): of the fragment words (the NVIDIA default, heuristic_plan) and of the layout's bytes (the
    decode plans elsewhere), the bits of the loads in place."""
    p = _problem(e=2, h=512, inter=256, t=3, topk=2, seed=13)
    plan = dataclasses.replace(K.plan_moe(3, 2, p["e"], p["inter"], p["h"]), split1=1, split2=1, prefetch=False)
    assert (p["h"] // 128, p["inter"] // 128) == (4, 2)  # GEMM1's and GEMM2's K steps per program
    expected = _run(p, L.INTERLEAVE, "swiglu", plan)
    config = dataclasses.replace(plan, **FRAGMENT_TILES, **FRAGMENT_PREFETCH, fragments=True)
    got = K.moe_a16w4(p["x"], *_shuffled(p, L.INTERLEAVE), p["tw"], p["ti"], layout=L.INTERLEAVE, experts=p["e"],
                      inter=p["inter"], hidden=p["h"], activation="swiglu", b13=p["b13"], b2=p["b2"], config=config,
                      fragments=_fragments(p, L.INTERLEAVE))
    assert torch.equal(got.view(torch.int16), expected.view(torch.int16))
    for layout in L.LAYOUTS:
        got = _run(p, layout, "swiglu", dataclasses.replace(plan, prefetch=True, stages1=1, stages2=1))
        assert torch.equal(got.view(torch.int16), expected.view(torch.int16)), layout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the real PTX (test_gpu_f16_gemm1_gives_the_same_bits)")
@pytest.mark.parametrize("tokens", [3, 40])
@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # swiglu's exp(-alpha g) at large |g|: 1 / inf = 0
def test_f16_gemm1_ptx_path_gives_the_same_bits_in_the_interpreter(tokens, monkeypatch):
    """GEMM1's fp16 decode (MoeConfig.f16_gemm1: the x pre-pass, its PTX decode run by tests/ptx_emulator.py, the
    accumulators scaled back) against the portable decode, fp16 activations (the interpreter's fp16 dots are right):
    the same bits, with an all-zero block of scale byte 0 and live scales 9 binades apart."""
    p = _problem(e=2, h=256, inter=128, t=tokens, topk=2, seed=14)
    g = torch.Generator().manual_seed(tokens)
    p["s13"] = torch.randint(118, 128, p["s13"].shape, generator=g, dtype=torch.uint8)  # exact in fp16 either way
    p["q13"][:, :8, :16] = 0  # the first block of 8 rows: zeros, scale 0
    p["s13"][:, :8, 0] = 0
    live = K.live_scale_range(p["q13"], p["s13"])
    shift = K.f16_shift(live)
    assert live[0] >= 118 and shift is not None
    plan = dataclasses.replace(K.plan_moe(tokens, 2, p["e"], p["inter"], p["h"]), split1=2)
    expected = {layout: _run(p, layout, "swiglu", plan) for layout in (L.LAYOUTS if tokens == 3 else L.LAYOUTS[:1])}
    monkeypatch.setattr(K, "gemm1_decode", lambda *args: (3, shift))  # as on an sm_89+ GPU with bf16 x
    for layout in L.LAYOUTS if tokens == 3 else L.LAYOUTS[:1]:
        with inline_asm_emulated():
            got = _run(p, layout, "swiglu", dataclasses.replace(plan, f16_gemm1=True), w13_live_scales=live)
        assert torch.equal(got.view(torch.int16), expected[layout].view(torch.int16)), layout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the real PTX (test_gpu_asm_dequant_bitwise...)")
@pytest.mark.parametrize("tokens", [3, 40])
def test_nvidia_bf16_decodes_give_the_same_bits_in_the_interpreter(tokens, monkeypatch):
    """The NVIDIA decode paths with bf16 activations, run on the CPU: their PTX through tests/ptx_emulator.py and the
    interpreter's bf16 dots as exact fp32 products (its own multiply the bf16 words as integers). The exact and
    one-multiply decodes, both byte spreads, split pairs, GEMM1 stacked over 8 warps, the weights in fragment order
    and the decode plans' NVIDIA pipeline (its PTX cache prefetch; dependent launches aside) give the bits of the
    portable decode in the same K order."""
    p = _problem(e=2, h=256, inter=128, t=tokens, topk=2, seed=16, dtype=torch.bfloat16)
    plan = dataclasses.replace(K.plan_moe(tokens, 2, p["e"], p["inter"], p["h"]), split1=2, prefetch=False)
    scale_max = K.largest_scale(p["s13"], p["s2"])
    assert scale_max <= K.ONE_MUL_MAX_SCALE
    frag = dataclasses.replace(plan, **FRAGMENT_TILES, fragments=True)
    with bf16_dots_in_fp32():
        portable = {pairs: _run(p, L.INTERLEAVE, "swiglu", dataclasses.replace(plan, split_pairs=pairs))
                    for pairs in (False, True)}
        assert _close(portable[False], _reference(p, "swiglu"), rel=1e-2)[0]
        # as on an NVIDIA GPU: the PTX decodes, and the cache prefetch where a config asks (no dependent launches)
        monkeypatch.setattr(K, "_nvidia_knobs", lambda cfg, device: (K.PREFETCH_HINT_LEVELS[cfg.prefetch_hint], False))
        variants = ((1, {}), (2, {}), (1, dict(upper_bytes=True)), (2, dict(upper_bytes=True)),
                    (2, dict(split_pairs=True)), (2, dict(stacked_gate_up=True, warps1=8)), (2, dict(fragments=True)),
                    (2, CACHE_HINT_DECODE_PIPELINE), (2, dict(fragments=True, prefetch_hint="L2", stages1=1, stages2=1)),
                    (2, dict(fragments=True, **FRAGMENT_PREFETCH)))  # the last: the NVIDIA default (heuristic_plan)
        # the decodes do not depend on the routing: the block table (40 tokens) runs the pipelines only
        for mode, change in variants if tokens == 3 else variants[-3:]:
            monkeypatch.setattr(K, "decode_mode", lambda *args, mode=mode: mode)
            config = dataclasses.replace(frag if change.get("fragments") else plan, **change)
            with inline_asm_emulated():
                got = K.moe_a16w4(p["x"], *_shuffled(p, L.INTERLEAVE), p["tw"], p["ti"], layout=L.INTERLEAVE,
                                  experts=p["e"], inter=p["inter"], hidden=p["h"], activation="swiglu", b13=p["b13"],
                                  b2=p["b2"], config=config, scale_max=scale_max,
                                  fragments=_fragments(p, L.INTERLEAVE) if config.fragments else None)
            expected = portable[config.split_pairs]
            assert torch.equal(got.view(torch.int16), expected.view(torch.int16)), (mode, change)


def test_unaligned_scales_fall_back_to_byte_loads():
    # scale words need 4-byte-aligned scale tensors; views at an odd offset are read byte by byte, same bits
    p = _problem(t=4, seed=5)
    w = _shuffled(p, L.INTERLEAVE)
    cfg = dataclasses.replace(K.plan_moe(4, 2, p["e"], p["inter"], p["h"]), scale_words=True)

    def at_odd_offset(t):
        buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        view = buf[1:].view(t.shape)
        view.copy_(t)
        assert view.data_ptr() % 4
        return view

    unaligned = (w[0], at_odd_offset(w[1]), w[2], at_odd_offset(w[3]))
    a = _run(p, L.INTERLEAVE, "swiglu", cfg, weights=w)
    b = _run(p, L.INTERLEAVE, "swiglu", cfg, weights=unaligned)
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))


@pytest.mark.parametrize("inline", [True, False])
def test_many_rows_per_expert_spill_into_several_blocks(inline):
    # 2 experts, 18 tokens, top-2: 18 rows per expert > BM=16 -> two blocks per expert
    p = _problem(e=2, t=18, topk=2, seed=3)
    cfg = dataclasses.replace(K.plan_moe(18, 2, 2, p["inter"], p["h"]), bm=16, inline=inline)
    assert cfg.inline == inline
    ref = _reference(p, "swiglu")
    out = _run(p, L.INTERLEAVE, "swiglu", cfg)
    ok, info = _close(out, ref)
    assert ok, info


def test_determinism_and_out_buffer():
    p = _problem(seed=5)
    w = _shuffled(p, L.SEPARATED)
    a = _run(p, L.SEPARATED, "swiglu", weights=w)
    buf = torch.empty_like(p["x"])
    b = K.moe_a16w4(p["x"], *w, p["tw"], p["ti"], layout=L.SEPARATED, experts=p["e"],
                    inter=p["inter"], hidden=p["h"], activation="swiglu", b13=p["b13"],
                    b2=p["b2"], out=buf)
    assert b.data_ptr() == buf.data_ptr()
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))


def test_invalid_expert_ids_contribute_nothing():
    p = _problem(seed=6)
    ti = p["ti"].clone()
    ti[1, 0] = -1
    ti[3, 1] = p["e"]  # out of range
    tw_ref = p["tw"].clone()
    tw_ref[1, 0] = 0.0
    tw_ref[3, 1] = 0.0
    ti_ref = ti.clone()
    ti_ref[1, 0] = 0
    ti_ref[3, 1] = 0
    ref = _reference(p, "swiglu", ti=ti_ref, tw=tw_ref)
    for cfg_fn in (lambda c: c, lambda c: dataclasses.replace(c, inline=False)):
        cfg = cfg_fn(K.plan_moe(5, 2, p["e"], p["inter"], p["h"]))
        out = _run(p, L.INTERLEAVE, "swiglu", cfg, ti=ti)
        ok, info = _close(out, ref)
        assert ok, info


def test_planted_layout_bugs_fail_the_gate():
    p = _problem(seed=8)
    ref = _reference(p, "swiglu")
    sep = _shuffled(p, L.SEPARATED)
    # separated bytes read as interleave: gate/up strips are mixed up
    wrong = _run(p, L.INTERLEAVE, "swiglu", weights=sep)
    assert not _close(wrong, ref)[0]
    # two 16-row strips of w13 swapped
    itl = list(_shuffled(p, L.INTERLEAVE))
    w13 = itl[0].clone().reshape(p["e"], -1, 16 * p["h"] // 2)
    w13[:, [0, 1]] = w13[:, [1, 0]]
    itl[0] = w13.reshape(itl[0].shape)
    assert not _close(_run(p, L.INTERLEAVE, "swiglu", weights=tuple(itl)), ref)[0]
    # the correct bytes pass
    assert _close(_run(p, L.INTERLEAVE, "swiglu"), ref)[0]


def test_route_blocks_tables():
    # 13 tokens x top-3 over 5 experts, BM=4: check the sorted pairs and the block table
    g = torch.Generator().manual_seed(11)
    e, t, k, bm = 5, 13, 3, 4
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)]).to(torch.int32)
    ids[2, 1] = -1
    ids[4, 0] = e  # out of range, and E_PAD > E: must not create an expert-5 block
    flat = ids.reshape(-1).to(DEV)
    p = flat.numel()
    mb = min(p, -(-p // bm) + min(e, p))
    sorted_ids, blk_e, blk_row0, blk_n = [o.cpu() for o in K.route_blocks(flat, e, bm, mb)]
    flat = flat.cpu()
    expect_sorted = [i for ex in range(e) for i in range(p) if flat[i] == ex]
    assert sorted_ids[: len(expect_sorted)].tolist() == expect_sorted
    row = 0
    b = 0
    for ex in range(e):
        cnt = int((flat == ex).sum())
        for j in range(0, cnt, bm):
            assert (blk_e[b].item(), blk_row0[b].item(), blk_n[b].item()) == (ex, row + j, min(bm, cnt - j))
            b += 1
        row += cnt
    assert blk_n[b:].tolist() == [0] * (mb - b) and blk_e[b:].tolist() == [-1] * (mb - b)


@pytest.mark.parametrize("tokens,topk,experts,bm", [(3, 8, 256, 32), (40, 2, 4, 32), (100, 8, 256, 16), (70, 4, 128, 64), (300, 8, 256, 32)])
def test_route_blocks_is_a_stable_sort(tokens, topk, experts, bm):
    # several chunks of 128 pairs (300 x 8: more than one scan step of 16 chunks), a last chunk part-filled, 256
    # experts (the invalid key needs a 512-wide histogram)
    g = torch.Generator().manual_seed(tokens)
    ids = torch.randint(0, experts, (tokens * topk,), generator=g, dtype=torch.int32)
    ids[[1, 5, ids.numel() - 1]] = torch.tensor([-1, experts, -7], dtype=torch.int32)
    mb = min(ids.numel(), -(-ids.numel() // bm) + min(experts, ids.numel()))
    sorted_ids, blk_e, _, blk_n = [o.cpu() for o in K.route_blocks(ids.to(DEV), experts, bm, mb)]
    key = torch.where((ids >= 0) & (ids < experts), ids, experts)
    assert torch.equal(sorted_ids, torch.argsort(key, stable=True).to(torch.int32))
    counts = torch.bincount(key, minlength=experts + 1)[:experts]
    assert torch.equal(blk_n[blk_e >= 0].sum(), counts.sum()) and (blk_e[blk_n == 0] == -1).all()
    assert torch.equal(torch.bincount(blk_e[blk_e >= 0].long(), weights=blk_n[blk_e >= 0].double(),
                                      minlength=experts).long(), counts)


def test_unsupported_shapes_and_bad_inputs():
    assert "MX block" in K.moe_a16w4_unsupported_reason(L.SEPARATED, 128, 360, 2880)
    assert K.moe_a16w4_unsupported_reason(L.INTERLEAVE, 128, 2880, 2880).startswith("w13")
    assert K.moe_a16w4_unsupported_reason(L.SEPARATED, 128, 2880, 2880) is None
    assert K.moe_a16w4_unsupported_reason(L.INTERLEAVE, 128, 384, 3072) is None
    assert K.moe_a16w4_unsupported_reason(L.SEPARATED, 4, 40, 256) == \
        "w2: K=40 is not a multiple of the MX block 32 (cannot be MXFP4)"
    p = _problem()
    w = _shuffled(p, L.INTERLEAVE)
    with pytest.raises(ValueError, match="scale shapes"):  # an unshuffled [E, N, K/32] scale
        K.moe_a16w4(p["x"], w[0], p["s13"], w[2], w[3],
                    p["tw"], p["ti"], layout=L.INTERLEAVE, experts=p["e"], inter=p["inter"],
                    hidden=p["h"], activation="silu")
    with pytest.raises(ValueError, match="unknown activation"):
        K.moe_a16w4(p["x"], *w, p["tw"], p["ti"], layout=L.INTERLEAVE, experts=p["e"],
                    inter=p["inter"], hidden=p["h"], activation="gelu")


def test_the_row_path_names_the_nvidia_only_knobs_only_where_they_take_effect(monkeypatch):
    plan = K.plan_moe(1, 4, 128, 384, 3072, num_sms=132)
    hinted = dataclasses.replace(plan, prefetch=False, prefetch_hint="L2", stages1=1, dependent_launch=True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert K.pipeline_description(plan, cpu) == "prefetch"
    assert K.pipeline_description(hinted, cpu) == "stages=1"  # PTX and griddepcontrol: not here, so not claimed
    monkeypatch.setattr(K, "cache_hint_available", lambda device: device.type == "cuda")
    monkeypatch.setattr(K, "dependent_launch_supported", lambda device: device.type == "cuda")
    assert K.pipeline_description(hinted, cuda) == "stages=1 L2-prefetch-hint dependent-launch"
    assert K.pipeline_description(dataclasses.replace(hinted, prefetch_hint=""), cuda) == "stages=1 dependent-launch"


def test_decode_mode_takes_the_one_multiply_form_only_where_the_scales_allow_it(monkeypatch):
    plan = K.plan_moe(1, 4, 128, 384, 3072, num_sms=132)
    cuda, bf16 = torch.device("cuda"), torch.bfloat16
    monkeypatch.setattr(K, "nvidia_gpu", lambda device: device.type == "cuda")
    assert K.decode_mode(plan, bf16, torch.device("cpu"), 127) == 0  # the interpreter, ROCm: the portable decode
    assert K.decode_mode(plan, torch.float16, cuda, 127) == 0
    assert K.decode_mode(dataclasses.replace(plan, scaled_dot=True), bf16, cuda, 127) == 0
    assert K.decode_mode(plan, bf16, cuda, None) == 1  # nobody vouched for the scales
    assert K.decode_mode(plan, bf16, cuda, K.ONE_MUL_MAX_SCALE) == 2
    assert K.decode_mode(plan, bf16, cuda, K.ONE_MUL_MAX_SCALE + 1) == 1  # 2^(s - 1 - shift) would not be finite
    assert K.decode_mode(dataclasses.replace(plan, one_mul=False), bf16, cuda, 127) == 1
    assert K.pipeline_description(plan, cuda, bf16, 127).endswith("ptx-decode-1mul")
    upper = dataclasses.replace(plan, upper_bytes=True)
    assert K.pipeline_description(upper, cuda, bf16, 127).endswith("ptx-decode-1mul-upper-bytes")
    assert K.pipeline_description(upper, cuda, bf16, None).endswith("ptx-decode-upper-bytes")
    assert "upper" not in K.pipeline_description(upper, torch.device("cpu"), bf16, 127)  # no PTX there
    scales = [torch.tensor([[3, 200]], dtype=torch.uint8), torch.tensor([7], dtype=torch.uint8)]
    assert K.largest_scale(*scales) == 200


def test_gemm1_takes_the_fp16_decode_only_where_it_is_exact(monkeypatch):
    plan = dataclasses.replace(K.plan_moe(64, 4, 128, 384, 3072, num_sms=132), f16_gemm1=True)
    cuda, bf16 = torch.device("cuda"), torch.bfloat16
    monkeypatch.setattr(K, "nvidia_gpu", lambda device: device.type == "cuda")
    monkeypatch.setattr(K, "e4m3_conversion_available", lambda device: device.type == "cuda")
    assert K.gemm1_decode(plan, bf16, cuda, 127, (100, 127)) == (3, 127 - 136)
    assert K.gemm1_decode(plan, bf16, cuda, 127, (90, 127)) == (2, None)  # 37 binades: not all exact in fp16
    assert K.gemm1_decode(plan, bf16, cuda, 127, None) == (2, None)  # nobody said
    assert K.gemm1_decode(plan, bf16, torch.device("cpu"), 127, (100, 127)) == (0, None)  # no PTX there
    assert K.gemm1_decode(dataclasses.replace(plan, f16_gemm1=False), bf16, cuda, 127, (100, 127)) == (2, None)
    assert K.pipeline_description(plan, cuda, bf16, 127, (100, 127)).endswith("ptx-decode-1mul gemm1-f16")
    assert "f16" not in K.pipeline_description(plan, cuda, bf16, 127, (90, 127))
    monkeypatch.setattr(K, "e4m3_conversion_available", lambda device: False)  # an A100: no e4m3 conversion
    assert K.gemm1_decode(plan, bf16, cuda, 127, (100, 127)) == (2, None)


def test_live_scale_range_leaves_out_all_zero_blocks():
    packed = torch.zeros(2, 3, 32, dtype=torch.uint8)  # [E, N, K/2]: 2 blocks per row
    scales = torch.zeros(2, 3, 2, dtype=torch.uint8)
    assert K.live_scale_range(packed, scales) is None
    packed[0, 1, 20] = 0x10  # one nonzero code in block 1 of row (0, 1)
    scales[0, 1, 1], scales[1, 2, 0] = 120, 250  # the second block is all zeros: its scale does not count
    assert K.live_scale_range(packed, scales) == (120, 120)
    packed[1, 2, 3] = 0x08  # a -0 code: live (its sign survives any factor)
    assert K.live_scale_range(packed, scales) == (120, 250)


def test_x_to_f16_keeps_every_value_its_row_scale_can_hold():
    """_x_to_f16_kernel: each row divided by a power of two that puts its largest magnitude in [2^14, 2^15); x16 times
    the kept factor gives x back exactly (elements > 2^-31 of the row's largest), an all-zero row stays zero."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(5, 200, generator=g) * torch.tensor([1.0, 1e-30, 3e30, 0.0, 7.0])[:, None]).to(torch.bfloat16)
    x[4, 7] = 65504.0 * 2  # beyond fp16's range before scaling
    x16 = torch.empty(5, 200, dtype=torch.float16, device=DEV)
    xs = torch.empty(5, dtype=torch.float32, device=DEV)
    K._x_to_f16_kernel[(5,)](x.to(DEV), x.stride(0), x16, xs, 200, BLOCK=64)
    x16, xs = x16.cpu(), xs.cpu()
    largest = x16.float().abs().amax(1)
    assert torch.all((largest[[0, 1, 2, 4]] >= 2 ** 14) & (largest[[0, 1, 2, 4]] < 2 ** 15))
    back = x16.float() * xs[:, None]
    big = x.float().abs() > x.float().abs().amax(1, keepdim=True) * 2.0 ** -31
    assert torch.equal(back[big], x.float()[big])
    assert torch.equal(back[3], torch.zeros(200)) and torch.isfinite(xs).all()


def test_plan_is_static_and_sane():
    c1 = K.plan_moe(1, 4, 128, 384, 3072, num_sms=132)
    assert c1.inline and c1.bm == 16 and c1.split1 > 1
    c2 = K.plan_moe(1024, 8, 256, 256, 7168, num_sms=132)
    assert not c2.inline and c2.bm == 64 and c2.split1 == 1 and c2.split2 == 1
    assert K.plan_moe(64, 4, 128, 2944, 3072) == K.plan_moe(64, 4, 128, 2944, 3072)


# ---- GPU only ----------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 tl.dot is wrong in the CPU interpreter)")
@pytest.mark.parametrize("tokens", [1, 8, 64])
def test_gpu_bf16_layouts_bitwise_reference_and_graph(tokens):
    p = _problem(e=16, h=512, inter=256, t=tokens, topk=4, dtype=torch.bfloat16, seed=tokens)
    ref = _reference(p, "swiglu")
    outs = {}
    for layout in L.LAYOUTS:
        w = _shuffled(p, layout)
        out = _run(p, layout, "swiglu", weights=w)
        ok, info = _close(out, ref, rel=1e-2)
        assert ok, (layout, info)
        # CUDA graph replay gives the same bits as eager
        static_out = torch.empty_like(out)
        K.moe_a16w4(p["x"], *w, p["tw"], p["ti"], layout=layout, experts=p["e"], inter=p["inter"],
                    hidden=p["h"], activation="swiglu", b13=p["b13"], b2=p["b2"], out=static_out)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            K.moe_a16w4(p["x"], *w, p["tw"], p["ti"], layout=layout, experts=p["e"],
                        inter=p["inter"], hidden=p["h"], activation="swiglu", b13=p["b13"],
                        b2=p["b2"], out=static_out)
        static_out.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out.view(torch.int16), out.view(torch.int16))
        outs[layout] = out
    assert torch.equal(outs[L.INTERLEAVE].view(torch.int16), outs[L.SEPARATED].view(torch.int16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (grid dependency control)")
@pytest.mark.parametrize("tokens", [1, 40])  # inline routing, then the block table
def test_gpu_dependent_launch_gives_the_same_bits_eager_and_in_a_graph(tokens):
    """GEMM2 and the combine as programmatic dependents (MoeConfig.dependent_launch; plain launches before sm_90)
    read what the kernel before them wrote only after gdc_wait: the same bits as without, replayed in a CUDA graph."""
    p = _problem(e=16, h=512, inter=256, t=tokens, topk=4, dtype=torch.bfloat16, seed=20 + tokens)
    plan = K.plan_moe(tokens, 4, p["e"], p["inter"], p["h"])
    w = _shuffled(p, L.INTERLEAVE)
    hinted = dataclasses.replace(plan, prefetch=False, prefetch_hint="L2", scale_words=False, stages1=1, stages2=1)
    for base in (plan, dataclasses.replace(plan, fused_combine=True), hinted):
        expected = _run(p, L.INTERLEAVE, "swiglu", base, weights=w)
        config = dataclasses.replace(base, dependent_launch=True)
        assert torch.equal(_run(p, L.INTERLEAVE, "swiglu", config, weights=w).view(torch.int16),
                           expected.view(torch.int16)), base
        static_out = torch.empty_like(expected)
        call = functools.partial(K.moe_a16w4, p["x"], *w, p["tw"], p["ti"], layout=L.INTERLEAVE, experts=p["e"],
                                 inter=p["inter"], hidden=p["h"], activation="swiglu", b13=p["b13"], b2=p["b2"],
                                 out=static_out, config=config,
                                 counters=K.alloc_counters(config, tokens, 4, p["e"], p["inter"], p["h"], "cuda"))
        call()  # compiles outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
        static_out.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out.view(torch.int16), expected.view(torch.int16)), base


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (inline PTX)")
@pytest.mark.parametrize("tokens", [1, 64])
def test_gpu_asm_dequant_bitwise_and_config_variants_match_reference(tokens):
    p = _problem(e=16, h=512, inter=256, t=tokens, topk=4, dtype=torch.bfloat16, seed=10 + tokens)
    plan = K.plan_moe(tokens, 4, p["e"], p["inter"], p["h"])
    ref = _reference(p, "swiglu")
    generic = _run(p, L.INTERLEAVE, "swiglu", dataclasses.replace(plan, asm_dequant=False))
    for layout in L.LAYOUTS:
        asm = _run(p, layout, "swiglu", dataclasses.replace(plan, asm_dequant=True))
        assert torch.equal(asm.view(torch.int16), generic.view(torch.int16)), layout
        for change in (dict(asm_dequant=True, prefetch=not plan.prefetch), dict(fused_combine=True),
                       dict(scale_words=not plan.scale_words), dict(bn1=32, scale_words=False), dict(scaled_dot=True),
                       dict(bn2=128, warps2=8)):
            other = _run(p, layout, "swiglu", dataclasses.replace(plan, **change))
            assert _close(other, ref, rel=1e-2)[0], (layout, change)
        # the stacked gate and up rows (4 and 8 warps) compute the same dot products: the same bits
        for warps in (4, 8):
            stacked = _run(p, layout, "swiglu", dataclasses.replace(plan, stacked_gate_up=True, warps1=warps))
            assert torch.equal(stacked.view(torch.int16), asm.view(torch.int16)), (layout, warps)
        # a cache prefetch (PTX) moves no value: the same bits as the same config without it
        plain = dataclasses.replace(plan, prefetch=False, scale_words=False, stages1=1, stages2=1)
        expected = _run(p, layout, "swiglu", plain)
        for level in ("L1", "L2"):
            hinted = _run(p, layout, "swiglu", dataclasses.replace(plain, prefetch_hint=level))
            assert torch.equal(hinted.view(torch.int16), expected.view(torch.int16)), (layout, level)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (inline PTX)")
@pytest.mark.parametrize("tokens", [1, 64])
def test_gpu_one_multiply_and_upper_byte_decodes_give_the_same_bits(tokens):
    """The one-multiply PTX decode (weights at 2^-ONE_MUL_SHIFT, accumulators scaled back) and both forms with the
    bytes spread into the lanes' high halves (upper_bytes) against the exact decode, on block scales spread over
    2^-31 .. 2^33 (bytes 96-160 in w13): the same bits."""
    p = _problem(e=16, h=512, inter=256, t=tokens, topk=4, bias=False, dtype=torch.bfloat16, seed=30 + tokens)
    g = torch.Generator().manual_seed(tokens)
    for name, top in (("s13", K.ONE_MUL_MAX_SCALE), ("s2", 128)):  # outputs up to ~2^119: still finite in bf16
        p[name] = torch.randint(96, top + 1, p[name].shape, generator=g, dtype=torch.uint8).to(DEV)
    plan = dataclasses.replace(K.plan_moe(tokens, 4, p["e"], p["inter"], p["h"]), split_pairs=False)
    for layout in L.LAYOUTS:
        w = _shuffled(p, layout)
        assert K.largest_scale(w[1], w[3]) <= K.ONE_MUL_MAX_SCALE
        exact = _run(p, layout, "silu", plan, weights=w)
        assert torch.isfinite(exact.float()).all()
        for upper_bytes in (False, True):
            config = dataclasses.replace(plan, upper_bytes=upper_bytes)
            for scale_max in (None, K.largest_scale(w[1], w[3])):  # None: nobody vouched, the exact form runs
                other = _run(p, layout, "silu", config, weights=w, scale_max=scale_max)
                assert torch.equal(other.view(torch.int16), exact.view(torch.int16)), (layout, upper_bytes, scale_max)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (inline PTX)")
@pytest.mark.parametrize("tokens", [1, 64])
def test_gpu_fragments_give_the_same_bits(tokens):
    """Weights in fragment order (MoeConfig.fragments) with their PTX decode, with and without the register prefetch,
    and with 8-warp GEMMs (GEMM1 stacked, GEMM2 on 128 rows), against their portable decode and against the shuffled bytes' decode in the same (natural) K order: the same bits;
    both layouts alike."""
    p = _problem(e=16, h=512, inter=256, t=tokens, topk=4, bias=False, dtype=torch.bfloat16, seed=50 + tokens)
    plan = dataclasses.replace(K.plan_moe(tokens, 4, p["e"], p["inter"], p["h"]), split_pairs=False, prefetch=False)
    frag = dataclasses.replace(plan, **FRAGMENT_TILES, fragments=True)
    ref = _reference(p, "silu")
    outs = []
    for layout in L.LAYOUTS:
        w = _shuffled(p, layout)
        scale_max = K.largest_scale(w[1], w[3])
        shuffled = _run(p, layout, "silu", plan, weights=w, scale_max=scale_max)
        for vouched in (scale_max, None):  # None: the fragments' portable decode
            for config in (frag, dataclasses.replace(frag, prefetch=True, prefetch_hint="", stages1=1, stages2=1),
                           dataclasses.replace(frag, stacked_gate_up=True, warps1=8, bn2=128, warps2=8)):
                got = K.moe_a16w4(p["x"], *w, p["tw"], p["ti"], layout=layout, experts=p["e"], inter=p["inter"],
                                  hidden=p["h"], activation="silu", config=config, scale_max=vouched,
                                  fragments=_fragments(p, layout))
                assert torch.equal(got.view(torch.int16), shuffled.view(torch.int16)), (layout, vouched, config)
        ok, info = _close(shuffled, ref, rel=1e-2)
        assert ok, info
        # a CUDA graph replays the fragments' call to the same bits
        fragments, static_out = _fragments(p, layout), torch.zeros_like(shuffled)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            K.moe_a16w4(p["x"], *w, p["tw"], p["ti"], layout=layout, experts=p["e"], inter=p["inter"], hidden=p["h"],
                        activation="silu", config=frag, scale_max=scale_max, fragments=fragments, out=static_out)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out.view(torch.int16), shuffled.view(torch.int16)), layout
        outs.append(shuffled)
    assert torch.equal(outs[0].view(torch.int16), outs[1].view(torch.int16))


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="needs CUDA sm_89+ (inline PTX with the e4m3 conversion)")
@pytest.mark.parametrize("tokens", [1, 64])
def test_gpu_f16_gemm1_gives_the_same_bits(tokens):
    """GEMM1's fp16 decode (x rows and weights scaled by powers of two into fp16, accumulators scaled back) against the
    default bf16 decode: the same products and sums, so the same bits; with all-zero blocks of scale byte 0 (as --pad
    makes them) and live scales 29 binades apart. Where the live scales spread further the bf16 decode runs."""
    p = _problem(e=16, h=512, inter=256, t=tokens, topk=4, dtype=torch.bfloat16, seed=50 + tokens)
    g = torch.Generator().manual_seed(tokens)
    p["s13"] = torch.randint(101, 130, p["s13"].shape, generator=g, dtype=torch.uint8).to(DEV)
    p["s13"][:, :, 0] = 101  # 29 below the largest
    p["s13"][:, :, 1] = 129
    p["q13"][:, :8, :16] = 0  # the first block of 8 rows: zeros, scale 0
    p["s13"][:, :8, 0] = 0
    plan = K.plan_moe(tokens, 4, p["e"], p["inter"], p["h"])
    live = K.live_scale_range(p["q13"], p["s13"])
    assert live == (101, 129) and K.f16_shift(live) is not None
    for layout in L.LAYOUTS:
        w = _shuffled(p, layout)
        scale_max = K.largest_scale(w[1], w[3])
        expected = _run(p, layout, "swiglu", plan, weights=w, scale_max=scale_max)
        assert torch.isfinite(expected.float()).all()
        f16 = dataclasses.replace(plan, f16_gemm1=True)
        assert "gemm1-f16" in K.pipeline_description(f16, torch.device(DEV), torch.bfloat16, scale_max, live)
        got = _run(p, layout, "swiglu", f16, weights=w, scale_max=scale_max, w13_live_scales=live)
        assert torch.equal(got.view(torch.int16), expected.view(torch.int16)), layout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (inline PTX)")
@pytest.mark.parametrize("tokens", [1, 64])
def test_gpu_split_pairs_matches_reference_and_layouts_agree_bitwise(tokens):
    """The decode plans' K order (each block's even K, then its odd K, in both operands) with the one-multiply decode:
    within the reference's tolerance, and the same bits for both layouts."""
    p = _problem(e=16, h=512, inter=256, t=tokens, topk=4, dtype=torch.bfloat16, seed=40 + tokens)
    ref = _reference(p, "swiglu")
    plan = dataclasses.replace(K.plan_moe(tokens, 4, p["e"], p["inter"], p["h"]), split_pairs=True)
    outs = {}
    for layout in L.LAYOUTS:
        w = _shuffled(p, layout)
        outs[layout] = _run(p, layout, "swiglu", plan, weights=w, scale_max=K.largest_scale(w[1], w[3]))
        assert _close(outs[layout], ref, rel=1e-2)[0], layout
    assert torch.equal(outs[L.INTERLEAVE].view(torch.int16), outs[L.SEPARATED].view(torch.int16))
