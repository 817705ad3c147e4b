"""Stand-in for aiter/fused_moe.py's fused_moe (same signature) for MXFP4 weights (per_1x32).

It refuses weights that are not preshuffled float4_e2m1fn_x2 with is_shuffled set on both (AITER
would pick kernels for unshuffled bytes), undoes the layout named by gate_mode with rocbench's public
layout functions, and computes in fp32 with the activation precision AITER's rule picks for this
arch, layout, activation and token count (bf16, fp8 or fp4, aiter/fused_moe.py:768-797). Padded
columns (hidden_pad / intermediate_pad) are skipped; padded output columns are left NaN.
"""
from __future__ import annotations

from enum import Enum

import torch

from aiter import _standin
from aiter.ops.enum import ActivationType, QuantType
from rocbench.moe import dequantize_mxfp4, quantize_mxfp4, unshuffle_scale, unshuffle_weight

FP4X2 = getattr(torch, "float4_e2m1fn_x2", torch.uint8)


class GateMode(Enum):
    SEPARATED = "separated"
    INTERLEAVE = "interleave"


def _activation_dtype(activation, gate_mode: str, tokens: int) -> str:
    if activation == ActivationType.Swiglu and gate_mode == GateMode.SEPARATED.value:
        return "bf16" if tokens < 256 else "fp4"
    if activation == ActivationType.Swiglu or gate_mode == GateMode.INTERLEAVE.value:
        return "fp8" if _standin.arch() == "gfx950" and tokens >= 256 else "bf16"
    return "fp4"


def _quantized(a: torch.Tensor, kind: str) -> torch.Tensor:
    """What a kernel that quantizes its activations to `kind` sees (per row for fp8, MX blocks for fp4)."""
    if kind == "fp4":
        return dequantize_mxfp4(*quantize_mxfp4(a))
    if kind == "fp8":
        scale = a.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / torch.finfo(_standin.fp8()).max
        return (a / scale).to(_standin.fp8()).float() * scale
    return a.to(torch.bfloat16).float()


def _weights(w, scale, layout: str, gate_up: bool) -> torch.Tensor:
    if w.dtype != FP4X2 or not getattr(w, "is_shuffled", False):
        raise RuntimeError(f"fused_moe: MXFP4 weights must be preshuffled {FP4X2} with is_shuffled=True "
                           f"(got {w.dtype}, is_shuffled={getattr(w, 'is_shuffled', False)}): AITER would run "
                           "kernels meant for unshuffled bytes")
    experts, n, kbytes = w.shape
    packed = unshuffle_weight(w.view(torch.uint8), layout, gate_up, experts)
    scales = unshuffle_scale(scale.view(torch.uint8), layout, gate_up, experts, (experts, n, kbytes * 2 // 32))
    return dequantize_mxfp4(packed, scales)


def fused_moe(
    hidden_states,
    w1,
    w2,
    topk_weight,
    topk_ids,
    expert_mask: torch.Tensor | None = None,
    activation=ActivationType.Silu,
    quant_type=QuantType.No,
    doweight_stage1=False,
    w1_scale: torch.Tensor | None = None,
    w2_scale: torch.Tensor | None = None,
    a1_scale: torch.Tensor | None = None,
    a2_scale: torch.Tensor | None = None,
    block_size_M=None,
    num_local_tokens: torch.Tensor | None = None,
    moe_sorting_dispatch_policy=0,
    dtype=None,
    # following for cktile support
    hidden_pad=0,
    intermediate_pad=0,
    bias1=None,
    bias2=None,
    splitk=0,
    swiglu_limit=None,
    beta=None,
    linear_beta=None,
    gate_mode: str | None = GateMode.SEPARATED.value,
    shared_w1: torch.Tensor | None = None,
    shared_w2: torch.Tensor | None = None,
    shared_w1_scale: torch.Tensor | None = None,
    shared_w2_scale: torch.Tensor | None = None,
    shared_expert_id: int = -1,
    stage2_scatter=None,
):
    if hidden_states.dtype not in (torch.bfloat16, torch.float16):
        raise AssertionError(f"Fused_moe unsupported out dtype: {hidden_states.dtype}")
    if quant_type != QuantType.per_1x32 or gate_mode not in (GateMode.SEPARATED.value, GateMode.INTERLEAVE.value):
        raise RuntimeError(f"stand-in covers MXFP4 (per_1x32) with a gate_mode only, got {quant_type}, {gate_mode!r}")
    for bias in (bias1, bias2):
        if bias is not None and bias.dtype != torch.float32:
            raise RuntimeError(f"fused_moe: biases must be fp32, got {bias.dtype}")
    tokens, hidden = hidden_states.shape
    w13 = _weights(w1, w1_scale, gate_mode, True)  # [E, 2I, H]
    w2f = _weights(w2, w2_scale, gate_mode, False)  # [E, H, I]
    inter = w13.shape[1] // 2
    h_real, i_real = hidden - hidden_pad, inter - intermediate_pad
    kind = _activation_dtype(activation, gate_mode, tokens)
    _standin.record("fused_moe", activations=kind, gate_mode=gate_mode, hidden_pad=hidden_pad,
                    intermediate_pad=intermediate_pad)
    x = _quantized(hidden_states[:, :h_real].float(), kind)
    out = torch.full((tokens, hidden), float("nan"))
    out[:, :h_real] = 0.0
    for t in range(tokens):
        for slot in range(topk_ids.shape[1]):
            e = int(topk_ids[t, slot])
            h = w13[e][:, :h_real] @ x[t]
            if bias1 is not None:
                h = h + bias1[e]
            gate, up = h[:i_real], h[inter:inter + i_real]
            if activation == ActivationType.Swiglu:
                gate, up = gate.clamp(max=swiglu_limit), up.clamp(-swiglu_limit, swiglu_limit)
                a = gate * torch.sigmoid(1.702 * gate) * (up + 1)
            else:
                a = torch.nn.functional.silu(gate) * up
            y = w2f[e][:h_real, :i_real] @ _quantized(a[None], kind)[0]
            if bias2 is not None:
                y = y + bias2[e][:h_real]
            out[t, :h_real] += float(topk_weight[t, slot]) * y
    return out.to(hidden_states.dtype)
