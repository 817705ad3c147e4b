"""The Gluon A/B kernel of scripts/mla_gluon_ws.py (plugin `triton_gluon_ws`): q's fp8 split everywhere Triton runs, the
kernels themselves (64-row tiles, and 16-32 rows with the tokens on M) on a Hopper GPU against the reference, where the
benchmark's rows do not reach (a sequence's partial last block read from before its page, pages of 128 tokens, split
units merged by the reduce)."""
import sys
from pathlib import Path

import pytest
import torch

from rocbench.formats.paged_kv import build_paged_kv, make_query
from rocbench.kernels import mla_config, mla_decode
from rocbench.suites.mla.reference import mla_decode_reference
from tests.helpers import needs_interpreter
from tests.test_mla_kernels import SM_SCALE, assert_matches_reference

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
mla_gluon_ws = pytest.importorskip("mla_gluon_ws", reason="this Triton has no Gluon (3.6 has)")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NVIDIA = torch.cuda.is_available() and torch.version.hip is None  # ROCm's gfx942 reports capability 9.4 too
HOPPER = NVIDIA and torch.cuda.get_device_capability()[0] == 9
E4M3FN = DEVICE == "cpu" or NVIDIA and torch.cuda.get_device_capability() >= (8, 9)  # Triton's e4m3fn type


@needs_interpreter(on_cpu_only=True)
@pytest.mark.skipif(not E4M3FN, reason="Triton's e4m3fn type needs NVIDIA sm_89+ (ROCm has e4m3fnuz)")
@pytest.mark.gpu
def test_q_split_into_two_fp8_parts_keeps_bf16_precision():
    """hi * hi_scale + lo * lo_scale gives q back to about bf16's precision (one part alone: 2^-4 of a row's largest)."""
    rows = 75  # four programs of SPLIT_ROWS 16 and a partial fifth
    q = make_query(5, 16, torch.bfloat16, torch.Generator().manual_seed(3), DEVICE).view(80, 576)[:rows].contiguous()
    # row 0: 448 (hi_scale 1) and e4m3's rounding ties, normal and subnormal (2^-9 apart below 2^-6), both signs
    ties = torch.tensor([17.0, 19.0, 9.0, 11.0, 1.0625, 1.1875, 3 * 2.0**-10, 5 * 2.0**-10, 448.0, 0.0])
    q[0] = torch.cat([ties, -ties] * 29)[:576].to(q.dtype)
    hi, lo = (torch.empty(rows, 576, dtype=torch.float8_e4m3fn, device=DEVICE) for _ in range(2))
    hi_scale, lo_scale = (torch.empty(rows, device=DEVICE) for _ in range(2))
    mla_gluon_ws.split_q(q, hi, lo, hi_scale, lo_scale)
    rebuilt = hi.float() * hi_scale[:, None] + lo.float() * lo_scale[:, None]
    row_max = q.float().abs().amax(1)
    assert ((rebuilt - q.float()).abs().amax(1) <= row_max * 2.0**-7).all()
    assert ((hi.float() * hi_scale[:, None] - q.float()).abs().amax(1) > row_max * 2.0**-7).any()  # lo matters
    if DEVICE == "cpu":  # the interpreter divides exactly: hi is torch's round-to-nearest-even cast, ties included
        assert torch.equal(hi.float(), (q.float() / hi_scale[:, None]).to(torch.float8_e4m3fn).float())


@pytest.mark.skipif(not HOPPER, reason="a Hopper (sm_90) kernel")
@pytest.mark.gpu
@pytest.mark.timeout(120, method="thread")  # a kernel waiting on an mbarrier forever: fail the worker, not the run
@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float8_e4m3fn])
@pytest.mark.parametrize("page_size,nhead,programs", [(64, 64, 132), (128, 128, 132), (64, 128, 7), (64, 16, 132),
                                                       (128, 32, 7)])
def test_gluon_ws_matches_reference(kv_dtype, page_size, nhead, programs):
    lens = [175, 2793, 64, 700, 1]  # partial last blocks, a whole one, one token
    g = torch.Generator().manual_seed(page_size + nhead + programs)
    kv = build_paged_kv(lens, page_size, kv_dtype, g, "cpu").to(DEVICE)
    q = make_query(len(lens), nhead, torch.bfloat16, g, DEVICE)
    ref, _ = mla_decode_reference(q, kv, SM_SCALE, 1)
    config = mla_config.BF16_LARGE_TILE_CONFIG if nhead >= 64 else mla_config.MlaKernelConfig(max_tile_rows=32)
    schedule = mla_decode.build_persistent_schedule(lens, 1, nhead, programs, config,
                                                    kv_element_bytes=kv.kv_buffer.element_size()).to(DEVICE)
    assert mla_gluon_ws.unsupported_reason(q, kv, 1) is None
    out = torch.full((len(lens), nhead, 512), float("nan"), dtype=q.dtype, device=DEVICE)
    mla_gluon_ws.run(q, kv, schedule, SM_SCALE, out, mla_decode.alloc_persistent_workspace(schedule, DEVICE))
    assert_matches_reference(out, ref, torch.bfloat16)
