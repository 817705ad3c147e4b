"""SGLang's gate for AITER's persistent MLA decode, in one place (seed PR #27188).

Before the fix nhead 64 (DeepSeek-R1 at TP2) was missing from the fast-mode list, so the
persistent kernel ran with the wrong scheduling-metadata mode and faulted. Every MLA row prints
the decision this function makes, so that class of bug is visible per case.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rocbench.formats.fp8 import is_fp8

FAST_MODE_HEADS = (32, 64, 128)


@dataclass(frozen=True)
class MlaPathDecision:
    persistent: bool  # whether the persistent (metadata-driven) kernel runs
    fast_mode: bool
    intra_batch_mode: bool
    reason: str

    def label(self) -> str:
        path = "persistent" if self.persistent else "non-persistent"
        return f"{path} fast_mode={self.fast_mode} intra_batch_mode={self.intra_batch_mode}"


def padded_heads(nhead: int) -> int:
    """AITER's decode kernels run 16-head tiles: fewer heads are padded up to 16."""
    return max(16, nhead)


def aiter_mla_policy(nhead: int, kv_dtype: torch.dtype, persist_requested: bool) -> MlaPathDecision:
    if not persist_requested:
        return MlaPathDecision(False, False, False, "persistent not requested")
    fast_mode, intra_batch_mode = False, True  # AITER's defaults when no rule below applies
    reason = f"nhead {nhead} not in {FAST_MODE_HEADS}: default metadata mode"
    if nhead in FAST_MODE_HEADS:
        fast_mode, intra_batch_mode = True, False
        reason = f"nhead {nhead} in {FAST_MODE_HEADS}: fast_mode"
    if padded_heads(nhead) in (16, 128) and not is_fp8(kv_dtype):
        # the persistent a16w16 kernel has no 128-head variant and only qh16 emulates fake-nps
        return MlaPathDecision(False, False, False, f"padded heads {padded_heads(nhead)} with non-fp8 KV: "
                                                    "no persistent a16w16 kernel, falls back")
    return MlaPathDecision(True, fast_mode, intra_batch_mode, reason)


def policy_table(nheads=(16, 32, 64, 128), kv_dtypes=(torch.bfloat16, torch.float8_e4m3fn)) -> list[dict]:
    rows = []
    for nhead in nheads:
        for kv_dtype in kv_dtypes:
            for persist in (False, True):
                decision = aiter_mla_policy(nhead, kv_dtype, persist)
                rows.append({"nhead": nhead, "tp (DeepSeek-R1)": 128 // nhead, "kv": str(kv_dtype).removeprefix("torch."),
                             "persist asked": persist, "path": "persistent" if decision.persistent else "non-persistent",
                             "fast_mode": decision.fast_mode, "intra_batch_mode": decision.intra_batch_mode,
                             "why": decision.reason})
    return rows
