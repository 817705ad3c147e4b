"""The MoE suite end to end on CPU: Triton under the interpreter with fp16 activations."""
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
