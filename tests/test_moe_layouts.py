import pytest
import torch

from rocbench.moe import shuffle_scale, shuffle_weight, unshuffle_scale, unshuffle_weight
from rocbench.formats import moe_layouts as L
from rocbench.suites.moe.reference import model_shape

INTERLEAVE, SEPARATED = L.INTERLEAVE, L.SEPARATED


# ---- an independent, literal transcription of the tile views described in layouts.py ----------
# (written as 7-d views so a mistake in the strip formulation of layouts.py would show up)

def _weight_by_tiles(w, layout, gate_up):
    e, n, kb = w.shape
    if layout == SEPARATED:  # tiles of 16 rows x 32 bytes: (e, n0, nl, k0, kl=2, kp=16)
        v = w.reshape(e, n // 16, 16, kb // 32, 2, 16)
        return v.permute(0, 1, 3, 4, 2, 5).reshape(e, n, kb)
    if gate_up:  # (e, half, n0, nl, k0, kl=4, kp=16) -> (e, n0, half, k0, kl, nl, kp)
        v = w.reshape(e, 2, n // 32, 16, kb // 64, 4, 16)
        return v.permute(0, 2, 1, 4, 5, 3, 6).reshape(e, n, kb)
    v = w.reshape(e, n // 16, 16, kb // 64, 4, 16)
    return v.permute(0, 1, 3, 4, 2, 5).reshape(e, n, kb)


def _scale_by_tiles(s, layout, gate_up, experts):
    rows, c = s.shape
    cp = (c + 7) // 8 * 8
    if layout == SEPARATED:
        rp = (rows + 255) // 256 * 256
        p = torch.full((rp, cp), 0x7F, dtype=torch.uint8)
        p[:rows, :c] = s
        v = p.reshape(rp // 32, 2, 16, cp // 8, 2, 4)
        return v.permute(0, 3, 5, 2, 4, 1).reshape(rp, cp)
    p = torch.full((rows, cp), 0x7F, dtype=torch.uint8)
    p[:, :c] = s
    n = rows // experts
    v = p.reshape(experts, 2 if gate_up else n // 32, n // 32 if gate_up else 2, 16, cp // 8, 2, 4)
    order = (0, 2, 4, 6, 3, 5, 1) if gate_up else (0, 1, 4, 6, 3, 5, 2)
    return v.permute(*order).reshape(rows, cp)


SHAPES = [  # (experts, n, k)
    (1, 32, 256), (2, 64, 256), (3, 96, 512), (2, 128, 384), (1, 64, 1024), (4, 32, 768),
    (2, 160, 128), (2, 48, 256), (3, 80, 256),
]


def _rand_w(e, n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (e, n, k // 2), generator=g, dtype=torch.uint8)


def _rand_s(e, n, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (e * n, k // 32), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("layout", L.LAYOUTS)
@pytest.mark.parametrize("gate_up", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_weight_shuffle_matches_tiles_and_inverts(layout, gate_up, shape):
    e, n, k = shape
    if L.layout_unsupported_reason(layout, e, n, k, gate_up):
        with pytest.raises(ValueError):
            shuffle_weight(_rand_w(e, n, k), layout, gate_up, e)
        return
    w = _rand_w(e, n, k)
    sw = shuffle_weight(w, layout, gate_up, e)
    assert sw.shape == w.shape and sw.dtype == torch.uint8
    assert torch.equal(sw, _weight_by_tiles(w, layout, gate_up))
    assert torch.equal(unshuffle_weight(sw, layout, gate_up, e), w)
    # the index math a kernel uses agrees with the shuffle for every byte
    ei, ri, ki = torch.meshgrid(torch.arange(e), torch.arange(n), torch.arange(k // 2), indexing="ij")
    off = L.weight_offset(layout, gate_up, n, k // 2, ei, ri, ki)
    assert torch.equal(sw.reshape(-1)[off], w)


@pytest.mark.parametrize("layout", L.LAYOUTS)
@pytest.mark.parametrize("gate_up", [True, False])
@pytest.mark.parametrize("shape", SHAPES + [(2, 64, 96), (3, 32, 160)])  # K/32 not % 8: padded
def test_scale_shuffle_matches_tiles_and_inverts(layout, gate_up, shape):
    e, n, k = shape
    s = _rand_s(e, n, k)
    if L.scale_unsupported_reason(layout, e, n, gate_up):
        with pytest.raises(ValueError):
            shuffle_scale(s, layout, gate_up, e)
        return
    ss = shuffle_scale(s, layout, gate_up, e)
    assert tuple(ss.shape) == L.shuffled_scale_shape(layout, e, n, k // 32)
    assert torch.equal(ss, _scale_by_tiles(s, layout, gate_up, e))
    assert torch.equal(unshuffle_scale(ss, layout, gate_up, e, s.shape), s)
    s3 = s.reshape(e, n, -1)
    assert torch.equal(shuffle_scale(s3, layout, gate_up, e), ss)
    assert torch.equal(unshuffle_scale(ss, layout, gate_up, e, s3.shape), s3)
    ei, ri, ci = torch.meshgrid(torch.arange(e), torch.arange(n), torch.arange(k // 32), indexing="ij")
    off = L.scale_offset(layout, gate_up, n, k // 32, ei, ri, ci)
    assert torch.equal(ss.reshape(-1)[off], s3)
    # every byte that is not a real scale is the neutral 0x7F padding
    mask = torch.ones(ss.numel(), dtype=torch.bool)
    mask[off.reshape(-1)] = False
    assert bool((ss.reshape(-1)[mask] == 0x7F).all())


def test_w2_layouts_are_byte_identical():
    # without gate_up, both layouts store the same bytes (the difference is only w13's strips)
    w, s = _rand_w(2, 64, 256), _rand_s(2, 64, 256)
    assert torch.equal(shuffle_weight(w, INTERLEAVE, False, 2), shuffle_weight(w, SEPARATED, False, 2))
    si, ss = shuffle_scale(s, INTERLEAVE, False, 2), shuffle_scale(s, SEPARATED, False, 2)
    assert torch.equal(si, ss[: si.shape[0]])


# ---- pinned, hand-derived examples ------------------------------------------------------------

def _labelled_weight(e, n, kb):
    """Byte value = 16 * (row % 16) + (kb % 16), with row // 16 and kb // 16 recovered from where
    the byte lands, so expectations below can be written by hand."""
    r = torch.arange(n).view(1, n, 1) % 16
    c = torch.arange(kb).view(1, 1, kb) % 16
    return (r * 16 + c).to(torch.uint8).expand(e, n, kb).contiguous()


def test_pinned_weight_interleave_gate_up():
    # E=1, N=64 (gate rows 0-31, up rows 32-63), K=128 -> 64 bytes per row, 4 chunks of 16 B.
    w = torch.arange(64 * 64, dtype=torch.int32).reshape(1, 64, 64)
    sw = shuffle_weight((w % 256).to(torch.uint8), INTERLEAVE, True, 1).reshape(-1)
    # strip order g0 (rows 0-15), u0 (rows 32-47), g1 (rows 16-31), u1 (rows 48-63); a strip is
    # 1024 bytes = 4 chunks x [16 rows x 16 B].
    expect = {  # flat offset -> (row, byte)
        0: (0, 0), 15: (0, 15), 16: (1, 0), 240: (15, 0), 256: (0, 16), 1023: (15, 63),
        1024: (32, 0), 1040: (33, 0), 2048: (16, 0), 3072: (48, 0), 3072 + 256 + 17: (49, 17),
    }
    for off, (row, kb) in expect.items():
        assert sw[off].item() == (row * 64 + kb) % 256, (off, row, kb)


def test_pinned_weight_separated_gate_up():
    w = torch.arange(64 * 64, dtype=torch.int32).reshape(1, 64, 64)
    sw = shuffle_weight((w % 256).to(torch.uint8), SEPARATED, True, 1).reshape(-1)
    # natural strip order: rows 16-31 in the second 1024 bytes, up rows 32-47 in the third.
    expect = {0: (0, 0), 16: (1, 0), 256: (0, 16), 512: (0, 32), 1024: (16, 0), 2048: (32, 0),
              3072 + 256 + 17: (49, 17)}
    for off, (row, kb) in expect.items():
        assert sw[off].item() == (row * 64 + kb) % 256, (off, row, kb)


def test_pinned_scale_interleave_gate_up():
    # E=1, N=32 (gate rows 0-15, up rows 16-31), K/32 = 8: exactly one 256-byte tile.
    s = torch.arange(256, dtype=torch.int32).reshape(32, 8).to(torch.uint8)  # s[r, c] = 8r + c
    out = shuffle_scale(s, INTERLEAVE, True, 1).reshape(-1).tolist()
    # byte order [kl][nl][kp][gate/up]: col = kp*4 + kl, gate row nl, up row 16 + nl
    assert out[:16] == [0, 128, 4, 132, 8, 136, 12, 140, 16, 144, 20, 148, 24, 152, 28, 156]
    assert out[64:68] == [1, 129, 5, 133]
    # N=64: tile 0 pairs gate rows 0-15 with up rows 32-47 (separated pairs rows 0-15 / 16-31)
    s64 = (torch.arange(64 * 8) % 256).to(torch.uint8).reshape(64, 8)
    assert shuffle_scale(s64, INTERLEAVE, True, 1).reshape(-1)[:2].tolist() == [0, (32 * 8) % 256]
    assert shuffle_scale(s64, SEPARATED, True, 1).reshape(-1)[:2].tolist() == [0, 16 * 8]


def test_pinned_scale_separated_straddles_experts_and_pads():
    # E=2, N=16: rows of expert 0 and expert 1 share the first 32-row tile; rows pad to 256.
    s = torch.arange(32 * 3, dtype=torch.int32).reshape(32, 3).to(torch.uint8)  # s[r, c] = 3r + c
    out = shuffle_scale(s, SEPARATED, False, 2)
    assert out.shape == (256, 8)
    flat = out.reshape(-1).tolist()
    assert flat[:4] == [0, 48, 0x7F, 0x7F]  # (row 0, col 0), (row 16 = expert 1 row 0, col 0), col 4 pad
    assert flat[64:66] == [1, 49]  # col 1
    assert flat[192:194] == [0x7F, 0x7F]  # col 3 is padding
    assert set(flat[256:]) == {0x7F}
    assert L.layout_unsupported_reason(INTERLEAVE, 2, 16, 96, False) is not None


# ---- planted bugs are caught by byte comparison ---------------------------------------------

def _swap_tiles(sw, a, b, rows=16):
    """Swap two 16-row tiles (strips) of a shuffled weight -- a plausible layout bug."""
    e, n, kb = sw.shape
    out = sw.clone().reshape(e, n // rows, rows * kb)
    out[:, [a, b]] = out[:, [b, a]]
    return out.reshape(e, n, kb)


@pytest.mark.parametrize("layout", L.LAYOUTS)
def test_planted_strip_swap_is_detected(layout):
    w = _rand_w(2, 64, 256)
    sw = shuffle_weight(w, layout, True, 2)
    bad = _swap_tiles(sw, 1, 2)
    assert not torch.equal(bad, sw)
    assert not torch.equal(unshuffle_weight(bad, layout, True, 2), w)


def test_wrong_layout_is_detected():
    w = _rand_w(2, 64, 256)
    assert not torch.equal(shuffle_weight(w, INTERLEAVE, True, 2), shuffle_weight(w, SEPARATED, True, 2))
    s = _rand_s(2, 64, 256)
    si = shuffle_scale(s, INTERLEAVE, True, 2)
    ss = shuffle_scale(s, SEPARATED, True, 2)
    assert not torch.equal(si, ss[: si.shape[0]])


# ---- unsupported shapes --------------------------------------------------------------------

def _w13_w2(cfg):
    return ((cfg["experts"], 2 * cfg["inter"], cfg["hidden"]), (cfg["experts"], cfg["hidden"], cfg["inter"]))


def test_unsupported_reasons_for_real_models():
    r = L.layout_unsupported_reason
    oss1 = model_shape("gpt-oss-120b", tp=1)  # hidden 2880, inter 2880
    (e, n13, k13), (_, n2, k2) = _w13_w2(oss1)
    assert r(SEPARATED, e, n13, k13, True) is None and r(SEPARATED, e, n2, k2, False) is None
    assert "K=2880" in r(INTERLEAVE, e, n13, k13, True)  # 1440 bytes % 64 != 0
    oss2 = model_shape("gpt-oss-120b", tp=2)
    assert "K=1440" in r(SEPARATED, e, oss2["hidden"], oss2["inter"], False)
    oss8 = model_shape("gpt-oss-120b", tp=8)
    assert oss8["inter"] == 360
    for layout in L.LAYOUTS:
        reason = r(layout, e, oss8["hidden"], oss8["inter"], False)
        assert "MX block" in reason  # 360 = 11.25 blocks of 32: not even MXFP4
    assert r(INTERLEAVE, e, 720, 2880, True) is not None
    ds8 = model_shape("deepseek-r1", tp=8)
    for cfg in (ds8,):
        (e, n13, k13), (_, n2, k2) = _w13_w2(cfg)
        for layout in L.LAYOUTS:
            assert r(layout, e, n13, k13, True) is None
            assert r(layout, e, n2, k2, False) is None
    for tp in (1, 2, 4, 8):  # the padded shapes SGLang/vLLM use on ROCm fit both layouts
        cfg = model_shape("gpt-oss-120b", tp=tp, padded=True)
        (e, n13, k13), (_, n2, k2) = _w13_w2(cfg)
        for layout in L.LAYOUTS:
            assert r(layout, e, n13, k13, True) is None, (tp, layout)
            assert r(layout, e, n2, k2, False) is None, (tp, layout)


def test_reason_messages():
    r = L.layout_unsupported_reason
    assert "16-row" in r(SEPARATED, 1, 24, 256, False)
    assert "16-row" in r(INTERLEAVE, 1, 48, 256, True)  # N/2 = 24
    assert "32-row scale" in r(INTERLEAVE, 1, 48, 256, False)
    assert "even N" in r(INTERLEAVE, 1, 33, 256, True)
    assert "unknown layout" in r("bogus", 1, 32, 256, False)
    with pytest.raises(ValueError, match="16-row"):
        shuffle_weight(torch.zeros(1, 24, 128, dtype=torch.uint8), SEPARATED, False, 1)
    with pytest.raises(ValueError, match="unknown layout"):
        shuffle_weight(torch.zeros(1, 32, 128, dtype=torch.uint8), "bogus", False, 1)


def test_deinterleave_gate_up():
    w = torch.arange(6).reshape(1, 6, 1)  # rows g0 u0 g1 u1 g2 u2
    assert L.deinterleave_gate_up(w).reshape(-1).tolist() == [0, 2, 4, 1, 3, 5]
    b = torch.arange(4.0).reshape(1, 4)
    assert L.deinterleave_gate_up(b).tolist() == [[0.0, 2.0, 1.0, 3.0]]


def test_compare_with_aiter_reports_availability():
    from rocbench.rocm.shuffle_check import compare_with_aiter

    res = compare_with_aiter()
    if not res["available"]:
        assert "aiter" in res["reason"]
    else:  # only on a ROCm box with AITER
        assert res["all_equal"], res["cases"]
