"""The batch-invariance gate: a probe request in several batches, bitwise against its output in the case's own
batch. A planted backend whose split count depends on the batch is caught (and fails the row only under
--require-batch-invariant); a fixed-split backend passes. CPU interpreter, fp16, tiny shapes."""
import pytest
import torch

from rocbench.core.options import RunOptions
from rocbench.core.harness import invariance, measure
from rocbench.core.cli.command import suite_params
from rocbench.core.platform import detect
from rocbench.core.suite import Prepared, RankContext
from tests.helpers import needs_interpreter

pytestmark = needs_interpreter()

TINY_MLA = {"nhead": "16", "batch": "3", "ctx": "128", "page_size": "16", "kv_dtype": "fp16", "q_dtype": "fp16",
            "ctx_dist": "uniform", "persist": "false"}


def mla_case_and_io(ctx):
    import rocbench.suites  # noqa: F401 - registers the suites
    from rocbench.core import registry

    suite = registry.get("mla")
    case = suite.cases(suite_params(suite, dict(TINY_MLA)))[0]
    io = suite.build_io(case, ctx)
    suite.fill(case, io, ctx, data_seed=0)
    return suite, case, io


def split_kv_backend(splits_for_batch):
    """The Triton split-KV kernel with a split count the test chooses from the batch size."""
    from rocbench.suites.mla.backends import TritonMla

    class Planted(TritonMla):
        name = "planted"

        def prepare(self, case, io, ctx):
            from rocbench.kernels import mla_config as kc
            from rocbench.kernels import mla_decode as k
            from rocbench.suites.mla.suite import SM_SCALE

            config = kc.builtin_config(case["kv_dtype"], case["nhead"], case["qlen"], persistent=False)
            hpg = kc.kernel_heads_per_group(case["nhead"], case["qlen"], config)
            splits = splits_for_batch(int(io.kv.batch))
            workspace = k.alloc_split_kv_workspace(io.q, splits, case["qlen"], hpg, config)
            return Prepared(lambda: k.mla_decode_split_kv(io.q, io.kv, SM_SCALE, case["qlen"], splits, out=io.out,
                                                          workspace=workspace, config=config, heads_per_group=hpg))
    return Planted()


@pytest.fixture
def ctx():
    return RankContext(0, 1, torch.device("cpu"), detect(), seed=0)


def test_a_split_count_that_follows_the_batch_is_caught_and_named(ctx):
    suite, case, io = mla_case_and_io(ctx)
    row = {}
    planted = split_kv_backend(lambda batch: 1 if batch == 1 else 2)
    assert measure.batch_invariance(suite, planted, case, ctx, io, RunOptions(), row) is True  # a property
    assert row["batch_invariant"] == invariance.NO
    assert row["batch_variance"].startswith("alone vs in its batch of 3, first: ") and "first at (" in row["batch_variance"]
    strict = {}
    assert measure.batch_invariance(suite, planted, case, ctx, io, RunOptions(require_batch_invariant=True),
                                    strict) is False
    assert strict["status"] == "fail" and "not batch-invariant" in strict["detail"]


def test_a_fixed_split_count_passes_every_probe(ctx):
    suite, case, io = mla_case_and_io(ctx)
    row = {}
    assert measure.batch_invariance(suite, split_kv_backend(lambda batch: 2), case, ctx, io, RunOptions(), row)
    assert row["batch_invariant"] == invariance.YES
    assert "alone" in row["batch_variance"] and "last of 3" in row["batch_variance"] and "beside" in row["batch_variance"]


def test_the_probe_sees_the_same_inputs_in_every_batch(ctx):
    """The probe's q rows and KV tokens are copied, not regenerated: a batch of one holds exactly them."""
    suite, case, io = mla_case_and_io(ctx)
    probes = suite.batch_probes(case, io, ctx)
    alone = next(p for p in probes if p.perturbation == "alone")
    probe_io, rows = alone.build()
    from rocbench.suites.mla.probes import token_slots

    length = int(io.kv.seq_lens[0])
    assert torch.equal(probe_io.q, io.q[:1]) and int(probe_io.kv.seq_lens[0]) == length
    assert torch.equal(probe_io.kv.kv_buffer[token_slots(probe_io.kv, 0, length)],
                       io.kv.kv_buffer[token_slots(io.kv, 0, length)])
    assert set(rows({"out": probe_io.out})) == {"out"}


def test_first_difference_names_the_element_and_both_values():
    a = {"out": torch.zeros(2, 3, dtype=torch.float16)}
    b = {"out": a["out"].clone()}
    assert invariance.first_difference(a, b) is None
    b["out"][1, 2] = 0.5
    text = invariance.first_difference(a, b)
    assert "1/6 elements differ, first at (1, 2)" in text and "(0.5 vs 0)" in text
