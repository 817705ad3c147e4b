"""The MLA suite end to end on CPU: Triton under the interpreter with fp16 (its bf16 dot is wrong)."""
import importlib

import pytest
import torch

from tests.helpers import latest_run, needs_interpreter, results, invoke

TINY = ["--nhead", "16,32", "--batch", "2", "--ctx", "40", "--page-size", "16", "--kv-dtype", "fp16",
        "--q-dtype", "fp16", "--ctx-dist", "skewed"]


@needs_interpreter()
def test_mla_gates_pass_on_both_paths(tmp_path):
    proc = invoke("mla", *TINY, "--qlen", "1,2", "--skip-batch-probes", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    frame = results(latest_run(tmp_path, "mla"))
    assert len(frame) == 2 * 2 * 2  # nhead x qlen x persist (page size 1 runs in the CI sweep and the fault matrix)
    assert set(frame["status"]) == {"pass"}
    assert set(frame["deterministic"]) == {"yes"}
    assert frame["tolerance"].str.contains("atol").all() and frame["cosine"].min() > 0.9999
    persistent = frame[frame["persist"]]
    assert persistent["path"].str.startswith("persistent programs=").all()
    assert frame[~frame["persist"]]["path"].str.startswith("split-kv").all()


@pytest.mark.parametrize("args, message", [
    (["--nhead", "24"], "not one of"),
    (["--kv-dtype", "int8"], "not supported"),
    (["--page-size", "3"], "power of two"),
    (["--ctx-dist", "zipf"], "unknown value"),
    (["--qlen", "9"], "not one of"),
    (["--batch", "0"], "below the minimum"),
])
def test_mla_bad_axes(args, message, tmp_path):
    proc = invoke("mla", *args, "--out", str(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_explain_prints_the_policy_for_nhead_64():
    proc = invoke("mla", "--explain")
    assert proc.returncode == 0
    line = [l for l in proc.stdout.splitlines() if l.split()[:1] == ["64"] and "bfloat16" in l and "True" in l][0]
    assert "persistent" in line and "fast_mode" in line
    variance = [l for l in proc.stdout.splitlines() if l.startswith("aiter ")]
    assert len(variance) == 2 and all(" no " in l for l in variance)  # both aiter paths: batch-variant by construction
    assert "get_meta_param" in proc.stdout


def test_policy_is_sglangs():
    import torch

    from rocbench.rocm.mla_policy import aiter_mla_policy

    bf16, fp8 = torch.bfloat16, torch.float8_e4m3fn
    for nhead in (32, 64, 128):
        d = aiter_mla_policy(nhead, fp8, True)
        assert d.persistent and d.fast_mode and not d.intra_batch_mode  # 64 was the bug
    assert not aiter_mla_policy(16, bf16, True).persistent
    assert not aiter_mla_policy(128, bf16, True).persistent
    assert aiter_mla_policy(64, bf16, True).persistent
    assert aiter_mla_policy(16, fp8, True).persistent


@needs_interpreter()
@pytest.mark.parametrize("suite, args, flag", [
    ("mla", ["--nhead", "16", "--q-dtype", "bf16"], "--q-dtype"),
    ("moe", ["--experts", "4", "--topk", "2", "--hidden", "128", "--inter", "256", "--x-dtype", "fp16,bf16"], "--x-dtype"),
])
def test_the_interpreter_refuses_bf16_and_names_what_to_use(suite, args, flag, tmp_path):
    """Triton's interpreter computes bf16 dot products wrong: a run that would report false failures is refused."""
    proc = invoke(suite, *args, "--out", str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and f"use {flag} fp16 here" in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


@needs_interpreter()
def test_a_config_asking_the_interpreter_for_bf16_is_refused_with_its_line(tmp_path):
    config = tmp_path / "bf16.yaml"
    config.write_text("runs:\n  - suite: mla\n    nhead: 16\n    q_dtype: bf16\n")
    proc = invoke("sweep", str(config), "--out", str(tmp_path))
    assert proc.returncode == 2 and f"{config}:2" in proc.stderr and "use --q-dtype fp16 here" in proc.stderr, proc.stderr


@needs_interpreter()
def test_the_readme_command_on_a_cpu_runs_in_fp16_and_passes(tmp_path):
    """`rocbench mla --nhead 64 --persist` with its default dtypes: fp16 (and fp8 KV) where the kernels are
    interpreted; the README's command, on a small batch and context."""
    proc = invoke("mla", "--nhead", "64", "--persist", "--batch", "1", "--ctx", "48", "--page-size", "16",
                  "--ctx-dist", "uniform", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    frame = results(latest_run(tmp_path, "mla"))
    assert frame["q_dtype"].tolist() == ["float16"] * 2 and frame["kv_dtype"].tolist() == ["float16", "float8_e4m3fn"]
    assert frame["status"].tolist() == ["pass"] * 2


@needs_interpreter()
def test_aiter_triton_loaded_from_the_aiter_source_passes_the_gates_as_a_peer(tmp_path):
    """AITER's Triton decode_attention_fwd (SGLang's and vLLM's Triton MLA kernel), loaded by path from the AITER
    source as a user would from their checkout, on the same paged inputs: bf16 is the GPU's, fp16/fp8 KV here."""
    from tests.aiter_source import aiter_source_dir, missing_reason

    if aiter_source_dir() is None:
        pytest.skip(missing_reason())
    proc = invoke("mla", "--nhead", "16", "--batch", "2", "--ctx", "40", "--page-size", "16", "--kv-dtype", "fp16,fp8",
                  "--ctx-dist", "skewed", "--backends", "triton,aiter_triton", "--out", str(tmp_path),
                  env={"ROCBENCH_AITER_SRC": str(aiter_source_dir())})
    assert proc.returncode == 0, proc.stdout[-3000:]
    frame = results(latest_run(tmp_path, "mla"))
    mine = frame[frame["backend"] == "aiter_triton"]
    assert mine[~mine["persist"]]["status"].tolist() == ["pass", "pass"]
    assert mine[~mine["persist"]]["path"].str.startswith("grouped stage 1, 8 KV splits").all()
    assert set(mine[mine["persist"]]["status"]) == {"unsupported"}
    said = " ".join(proc.stdout.split())  # the terminal wraps long lines
    assert "unsupported: aiter_triton" in said and "and 1 more: aiter_triton takes only persist=False (this case: persist=True)" in said


def test_aiter_triton_follows_the_source_variable_as_its_rank_processes_do(monkeypatch):
    """The aiter_triton backend's availability (checked in the launching process) and its prepare (in rank processes,
    which read ROCBENCH_AITER_SRC afresh) agree: a checkout named once and then unset is not remembered."""
    from rocbench.rocm import aiter_triton
    from tests.aiter_source import aiter_source_dir, missing_reason

    if aiter_source_dir() is None:
        pytest.skip(missing_reason())
    try:  # as aiter_triton looks first (another test's AITER stand-in has no such module)
        importlib.import_module("aiter.ops.triton.attention.mla_decode")
    except Exception:  # noqa: BLE001 - without ROCm, importing aiter fails in many ways
        pass
    else:
        pytest.skip("aiter is installed here: the installed module is taken whatever the variable says")
    monkeypatch.setenv(aiter_triton.SOURCE_ENV, str(aiter_source_dir()))
    assert hasattr(aiter_triton.module(), "decode_attention_fwd")
    monkeypatch.delenv(aiter_triton.SOURCE_ENV)
    with pytest.raises(ImportError, match="names no AITER checkout"):
        aiter_triton.module()


@needs_interpreter()
def test_triton_fp8q_runs_when_named_and_not_on_the_interpreter(tmp_path):
    """triton_fp8q (q cast to fp8, AITER's numerics; judged at the fp8-query tolerance as aiter is) runs only where
    named, and not under the CPU interpreter, whose fp8 rounding differs from a GPU's (its kernels are tested there by
    test_mla_kernels.test_q_in_one_fp8_part): one line, exit 2."""
    from rocbench.suites.mla.backends import FP8_QUERY_TOLERANCE, REGISTRY

    args = ["--nhead", "16", "--batch", "2", "--ctx", "40", "--page-size", "16", "--kv-dtype", "fp16,fp8",
            "--q-dtype", "fp16", "--ctx-dist", "uniform", "--skip-batch-probes", "--correctness-only"]
    default = invoke("mla", *args, "--out", str(tmp_path / "default"))
    assert default.returncode == 0, default.stdout[-2000:]
    assert set(results(latest_run(tmp_path / "default", "mla"))["backend"]) == {"triton"}  # on request only
    named = invoke("mla", *args, "--backends", "triton,triton_fp8q", "--out", str(tmp_path / "named"))
    assert named.returncode == 2 and "triton_fp8q is not available here" in named.stderr
    assert "rounds to fp8 unlike a GPU" in named.stderr and len(named.stderr.strip().splitlines()) == 1
    backend = REGISTRY.get("triton_fp8q")
    fp8_case = {"kv_dtype": torch.float8_e4m3fn}
    assert backend.tolerance(fp8_case, None) is FP8_QUERY_TOLERANCE
    assert backend.unsupported_reason({"kv_dtype": torch.float16}, None) == "q in fp8 goes with an fp8 KV cache"
