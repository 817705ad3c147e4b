"""A fourth family written as one package (tests/toy_addrmsnorm): the harness drives it in-process, and the
CLI finds it through ROCBENCH_SUITES with no other file touched."""
import dataclasses

import torch

from rocbench.core.options import RunOptions
from rocbench.core.harness import measure
from rocbench.core.cli.command import suite_params
from rocbench.core.platform import detect
from rocbench.core.suite import RankContext
from tests import toy_addrmsnorm
from tests.helpers import invoke, latest_run, results

SUITE = toy_addrmsnorm.SUITE


def run_all(suite, **options):
    ctx = RankContext(0, 1, torch.device("cpu"), detect(), seed=0)
    opts = RunOptions(correctness_only=True, **options)
    rows = []
    for case in suite.cases(suite_params(suite, {"dtype": "fp32,bf16"})):
        for backend in suite.backends:
            rows.append((case, backend.name, measure.run_case(suite, backend, case, ctx, opts).row))
    return rows


def test_two_outputs_and_an_in_place_call_pass_every_gate():
    rows = run_all(SUITE)
    assert len(rows) == 8
    for case, backend, row in rows:
        assert row["status"] == "pass", (case.id, backend, row)
        assert row["deterministic"] == "yes" and row["path"].startswith("add_")
        assert "bitwise" in row["tolerance"] and "atol=0.01" in row["tolerance"]  # each output judged its own way


def test_without_its_reset_the_in_place_kernel_is_caught():
    """The declared reset is what makes a rerun see the same input: drop it and the second call differs."""
    class NoReset(type(SUITE)):
        def reset(self, case, io, ctx):
            pass

    rows = run_all(NoReset())
    assert {row["status"] for _, _, row in rows} == {"fail"}
    assert all("not deterministic" in row["detail"] for _, _, row in rows)


def test_a_wrong_second_output_fails_with_its_name(monkeypatch):
    real = toy_addrmsnorm.Eager.prepare

    def broken(self, case, io, ctx):
        prepared = real(self, case, io, ctx)

        def run():
            outs = prepared.run()
            outs["residual"].view(-1)[0] += 1
            return outs
        return dataclasses.replace(prepared, run=run)

    monkeypatch.setattr(toy_addrmsnorm.Eager, "prepare", broken)
    rows = [row for _, backend, row in run_all(SUITE) if backend == "eager"]
    assert all(row["status"] == "fail" and row["detail"].startswith("first call: residual:") for row in rows)


def test_the_cli_finds_it_by_name_alone(tmp_path, monkeypatch):
    from rocbench import cli

    monkeypatch.setenv("ROCBENCH_SUITES", "tests.toy_addrmsnorm")
    cli.add_suite_commands()  # what `rocbench` does when it starts
    proc = invoke("addrmsnorm", "--tokens", "3", "--dtype", "fp16", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    frame = results(latest_run(tmp_path, "addrmsnorm"))
    assert list(frame["backend"]) == ["eager", "rsqrt"] and set(frame["status"]) == {"pass"}
    assert {"tokens", "hidden", "dtype", "speedup_vs_eager_kernel", "speedup_vs_eager_graph"} <= set(frame.columns)
