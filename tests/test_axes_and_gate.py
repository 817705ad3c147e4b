import pytest
import torch

from rocbench.core.harness import gate
from rocbench.core.axes import Case, parse_dtypes, parse_ints, parse_shapes, product
from rocbench.core.errors import InputError


def test_shapes_parse():
    assert parse_shapes("1x16160, 64x16160,7") == [(1, 16160), (64, 16160), (7,)]


@pytest.mark.parametrize("text", ["", "1x", "x5", "1x0", "64xq", "1,,2", "-3x4"])
def test_bad_shapes(text):
    with pytest.raises(InputError):
        parse_shapes(text)


def test_dtypes_aliases_and_errors():
    assert parse_dtypes("bf16,fp8,float32,bool") == [torch.bfloat16, torch.float8_e4m3fn, torch.float32, torch.bool]
    with pytest.raises(InputError, match="unknown dtype"):
        parse_dtypes("bfloat17")
    with pytest.raises(InputError, match="not supported"):
        parse_dtypes("float64", allowed=[torch.float32])


def test_ints():
    assert parse_ints("0,-1", "--dims") == [0, -1]
    with pytest.raises(InputError):
        parse_ints("0,a", "--dims")


def test_product_order_and_ids():
    cases = product({"a": [1, 2], "b": [torch.bfloat16], "c": [(2, 3)]})
    assert [c.index for c in cases] == [0, 1]
    assert cases[1].id == "a=2,b=bfloat16,c=2x3"


def test_exact_sees_nan_payload_and_signed_zero():
    a = torch.tensor([float("nan"), 0.0, 1.0])
    b = a.clone()
    assert gate.exact(a, b).passed  # torch.equal would say False on NaN
    b.view(torch.int32)[0] ^= 1  # another NaN payload
    verdict = gate.exact(a, b)
    assert not verdict.passed and "1/3" in verdict.detail
    c = a.clone()
    c[1] = -0.0
    assert not gate.exact(a, c).passed


def test_exact_bool_and_fp8():
    x = torch.tensor([True, False])
    assert gate.exact(x, x.clone()).passed
    f = torch.randn(16).to(torch.float8_e4m3fn)
    g = f.clone()
    g.view(torch.uint8)[3] ^= 0x80
    assert not gate.exact(f, g).passed


def test_tolerance_reports_and_fails():
    from rocbench.core.suite import Tolerance

    ref = torch.randn(64, 32)
    ok = gate.tolerance(ref + 1e-4, ref, Tolerance(atol=1e-3, rtol=0, min_cosine=0.999))
    assert ok.passed and ok.max_abs_err == pytest.approx(1e-4, rel=1e-2) and ok.cosine > 0.999
    bad = ref.clone()
    bad[3, 4] += 0.5
    verdict = gate.tolerance(bad, ref, Tolerance(atol=1e-3, rtol=0, min_cosine=0.9))
    assert not verdict.passed and "(3, 4)" in verdict.detail
    nan = ref.clone()
    nan[0, 0] = float("nan")
    assert not gate.tolerance(nan, ref, Tolerance(atol=1.0, rtol=1.0, min_cosine=0.0)).passed


def test_input_key_ignores_added_axes_and_keeps_a_renamed_axis_label():
    declared = Case((("nhead", 16), ("batch", 4)), input_axes=("nhead", "batch"))
    grown = Case((("nhead", 16), ("batch", 4), ("new_axis", "x")), input_axes=("nhead", "batch"))
    renamed = Case((("heads", 16), ("batch", 4)), input_axes=("nhead=heads", "batch"))
    assert declared.input_key == grown.input_key == renamed.input_key == "nhead=16,batch=4"
    assert grown.id != declared.id  # the row key does change: a new axis is a new column
    assert declared.replaced(batch=8).input_key == "nhead=16,batch=8"


def test_a_case_without_declared_input_axes_has_no_input_key():
    with pytest.raises(ValueError, match="Suite.input_axes"):
        Case((("nhead", 16),)).input_key


def test_a_family_builds_the_same_inputs_when_an_axis_is_added():
    from rocbench.core import registry
    from rocbench.core.cli.command import suite_params
    from rocbench.core.platform import detect
    from rocbench.core.suite import RankContext
    from tests.input_digests import digest

    registry.discover("rocbench.suites")
    suite = registry.get("mla")
    case = suite.cases(suite_params(suite, {"nhead": "16", "batch": "2", "ctx": "40", "kv_dtype": "fp16",
                                            "q_dtype": "fp16", "page_size": "16", "ctx_dist": "random"}))[0]
    grown = Case(case.values + (("scheduler", "new"),), case.index, case.input_axes)
    ctx = RankContext(0, 1, torch.device("cpu"), detect(), seed=3)
    built = []
    for c in (case, grown):
        io = suite.build_io(c, ctx)
        built.append(digest(io, suite.fill(c, io, ctx, 0)))
    assert built[0] == built[1]


def test_each_backend_keeps_its_own_state_on_a_rank_across_cases():
    from dataclasses import dataclass, field

    from rocbench.core.platform import detect
    from rocbench.core.suite import Backend, Prepared, RankContext

    @dataclass
    class Pools:
        made: list = field(default_factory=list)

    class Keeps(Backend):
        """Makes a pool the first time a case needs one, as an IPC backend would, and reuses it after."""

        name, platforms, state_type = "keeps", ("cpu",), Pools

        def prepare(self, case, io, ctx):
            pools = ctx.state(self).made
            if not pools:
                pools.append(torch.empty(4))
            return Prepared(lambda: pools[0], f"pool {len(pools)}")

    class Other(Keeps):
        name = "other"

    class Stateless(Keeps):
        name, state_type = "stateless", None

    ctx = RankContext(0, 1, torch.device("cpu"), detect(), seed=0)
    first, second = Keeps().prepare(None, None, ctx), Keeps().prepare(None, None, ctx)
    assert first.run() is second.run() and len(ctx.state(Keeps()).made) == 1  # kept across cases
    assert ctx.state(Other()).made == []  # each backend its own
    assert RankContext(0, 1, torch.device("cpu"), detect(), seed=0).state(Keeps()).made == []  # each rank its own
    with pytest.raises(TypeError, match="stateless keeps no state"):
        ctx.state(Stateless())
