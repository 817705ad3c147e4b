"""Our MXFP4 layout bytes against AITER's own shuffles (aiter/ops/shuffle.py), where AITER imports."""
from __future__ import annotations

import torch

from rocbench.formats.moe_layouts import INTERLEAVE, LAYOUTS, layout_unsupported_reason, scale_offset, shuffle_scale, shuffle_weight


def compare_with_aiter(shapes=None, device: str | None = None, seed: int = 0) -> dict:
    """Compare our bytes with AITER's shuffles for a few shapes.

    Returns {"available": False, "reason": ...} when ``import aiter`` fails, else
    {"available": True, "cases": [...], "all_equal": bool}. For the separated scale only the
    bytes that come from real scales are compared (AITER leaves its padding uninitialised).
    """
    try:
        from aiter.ops.shuffle import shuffle_scale as aiter_shuffle_scale
        from aiter.ops.shuffle import shuffle_scale_a16w4, shuffle_weight_a16w4
        from aiter.ops.shuffle import shuffle_weight as aiter_shuffle_weight
    except Exception as exc:  # ImportError, or AITER failing without ROCm
        return {"available": False, "reason": f"import aiter.ops.shuffle failed: {exc!r}"}
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if shapes is None:
        shapes = [(2, 64, 256), (3, 96, 512), (2, 32, 1024)]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    cases = []
    for experts, n, k in shapes:
        for gate_up in (True, False):
            for layout in LAYOUTS:
                if layout_unsupported_reason(layout, experts, n, k, gate_up) is not None:
                    continue
                w = torch.randint(0, 256, (experts, n, k // 2), generator=gen, dtype=torch.uint8)
                s = torch.randint(100, 140, (experts * n, k // 32), generator=gen, dtype=torch.uint8)
                w, s = w.to(device), s.to(device)
                if layout == INTERLEAVE:
                    aw = shuffle_weight_a16w4(w, 16, gate_up)
                    as_ = shuffle_scale_a16w4(s, experts, gate_up)
                else:
                    aw = aiter_shuffle_weight(w, is_guinterleave=False, gate_up=gate_up)
                    as_ = aiter_shuffle_scale(s, experts_cnt=experts, is_guinterleave=False, gate_up=gate_up)
                ow = shuffle_weight(w, layout, gate_up, experts)
                os_ = shuffle_scale(s, layout, gate_up, experts)
                weight_equal = torch.equal(aw.view(torch.uint8).reshape(ow.shape), ow)
                as_ = as_.view(torch.uint8)
                shape_equal = tuple(as_.shape) == tuple(os_.shape)
                scale_equal = False
                if shape_equal:
                    rows = torch.arange(experts * n, device=device).repeat_interleave(k // 32)
                    cols = torch.arange(k // 32, device=device).repeat(experts * n)
                    e_idx, r_idx = rows // n, rows % n
                    off = scale_offset(layout, gate_up, n, k // 32, e_idx, r_idx, cols)
                    scale_equal = torch.equal(as_.reshape(-1)[off], os_.reshape(-1)[off])
                cases.append(dict(layout=layout, gate_up=gate_up, experts=experts, n=n, k=k,
                                  weight_equal=weight_equal, scale_shape_equal=shape_equal,
                                  scale_equal=scale_equal))
    return {"available": True, "cases": cases,
            "all_equal": all(c["weight_equal"] and c["scale_equal"] for c in cases)}
