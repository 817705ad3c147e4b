"""MLA decode backends: portable Triton kernels (split-KV and persistent) and AITER's mla_decode_fwd (ROCm)."""
from __future__ import annotations

import torch

from rocbench.core.axes import Case
from rocbench.core.suite import Backend, RankContext, Runner
from rocbench.suites.mla.policy import aiter_mla_policy
from rocbench.suites.mla.suite import SM_SCALE, MlaIO, MlaSuite

REGISTRY = MlaSuite.backends


def sm_count(ctx: RankContext) -> int:
    return ctx.platform.sm_count or 132


@REGISTRY.register
class TritonMla(Backend):
    name = "triton"
    platforms = ("cuda", "rocm", "cpu")  # on CPU it runs under TRITON_INTERPRET=1 (tests only)
    description = "portable Triton: split-KV + LSE reduce, or persistent work lists over the SM count + reduce"
    requires = ("triton",)

    def plan(self, case: Case, io: MlaIO, ctx: RankContext) -> dict:
        from rocbench.kernels import mla_decode as k

        config = k.default_config(case["kv_dtype"], case["nhead"], case["qlen"])
        hpg = k.kernel_heads_per_group(case["nhead"], case["qlen"], config)
        lens = [int(x) for x in io.kv.seq_lens.cpu()]
        if case["persist"]:
            schedule = k.build_persistent_schedule(lens, case["qlen"], case["nhead"], sm_count(ctx), config)
            return {"schedule": schedule, "config": config, "hpg": hpg}
        splits = k.pick_num_kv_splits(case["batch"], case["nhead"] // hpg, sum(lens) // len(lens), sm_count(ctx))
        return {"splits": splits, "config": config, "hpg": hpg}

    def prepare(self, case: Case, io: MlaIO, ctx: RankContext) -> Runner:
        from rocbench.kernels import mla_decode as k

        plan = self.plan(case, io, ctx)
        ctx.cache[("mla_plan", case.id)] = plan
        qlen = case["qlen"]
        if case["persist"]:
            schedule = plan["schedule"].to(ctx.device)
            workspace = k.alloc_persistent_workspace(schedule, ctx.device)

            def run() -> torch.Tensor:
                return k.mla_decode_persistent(io.q, io.kv, schedule, SM_SCALE, qlen, out=io.out,
                                               workspace=workspace, config=plan["config"])
            return run
        workspace = k.alloc_split_kv_workspace(io.q, plan["splits"], qlen, plan["hpg"], plan["config"])

        def run() -> torch.Tensor:
            return k.mla_decode_split_kv(io.q, io.kv, SM_SCALE, qlen, plan["splits"], out=io.out, workspace=workspace,
                                         config=plan["config"], heads_per_group=plan["hpg"])
        return run

    def describe(self, case: Case, ctx: RankContext) -> str:
        plan = ctx.cache.get(("mla_plan", case.id))
        if plan is None:
            return "persistent" if case["persist"] else "split-kv"
        if case["persist"]:
            s = plan["schedule"]
            return (f"persistent programs={s.num_programs} items={s.num_items} partials={s.num_partials} "
                    f"heads/group={s.heads_per_group}")
        return f"split-kv splits={plan['splits']} heads/group={plan['hpg']}"


@REGISTRY.register
class AiterMla(Backend):
    """AITER's MLA decode, persistent only where SGLang's policy allows (rocbench.suites.mla.policy)."""

    name = "aiter"
    platforms = ("rocm",)
    description = "AITER mla_decode_fwd; persistent via get_mla_metadata_v1 with SGLang's fast_mode policy"
    requires = ("aiter.mla",)

    def prepare(self, case: Case, io: MlaIO, ctx: RankContext) -> Runner:
        from aiter.mla import mla_decode_fwd

        decision = aiter_mla_policy(case["nhead"], case["kv_dtype"], case["persist"])
        batch, qlen = case["batch"], case["qlen"]
        qo_indptr = torch.arange(0, (batch + 1) * qlen, qlen, dtype=torch.int32, device=ctx.device)
        kv_buffer = io.kv.kv_buffer.view(-1, io.kv.page_size, 1, io.kv.kv_buffer.shape[-1])
        kwargs = dict(page_size=io.kv.page_size, sm_scale=SM_SCALE, kv_scale=io.kv.kv_scale)
        if decision.persistent:
            kwargs.update(self.metadata(case, io, ctx, qo_indptr, decision))

        def run() -> torch.Tensor:
            mla_decode_fwd(io.q, kv_buffer, io.out, qo_indptr, io.kv.kv_indptr, io.kv.kv_indices,
                           io.kv.kv_last_page_lens, qlen, **kwargs)
            return io.out
        return run

    @staticmethod
    def metadata(case: Case, io: MlaIO, ctx: RankContext, qo_indptr: torch.Tensor, decision) -> dict:
        from aiter import get_mla_metadata_info_v1, get_mla_metadata_v1

        info = get_mla_metadata_info_v1(case["batch"], case["qlen"], case["nhead"], io.q.dtype, io.kv.kv_buffer.dtype,
                                        is_sparse=False, fast_mode=decision.fast_mode,
                                        intra_batch_mode=decision.intra_batch_mode)
        buffers = [torch.empty(shape, dtype=dtype, device=ctx.device) for shape, dtype in info]
        get_mla_metadata_v1(qo_indptr, io.kv.kv_indptr, io.kv.kv_last_page_lens, case["nhead"], 1, True, *buffers,
                            page_size=io.kv.page_size, max_seqlen_qo=case["qlen"], fast_mode=decision.fast_mode,
                            intra_batch_mode=decision.intra_batch_mode, dtype_q=io.q.dtype,
                            dtype_kv=io.kv.kv_buffer.dtype)
        names = ("work_meta_data", "work_indptr", "work_info_set", "reduce_indptr", "reduce_final_map",
                 "reduce_partial_map")
        return dict(zip(names, buffers), intra_batch_mode=decision.intra_batch_mode)

    def describe(self, case: Case, ctx: RankContext) -> str:
        return aiter_mla_policy(case["nhead"], case["kv_dtype"], case["persist"]).label()
