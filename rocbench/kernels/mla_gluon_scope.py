"""Where the Gluon MLA tile (rocbench.kernels.mla_gluon, `MlaKernelConfig.gluon_ws`) runs, decided without importing
it: that module needs Triton's Gluon, which changes between Triton releases (3.9 renamed its TMA copies), so it runs
only with the Triton it was written and measured with."""

from __future__ import annotations

import torch
import triton

from rocbench.formats.mla_schedule import MlaSchedule
from rocbench.formats.paged_kv import PagedKV

GLUON_TRITON = "3.6"  # the Triton whose Gluon API the kernel is written in (and which the GPU runs used)
TILE = 64  # tokens per KV block (one TMA box of a page) and the largest head tile


def unsupported_reason(q: torch.Tensor, kv: PagedKV, qlen: int, schedule: MlaSchedule) -> str | None:
    """None where mla_gluon.attend can take this call, else why not (one line)."""
    if not (q.is_cuda and torch.version.hip is None):
        return "NVIDIA GPUs only"
    major, minor = torch.cuda.get_device_capability(q.device)
    reason = case_reason("cuda", f"sm_{major}{minor}", q.dtype, kv.kv_buffer.dtype, qlen, schedule.heads_per_group,
                         kv.page_size)
    if reason is None and schedule.kv_granularity % TILE:
        return f"schedule granules of a multiple of {TILE} tokens only (a KV block is one page's TMA box)"
    if reason is None and (schedule.qlen, schedule.batch) != (1, kv.batch * qlen):
        return "a schedule over the query tokens one by one only (mla_decode.build_persistent_schedule with gluon_ws)"
    return reason


def case_reason(kind: str, arch: str | None, q_dtype: torch.dtype, kv_dtype: torch.dtype, qlen: int,
                heads_per_group: int, page_size: int) -> str | None:
    """The same from what a case and its platform say (kind and arch as rocbench.core.platform has them), before
    any tensor exists; unsupported_reason adds the schedule's granule."""
    if kind != "cuda":
        return "NVIDIA GPUs only"
    if arch != "sm_90":
        return f"Hopper (sm_90) only; this GPU is {arch}"
    if not triton.__version__.startswith(GLUON_TRITON + "."):
        return f"written in Triton {GLUON_TRITON}'s Gluon API; this is Triton {triton.__version__}"
    if q_dtype != torch.bfloat16 or kv_dtype not in (torch.bfloat16, torch.float8_e4m3fn):
        return "bf16 q with bf16 or e4m3fn KV only"
    if heads_per_group not in (16, 32, TILE) or qlen != 1 and heads_per_group != TILE:
        return (f"head tiles of 16, 32 or 64, and of 64 with more than one query token, only (qlen {qlen}, "
                f"{heads_per_group} heads)")
    if page_size % TILE:
        return f"pages of a multiple of {TILE} tokens only (a KV block is one page's TMA box)"
    return None
