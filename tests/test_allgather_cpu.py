"""All-gather on CPU with gloo: the CI correctness run, the gate's teeth, bad input, output schema."""
import pytest
import torch

from rocbench.core.results import RESULT_COLUMNS
from rocbench.suites.allgather.suite import ALL_DTYPES
from tests.helpers import latest_run, meta, results, invoke

ALL_DTYPE_NAMES = ",".join(str(d).removeprefix("torch.") for d in ALL_DTYPES)
SMALL_SHAPES = "1x24,3x40,2x5"  # odd byte counts and rows too


@pytest.mark.parametrize("tp, shapes", [(2, SMALL_SHAPES), (4, "2x5"), (8, "2x5")])
def test_correctness_only_all_dtypes_both_dims(tp, shapes, tmp_path):
    proc = invoke("allgather", "--tp", str(tp), "--correctness-only", "--shapes", shapes, "--skip-batch-probes",
                  "--dtypes", ALL_DTYPE_NAMES, "--dims", "0,-1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = results(latest_run(tmp_path, "allgather"))
    assert len(frame) == len(shapes.split(",")) * 10 * 2
    assert set(frame["status"]) == {"pass"}, frame[frame.status != "pass"][["case", "detail"]].to_string()
    assert set(frame["deterministic"]) == {"yes"}
    assert (frame["tp"] == tp).all()
    assert f"{len(frame)} passed, 0 failed" in proc.stdout


def test_expected_output_layout_for_last_dim():
    """dim -1 puts rank slices side by side in every row (vocab-sharded logits)."""
    from rocbench.core.suite import RankContext
    from rocbench.core.platform import detect
    from rocbench.suites.allgather import SUITE

    case = SUITE.cases({"tp": 2, "shapes": [(2, 3)], "dtypes": [torch.int32], "dims": [-1]})[0]
    ctx = RankContext(0, 2, torch.device("cpu"), detect(), seed=0)
    io = SUITE.build_io(case, ctx)
    expected = SUITE.fill(case, io, ctx, data_seed=0)
    r0 = SUITE.rank_input(case, 0, 0, 0, ctx.device)
    r1 = SUITE.rank_input(case, 1, 0, 0, ctx.device)
    assert expected.shape == (2, 6)
    assert torch.equal(expected[:, :3], r0) and torch.equal(expected[:, 3:], r1)
    assert torch.equal(io.inp, r0)


def test_float_inputs_carry_special_values():
    from rocbench.suites.allgather import SUITE

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        case = SUITE.cases({"tp": 2, "shapes": [(4, 16)], "dtypes": [dtype], "dims": [0]})[0]
        x = SUITE.rank_input(case, 1, 0, 0, torch.device("cpu")).float()
        assert torch.isnan(x).any() and torch.isinf(x).any()
        assert ((x == 0) & torch.signbit(x)).any()  # -0.0


def test_inject_needs_the_test_flag(tmp_path):
    proc = invoke("allgather", "--tp", "2", "--inject", "flip-byte", "--out", str(tmp_path), env={"ROCBENCH_ALLOW_INJECT": ""})
    assert proc.returncode == 2 and "test-only" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--tp", "1"], "at least 2 ranks"),
    (["--tp", "two"], "--tp"),
    (["--tp", "2", "--shapes", "64x"], "not a shape"),
    (["--tp", "2", "--shapes", "64x16160,,1x2"], "empty item"),
    (["--tp", "2", "--dtypes", "bfloat17"], "unknown dtype"),
    (["--tp", "2", "--dtypes", "float64"], "not supported"),
    (["--tp", "2", "--dims", "2", "--shapes", "4x4"], "out of range"),
    (["--tp", "2", "--backends", "nccl2"], "unknown backend"),
    (["--tp", "2", "--backends", "custom"], "not available here"),
    (["--tp", "2", "--cuda-graph"], "needs a GPU"),
    (["--tp", "1024"], "at most 64 gloo ranks"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    proc = invoke("allgather", *args, "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rocbench: error:") and message in lines[0], proc.stderr
    assert not list(tmp_path.iterdir()), "a rejected command must not create a run directory"


def test_csv_and_meta_schema(tmp_path):
    proc = invoke("allgather", "--tp", "2", "--shapes", "2x8", "--dtypes", "float16", "--dims", "0", "--out", str(tmp_path),
                  probes=True)
    assert proc.returncode == 0, proc.stderr
    run = latest_run(tmp_path, "allgather")
    frame = results(run)
    expected = ["suite", "case", "backend", "tp", "shape", "dtype", "dim", "bytes_per_rank", *RESULT_COLUMNS,
                "speedup_vs_torch_kernel", "speedup_vs_torch_graph"]
    assert list(frame.columns) == expected
    row = frame.iloc[0]
    assert (row["suite"], row["backend"], row["shape"], row["dtype"], row["dim"]) == ("allgather", "torch", "2x8", "float16", 0)
    assert row["bytes"] == 2 * 2 * 8 * 2 and row["bytes_per_rank"] == 32 and row["gate_kind"] == "exact"
    assert row["batch_invariant"] == "yes" and "alone" in row["batch_variance"]  # every rank's row 0, gathered alone
    info = meta(run)
    for key in ("suite", "suite_module", "command", "git_revision", "platform", "params", "options", "backends",
                "finished", "summary", "speedups", "times"):
        assert key in info
    assert info["speedups"] == {"speedup_vs_torch": "torch backend on the same case"}
    assert info["platform"]["kind"] in ("cpu", "cuda", "rocm") and "torch" in info["platform"]["versions"]
    assert info["summary"] == {"pass": 1}


def test_help_lists_commands():
    proc = invoke("--help")
    assert proc.returncode == 0
    for command in ("allgather", "env"):
        assert command in proc.stdout
    env = invoke("env")
    assert env.returncode == 0 and "torch" in env.stdout and "aiter" in env.stdout
