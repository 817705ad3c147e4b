"""fp32 torch reference for a top-k routed MoE block (the semantics every backend is judged by).

Expert MLP: h = x @ w13[e].T (+ b13[e]); gate = h[:, :I], up = h[:, I:];
  silu:   a = silu(gate) * up
  swiglu: (gpt-oss) gate = min(gate, limit); up = clamp(up, -limit, limit);
          a = gate * sigmoid(alpha * gate) * (up + 1)
y = a @ w2[e].T (+ b2[e]); out[t] = sum_k topk_weights[t, k] * y_{t, k}.

Weights are indexed only by the experts that are actually routed to, so ``w13``/``w2``/biases
may be full tensors [E, ...] or any mapping {expert: tensor} holding just the selected experts
(dequantizing all 128 gpt-oss experts to fp32 would need ~9 GB).
"""

from __future__ import annotations

import torch

MODELS = {
    "gpt-oss-120b": dict(experts=128, topk=4, hidden=2880, inter=2880, activation="swiglu", bias=True),
    "deepseek-r1": dict(experts=256, topk=8, hidden=7168, inter=2048, activation="silu", bias=False),
}

ACTIVATIONS = ("silu", "swiglu")

# SGLang/vLLM pad MXFP4 MoE weights on ROCm so AITER's tiles fit: hidden to a multiple of 256
# and the per-rank intermediate to a multiple of 128. Exposed so a suite can state padding
# explicitly (as a separate, labelled shape) instead of padding silently.
ROCM_HIDDEN_PAD = 256
ROCM_INTER_PAD = 128


def shard_inter(inter: int, tp: int) -> int:
    """Per-rank intermediate size under tensor parallelism (column split of w13, row split of w2)."""
    if tp < 1:
        raise ValueError(f"tp must be >= 1, got {tp}")
    if inter % tp:
        raise ValueError(f"intermediate size {inter} does not divide by tp={tp}")
    return inter // tp


def rocm_padded_dims(hidden: int, inter: int) -> tuple[int, int]:
    """(hidden, inter) after the padding SGLang/vLLM apply for AITER MXFP4 MoE on ROCm."""
    def up(x, m):
        return (x + m - 1) // m * m
    return up(hidden, ROCM_HIDDEN_PAD), up(inter, ROCM_INTER_PAD)


def model_shape(model: str, tp: int = 1, padded: bool = False) -> dict:
    """Per-rank MoE shape of a known model: experts, topk, hidden, inter, activation, bias."""
    if model not in MODELS:
        raise KeyError(f"unknown model {model!r}; known: {sorted(MODELS)}")
    cfg = dict(MODELS[model])
    cfg["inter"] = shard_inter(cfg["inter"], tp)
    if padded:
        cfg["hidden"], cfg["inter"] = rocm_padded_dims(cfg["hidden"], cfg["inter"])
    cfg["tp"] = tp
    cfg["padded"] = padded
    return cfg


def route(router_logits: torch.Tensor, topk: int, renormalize: bool = True):
    """Softmax over experts (fp32), then top-k; optionally renormalize the k weights to sum 1.

    Returns (topk_weights float32 [T, k], topk_ids int32 [T, k]). Ties resolve as torch.topk does.
    """
    probs = torch.softmax(router_logits.float(), dim=-1)
    weights, ids = torch.topk(probs, topk, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.contiguous(), ids.to(torch.int32).contiguous()


def apply_activation(h: torch.Tensor, activation: str, alpha: float = 1.702, limit: float = 7.0):
    """[..., 2I] (gate half first) -> [..., I]."""
    inter = h.shape[-1] // 2
    gate, up = h[..., :inter], h[..., inter:]
    if activation == "silu":
        return torch.nn.functional.silu(gate) * up
    if activation == "swiglu":
        gate = gate.clamp(max=limit)
        up = up.clamp(min=-limit, max=limit)
        return gate * torch.sigmoid(alpha * gate) * (up + 1.0)
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def _expert_mlp(xs, w13, w2, b13, b2, activation, alpha, limit, intermediate_dtype):
    h = xs @ w13.float().t()
    if b13 is not None:
        h = h + b13.float()
    a = apply_activation(h, activation, alpha, limit)
    if intermediate_dtype is not None:  # mimic kernels that store the activation in bf16
        a = a.to(intermediate_dtype).float()
    y = a @ w2.float().t()
    if b2 is not None:
        y = y + b2.float()
    return y


def moe_reference(x, w13, w2, topk_weights, topk_ids, activation: str = "silu", b13=None, b2=None,
                  alpha: float = 1.702, limit: float = 7.0, intermediate_dtype=None) -> torch.Tensor:
    """Expert-grouped fp32 reference. Returns float32 [T, H]."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    xf = x.float()
    t, topk = topk_ids.shape
    ids = topk_ids.long()
    out = torch.zeros(t, xf.shape[1], dtype=torch.float32, device=x.device)
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        y = _expert_mlp(xf[tok], w13[e], w2[e], None if b13 is None else b13[e],
                        None if b2 is None else b2[e], activation, alpha, limit, intermediate_dtype)
        out.index_add_(0, tok, y * topk_weights[tok, slot].float().unsqueeze(1))
    return out


def moe_naive(x, w13, w2, topk_weights, topk_ids, activation: str = "silu", b13=None, b2=None,
              alpha: float = 1.702, limit: float = 7.0) -> torch.Tensor:
    """Independent token-by-token loop (slow; for tests on tiny shapes)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    t, topk = topk_ids.shape
    hidden = x.shape[1]
    out = torch.zeros(t, hidden, dtype=torch.float32)
    for i in range(t):
        xi = x[i].float().cpu()
        for j in range(topk):
            e = int(topk_ids[i, j])
            wg = w13[e].float().cpu()
            inter = wg.shape[0] // 2
            acc = torch.zeros(hidden, dtype=torch.float32)
            gate = torch.stack([torch.dot(wg[r], xi) for r in range(inter)])
            up = torch.stack([torch.dot(wg[inter + r], xi) for r in range(inter)])
            if b13 is not None:
                gate = gate + b13[e][:inter].float().cpu()
                up = up + b13[e][inter:].float().cpu()
            if activation == "silu":
                a = gate / (1.0 + torch.exp(-gate)) * up
            else:
                g = torch.minimum(gate, torch.tensor(limit))
                u = torch.clamp(up, -limit, limit)
                a = g / (1.0 + torch.exp(-alpha * g)) * (u + 1.0)
            w2e = w2[e].float().cpu()
            for h in range(hidden):
                acc[h] = torch.dot(w2e[h], a)
            if b2 is not None:
                acc = acc + b2[e].float().cpu()
            out[i] += float(topk_weights[i, j]) * acc
    return out.to(x.device)
