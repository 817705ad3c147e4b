"""scripts/mla_gluon_ablate.py's stand-ins compile into the Gluon tile offline (sm_90) and take out what they say:
the V conversion's fp16 stores, or every MMA (the consumers only wait and release)."""
import textwrap

import pytest


def test_the_ablations_compile_and_take_out_their_parts():
    pytest.importorskip("rocbench.kernels.mla_gluon", reason="this Triton has no Gluon")
    from tests.compile_only import run_offline

    script = textwrap.dedent("""
        import os, sys, tempfile
        cache = tempfile.TemporaryDirectory()
        os.environ["TRITON_CACHE_DIR"] = cache.name
        sys.path.insert(0, "scripts")
        from unittest import mock
        import torch
        import mla_gluon_ablate
        from rocbench.kernels import mla_config, mla_decode, mla_gluon, mla_gluon_scope
        from tests.compile_only import _mla_case, compile_only
        mla_gluon_ablate._swap(os.environ["ABLATE"])
        with compile_only("sm90"), mock.patch.object(mla_gluon_scope, "unsupported_reason", lambda *args: None):
            case, io, ctx = _mla_case("sm90", torch.float8_e4m3fn, 64, 1, 2, True)
            config = mla_config.gluon_ws_config(torch.float8_e4m3fn, 64, 1)
            lens = [int(x) for x in io.kv.seq_lens]
            schedule = mla_decode.build_persistent_schedule(lens, 1, 64, 132, config, kv_element_bytes=1)
            mla_decode.mla_decode_persistent(io.q, io.kv, schedule, 0.1, 1, io.out, config=config)
        (kernel,) = mla_gluon._kernel.device_caches[0][0].values()
        ttgir = kernel.asm["ttgir"]
        print(ttgir.count("warp_group_dot "), ttgir.count("tt.fp_to_fp"))  # MMAs, fp8 -> fp16 conversions
    """)
    counts = {}
    for variant in ("full", "no_v_convert", "stream_only"):
        counts[variant] = [int(n) for n in run_offline(f"import os; os.environ['ABLATE'] = {variant!r}\n" + script)
                           .split()]
    full_mmas, full_converts = counts["full"]
    assert full_mmas > 0 and full_converts > 0, counts
    assert counts["no_v_convert"] == [full_mmas, 0], counts  # the MMAs stay, V's conversions go
    assert counts["stream_only"] == [0, 0], counts
