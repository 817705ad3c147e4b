"""The MoE suite end to end on CPU: Triton under the interpreter with fp16 activations."""
import dataclasses

import pytest

from tests.helpers import latest_run, needs_interpreter, results, invoke

TINY = ["--experts", "4", "--topk", "2", "--hidden", "128", "--inter", "256", "--x-dtype", "fp16"]


@needs_interpreter()
def test_both_layouts_pass_and_agree_bitwise(tmp_path):
    proc = invoke("moe", *TINY, "--tp", "2", "--tokens", "1", "--activation", "swiglu", "--out", str(tmp_path),
                  probes=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    frame = results(latest_run(tmp_path, "moe"))
    assert len(frame) == 2
    assert set(frame["status"]) == {"pass"}, frame[["case", "detail"]].to_string()
    assert set(frame["layouts_bitwise"]) == {"yes"}
    assert set(frame["layout"]) == {"interleave", "separated"} and set(frame["inter"]) == {128}  # 256 / TP 2
    assert frame["path"].str.contains(" prefetch ").all()  # a decode plan with 4-block K steps, and the row says so
    assert frame[["speedup_vs_interleave_kernel", "speedup_vs_interleave_graph"]].isna().all().all()
    assert set(frame["batch_invariant"]) == {"yes"}  # tiny shapes: one plan for every probed batch  # nothing is timed on a CPU


@needs_interpreter()
def test_a_shape_a_layout_cannot_take_is_unsupported_with_reason(tmp_path):
    proc = invoke("moe", "--experts", "4", "--topk", "2", "--hidden", "64", "--inter", "128", "--tp", "1",
                    "--tokens", "2", "--x-dtype", "fp16", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:]
    frame = results(latest_run(tmp_path, "moe"))
    row = frame[frame["layout"] == "interleave"].iloc[0]
    assert row["status"] == "unsupported" and "not a multiple" in row["detail"]
    assert frame[frame["layout"] == "separated"].iloc[0]["status"] == "pass"


@pytest.mark.parametrize("args, message", [
    (["--model", "llama"], "unknown value"),
    (["--tp", "3"], "not one of"),
    (["--experts", "8"], "go together"),
    (["--experts", "4", "--topk", "8", "--hidden", "128", "--inter", "128"], "exceeds"),
    (["--experts", "4", "--topk", "2", "--hidden", "100", "--inter", "128"], "multiples of the MX block"),
    (["--layout", "blocked"], "unknown value"),
    (["--tp", "0"], "not one of"),
])
def test_moe_bad_input(args, message, tmp_path):
    proc = invoke("moe", *args, "--out", str(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@needs_interpreter()
def test_unpadded_tp_shard_that_breaks_mx_blocks_is_unsupported_and_judges_nothing(tmp_path):
    """gpt-oss-120b at TP8 has 360 intermediate columns per rank: not whole MX blocks without padding. Every row is
    unsupported, so nothing was judged: that is exit 3, not a pass (--correctness-only in CI must not go green)."""
    proc = invoke("moe", "--experts", "4", "--topk", "2", "--hidden", "128", "--inter", "2880", "--tp", "8",
                  "--tokens", "2", "--x-dtype", "fp16", "--correctness-only", "--out", str(tmp_path))
    assert proc.returncode == 3 and "nothing ran that could be judged (exit 3)" in proc.stdout, proc.stdout
    frame = results(latest_run(tmp_path, "moe"))
    assert set(frame["status"]) == {"unsupported"} and frame["detail"].str.contains("--pad").all()


def test_only_triton_re_tiles_and_triton_layout_runs_when_named(monkeypatch):
    """On NVIDIA `triton`'s plans take the weights re-tiled into fragment order; `triton_layout` keeps the plan that
    reads the layout's own bytes (also against a tuned config that re-tiles, and in its --tune candidates) and is not
    in the default backends; `triton`'s --tune also tries the candidates around the layout-bytes plan."""
    from types import SimpleNamespace

    from rocbench.kernels import moe_plan
    from rocbench.suites.moe import SUITE

    monkeypatch.setattr(moe_plan, "cache_hint_available", lambda device: True)  # as on an NVIDIA GPU
    case = dict(tokens=64, topk=4, experts=128, inter=3072, hidden=3072)
    ctx = SimpleNamespace(platform=SimpleNamespace(grid_sms=132), device="cuda")
    retiling, layout_bytes = SUITE.backends.get("triton"), SUITE.backends.get("triton_layout")
    assert retiling.heuristic(case, ctx).fragments and not layout_bytes.heuristic(case, ctx).fragments
    stored = dataclasses.asdict(retiling.heuristic(case, ctx))
    monkeypatch.setattr(moe_plan.tuned, "lookup", lambda *args: stored)
    assert moe_plan.plan_moe(*retiling.shape(case), 132, "cuda").fragments  # what a tuned store hands both
    prepared = []
    monkeypatch.setattr(type(layout_bytes), "prepare_with", lambda self, case, io, ctx, config, source:
                        prepared.append((config, source)))
    layout_bytes.prepare(case, None, ctx)
    assert prepared == [(layout_bytes.heuristic(case, ctx), "heuristic")]
    assert layout_bytes.on_request and not retiling.on_request
    monkeypatch.setattr(moe_plan.tuned, "lookup", lambda *args: None)
    tuning = layout_bytes.tuning(case, ctx)
    assert tuning.candidates and not any(config.fragments for config in tuning.candidates.values())
    tuning = retiling.tuning(case, ctx)
    assert tuning.candidates["plan"].fragments and not tuning.candidates["layout bytes: plan"].fragments
