"""AITER's MLA decode rules, in one place: SGLang's gate for the persistent kernel (seed PR #27188), its split
count, and what the aiter backend runs for a case (the query dtype, the path, the asm kernel from AITER's tables).

Before the fix nhead 64 (DeepSeek-R1 at TP2) was missing from the fast-mode list, so the
persistent kernel ran with the wrong scheduling-metadata mode and faulted. Every MLA row prints
the decision this function makes, so that class of bug is visible per case.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rocbench.core.axes import Case, dtype_name
from rocbench.core.platform import PlatformInfo
from rocbench.formats.fp8 import fp8_for_arch, is_fp8
from rocbench.rocm.mla_coverage import Coverage, MlaRequest, coverage

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


def aiter_max_split_per_batch(qlen: int) -> int:
    """SGLang's aiter backend: 64 KV splits per batch for plain decode, 32 with draft tokens (MTP)."""
    return 64 if qlen == 1 else 32


@dataclass(frozen=True)
class AiterMlaPlan:
    """What the aiter backend runs for a case, decided without AITER's kernels (tables only)."""

    q_dtype: torch.dtype | None  # the query dtype the kernel gets (the cache's fp8 for an fp8 cache)
    decision: MlaPathDecision | None
    coverage: Coverage | None
    reason: str | None  # why the case is unsupported
    qlen: int = 1

    def describe(self) -> str:
        if self.reason:
            return self.reason
        q = "q bf16" if self.q_dtype == torch.bfloat16 else f"q cast to {dtype_name(self.q_dtype)} (q_scale 1, SGLang's fp8-KV path) in the call"
        fold = f" heads folded {self.coverage.fold}x" if self.coverage.fold > 1 else ""
        split = f" max_split_per_batch={self.split}" if self.decision.persistent else ""
        return f"{self.decision.label()}{split}; {q}; kernel {self.coverage.kernel}{fold}"

    @property
    def split(self) -> int:
        return aiter_max_split_per_batch(self.qlen)


def aiter_mla_plan(case: Case, platform: PlatformInfo) -> AiterMlaPlan:
    from rocbench.rocm import aiter_install

    kv, fp8 = case["kv_dtype"], fp8_for_arch(platform.arch)
    if case["q_dtype"] != torch.bfloat16:
        return AiterMlaPlan(None, None, None, f"AITER's MLA decode takes bf16 queries, not {dtype_name(case['q_dtype'])}")
    if is_fp8(kv) and kv != fp8:
        return AiterMlaPlan(None, None, None, f"{platform.arch}'s AITER fp8 is {dtype_name(fp8)}, not {dtype_name(kv)}")
    if kv not in (torch.bfloat16, fp8):
        return AiterMlaPlan(None, None, None, f"AITER's MLA decode takes a bf16 or fp8 KV cache, not {dtype_name(kv)}")
    q_dtype = fp8 if kv == fp8 else torch.bfloat16
    decision = aiter_mla_policy(case["nhead"], kv, case["persist"])
    request = MlaRequest(platform.arch, "fp8" if is_fp8(q_dtype) else "bf16", "fp8" if is_fp8(kv) else "bf16",
                         case["nhead"], case["qlen"], decision.persistent)
    found = coverage(request, aiter_install.asm_dir())
    return AiterMlaPlan(q_dtype, decision, found, found.reason, case["qlen"])
