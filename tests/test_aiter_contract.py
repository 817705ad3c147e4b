"""Every AITER call in rocbench, and every stand-in signature, checked against AITER's source (read, never imported).

The source is ROCBENCH_AITER_SRC, by default ../shared/reference/aiter-src (tests/aiter_source.py): an AMD
developer points it at their own AITER checkout and the same checks run against that version.
"""
import ast
from pathlib import Path

import pytest

from tests.aiter_contract import AiterSource, check_source, check_tree, signature_text
from tests.aiter_source import REPO, STANDIN, aiter_source_dir, missing_reason

SOURCE_DIR = aiter_source_dir()
pytestmark = pytest.mark.skipif(SOURCE_DIR is None, reason=missing_reason())


@pytest.fixture(scope="module")
def source() -> AiterSource:
    return AiterSource(SOURCE_DIR)


def test_every_aiter_call_in_rocbench_matches_aiters_api(source):
    findings, users = check_tree(REPO / "rocbench", source)
    assert users >= 4, "the checker found fewer modules using AITER than rocbench has (all-gather, MLA, MoE, layouts)"
    assert not findings, "\n".join(str(f) for f in findings)


# The MLA metadata call as it stood before issue 11: the six buffers unpacked in the order
# get_mla_metadata_info_v1 returns them, which is not get_mla_metadata_v1's parameter order.
PRE_ISSUE_11_MLA = '''
def metadata(case, io, ctx, qo_indptr, decision):
    from aiter import get_mla_metadata_info_v1, get_mla_metadata_v1
    info = get_mla_metadata_info_v1(case["batch"], case["qlen"], case["nhead"], io.q.dtype, io.kv.dtype,
                                    is_sparse=False, fast_mode=decision.fast_mode)
    buffers = [torch.empty(shape, dtype=dtype) for shape, dtype in info]
    get_mla_metadata_v1(qo_indptr, io.kv.kv_indptr, io.kv.kv_last_page_lens, case["nhead"], 1, True, *buffers,
                        page_size=io.kv.page_size)
'''


def test_the_checker_catches_the_buffer_order_defect_and_its_relatives(source):
    found = [f.message for f in check_source(PRE_ISSUE_11_MLA, source)]
    assert any("unpacking hides" in m for m in found), found
    positional = '''
from aiter.ops.attention import get_mla_metadata_v1
get_mla_metadata_v1(qo, kv, last, 16, 1, False, work_metadata_ptrs, work_indptr, work_info_set,
                    reduce_indptr, reduce_final_map, reduce_partial_map, kv_granularity=16, max_seqlen=1)
from aiter.mla import mla_decode_fwd
mla_decode_fwd(q, kv_buffer, o, qo_indptr, kv_indptr, kv_indices)
'''
    found = [f.message for f in check_source(positional, source)]
    assert any("`work_indptr` is passed in the position of parameter `work_info_set`" in m for m in found), found
    assert any("no parameter `max_seqlen`" in m for m in found), found
    assert any("required kv_last_page_lens, max_seqlen_q not passed" in m for m in found), found


def test_the_checker_follows_typed_communicators_and_enums(source):
    code = '''
def communicator(ctx) -> "CustomAllreduce":
    from aiter.dist.device_communicators.custom_all_reduce import CustomAllreduce
    return CustomAllreduce(ctx.cpu_group, ctx.device)
def run(ctx, x, y):
    from aiter.ops.enum import ActivationType
    ca = communicator(ctx)
    ca.all_gather_reg(x, out=y, gather_dim=0)
    return ca.is_capturing, ActivationType.Swiglu, ActivationType.Swish
'''
    found = [f.message for f in check_source(code, source)]
    assert any("no parameter `gather_dim`" in m for m in found), found
    assert any("no attribute or method `is_capturing`" in m for m in found), found
    assert any("never uses ActivationType.Swish" in m for m in found) and not any("Swiglu" in m for m in found), found


def _standin_definitions():
    """(aiter module, qualified name, def) for every public function and method of the stand-in."""
    for path in sorted((STANDIN / "aiter").rglob("*.py")):
        module = ".".join(path.relative_to(STANDIN).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                yield module, node.name, node
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and (not item.name.startswith("_") or item.name == "__init__"):
                        yield module, f"{node.name}.{item.name}", item


def test_the_stand_ins_signatures_are_aiters(source):
    checked = []
    for module, qualname, definition in _standin_definitions():
        if module.endswith("_standin"):
            continue
        owner, _, method = qualname.rpartition(".")
        found = source.resolve(module, owner or qualname)
        assert found is not None, f"the stand-in defines {module}.{qualname}, which AITER does not have"
        real = found[1].methods.get(method) if owner else found[1]
        assert real is not None, f"AITER's {module}.{owner} has no {method}"
        assert signature_text(definition) == signature_text(real), f"{module}.{qualname} differs from AITER's signature"
        checked.append(f"{module}.{qualname}")
    assert {"aiter.mla.mla_decode_fwd", "aiter.ops.attention.get_mla_metadata_v1", "aiter.fused_moe.fused_moe",
            "aiter.dist.device_communicators.custom_all_reduce.CustomAllreduce.all_gather_reg"} <= set(checked)


def test_source_path_is_configurable(monkeypatch, tmp_path):
    from tests import aiter_source

    monkeypatch.setenv("ROCBENCH_AITER_SRC", str(tmp_path))
    assert aiter_source.aiter_source_dir() is None and str(tmp_path) in aiter_source.missing_reason()
    (tmp_path / "aiter").mkdir()
    assert aiter_source.aiter_source_dir() == Path(tmp_path)
