import pytest
import torch

from rocbench.suites.moe.reference import (MODELS, apply_activation, model_shape, moe_naive,
                                           moe_reference, rocm_padded_dims, route, shard_inter)


def _problem(t=5, e=6, k=2, h=32, inter=16, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, h, generator=g)
    w13 = torch.randn(e, 2 * inter, h, generator=g) * 0.3
    w2 = torch.randn(e, h, inter, generator=g) * 0.3
    b13 = torch.randn(e, 2 * inter, generator=g) if bias else None
    b2 = torch.randn(e, h, generator=g) if bias else None
    logits = torch.randn(t, e, generator=g)
    tw, ti = route(logits, k, renormalize=True)
    return x, w13, w2, b13, b2, tw, ti


@pytest.mark.parametrize("activation", ["silu", "swiglu"])
@pytest.mark.parametrize("bias", [True, False])
def test_reference_matches_naive_loop(activation, bias):
    x, w13, w2, b13, b2, tw, ti = _problem(bias=bias)
    ref = moe_reference(x, w13, w2, tw, ti, activation, b13, b2)
    naive = moe_naive(x, w13, w2, tw, ti, activation, b13, b2)
    assert ref.dtype == torch.float32 and ref.shape == x.shape
    torch.testing.assert_close(ref, naive, rtol=1e-5, atol=1e-5)


def test_swiglu_clamps_engage_and_match():
    # large weights push gate/up past the clamp limit so both clamps are exercised
    x, w13, w2, b13, b2, tw, ti = _problem(seed=3)
    w13 = w13 * 20
    h = x @ w13[0].t()
    assert h.abs().max() > 7.0
    ref = moe_reference(x, w13, w2, tw, ti, "swiglu", b13, b2, alpha=1.5, limit=3.0)
    naive = moe_naive(x, w13, w2, tw, ti, "swiglu", b13, b2, alpha=1.5, limit=3.0)
    torch.testing.assert_close(ref, naive, rtol=1e-5, atol=1e-4)


def test_activation_hand_values():
    h = torch.tensor([[10.0, -10.0, 1.0, 8.0, -9.0, 2.0]])  # gate = [10, -10, 1], up = [8, -9, 2]
    a = apply_activation(h, "swiglu", alpha=1.702, limit=7.0)
    sig = torch.sigmoid
    expect = torch.tensor([
        7.0 * sig(torch.tensor(1.702 * 7.0)) * (7.0 + 1),  # gate clamps to 7, up clamps to 7
        -10.0 * sig(torch.tensor(-17.02)) * (-7.0 + 1),  # gate has no lower clamp, up clamps to -7
        1.0 * sig(torch.tensor(1.702)) * 3.0,
    ])
    torch.testing.assert_close(a[0], expect)
    s = apply_activation(h, "silu")
    torch.testing.assert_close(s[0], torch.nn.functional.silu(h[0, :3]) * h[0, 3:])
    with pytest.raises(ValueError):
        apply_activation(h, "gelu")


def test_route():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0], [3.0, 0.0, 0.0, 3.5]])
    w, i = route(logits, 2, renormalize=False)
    assert i.dtype == torch.int32 and w.dtype == torch.float32
    assert i.tolist() == [[1, 2], [3, 0]]
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(w[0], p[0, [1, 2]])
    wn, _ = route(logits, 2, renormalize=True)
    torch.testing.assert_close(wn.sum(-1), torch.ones(2))


def test_reference_accepts_selected_experts_only():
    x, w13, w2, b13, b2, tw, ti = _problem()
    used = sorted(set(ti.reshape(-1).tolist()))
    def pick(t):
        return {e: t[e] for e in used}

    full = moe_reference(x, w13, w2, tw, ti, "swiglu", b13, b2)
    part = moe_reference(x, pick(w13), pick(w2), tw, ti, "swiglu", pick(b13), pick(b2))
    assert torch.equal(full, part)


def test_intermediate_rounding_option():
    x, w13, w2, b13, b2, tw, ti = _problem()
    a = moe_reference(x, w13, w2, tw, ti, "silu", b13, b2)
    b = moe_reference(x, w13, w2, tw, ti, "silu", b13, b2, intermediate_dtype=torch.bfloat16)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_models_and_sharding():
    assert MODELS["gpt-oss-120b"]["experts"] == 128 and MODELS["deepseek-r1"]["topk"] == 8
    assert [shard_inter(2880, tp) for tp in (1, 2, 4, 8)] == [2880, 1440, 720, 360]
    assert shard_inter(2048, 8) == 256
    with pytest.raises(ValueError):
        shard_inter(2880, 7)
    with pytest.raises(ValueError):
        shard_inter(2880, 0)
    assert rocm_padded_dims(2880, 360) == (3072, 384)
    cfg = model_shape("gpt-oss-120b", tp=8, padded=True)
    assert (cfg["hidden"], cfg["inter"], cfg["activation"], cfg["bias"]) == (3072, 384, "swiglu", True)
    with pytest.raises(KeyError):
        model_shape("nope")
