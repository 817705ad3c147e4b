"""MLA decode backends: portable Triton kernels (split-KV and persistent, and their batch-invariant variant with
fixed split sizes) and AITER's mla_decode_fwd (ROCm)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from rocbench.core.axes import Case, dtype_name
from rocbench.core.platform import PlatformInfo
from rocbench.core.suite import Backend, Prepared, RankContext, Tolerance, Tuning
from rocbench.formats.fp8 import fp8_for_arch, is_fp8
from rocbench.formats.paged_kv import KV_LORA_RANK
from rocbench.rocm.mla_policy import AiterMlaPlan, aiter_mla_plan
from rocbench.suites.mla.suite import NHEADS, SM_SCALE, MlaIO, MlaSuite

REGISTRY = MlaSuite.backends
# Tokens per KV split of the batch-invariant Triton backend: SGLang's deterministic Triton attention splits
# at a fixed 256 tokens too. A multiple of every config's block_n and of the persistent schedule's granularity.
DETERMINISTIC_SPLIT_TOKENS = 256


def fp8_unsupported_reason(case: Case, platform: PlatformInfo) -> str | None:
    """Triton has no e4m3 type below sm_89 (an offline compile for sm_80 stops at 'type fp8e4nv not supported')."""
    arch = platform.arch or ""
    if platform.kind == "cuda" and is_fp8(case["kv_dtype"]) and arch.startswith("sm_") and int(arch[3:]) < 89:
        return f"fp8 KV needs sm_89 or newer for Triton's e4m3 type; this GPU is {arch}"
    return None


def gluon_unsupported_reason(case: Case, platform: PlatformInfo) -> str | None:
    """Why the Gluon tile (MlaKernelConfig.gluon_ws) cannot run this case here, or None: rocbench.kernels.mla_gluon_scope
    from what the case and platform say (mla_gluon_scope.unsupported_reason checks the tensors again at launch)."""
    from rocbench.kernels import mla_config as kc
    from rocbench.kernels import mla_gluon_scope

    config = kc.gluon_ws_config(case["kv_dtype"], case["nhead"], case["qlen"])
    if not case["persist"] or config is None:
        return "the persistent kernel at 16, 32 or a multiple of 64 heads (more than one query token: 64) only"
    heads = kc.kernel_heads_per_group(case["nhead"], case["qlen"], config)
    return mla_gluon_scope.case_reason(platform.kind, platform.arch, case["q_dtype"], case["kv_dtype"], case["qlen"],
                                       heads, case["page_size"])


def platform_builtin(case: Case, platform: PlatformInfo):
    """The built-in config for a case on this platform: the Gluon tile where it is built in (mla_config.gluon_builtin)
    and can run here, else the Triton tile's sweep winners (mla_config.builtin_config)."""
    from rocbench.kernels import mla_config as kc

    gluon = kc.gluon_builtin(case["kv_dtype"], case["nhead"], case["qlen"], case["batch"] * case["qlen"] * case["ctx"],
                             persistent=case["persist"])
    if gluon is not None and gluon_unsupported_reason(case, platform) is None:
        return gluon
    return kc.builtin_config(case["kv_dtype"], case["nhead"], case["qlen"], case["batch"], persistent=case["persist"])


@REGISTRY.register
class TritonMla(Backend):
    name = "triton"
    platforms = ("cuda", "rocm", "cpu")  # on CPU it runs under TRITON_INTERPRET=1 (tests only)
    description = "portable Triton: split-KV + LSE reduce, or persistent work lists over the SM count + reduce"
    requires = ("triton",)
    # bf16 q (and so a bf16 cache: a 16-bit cache must be q's dtype) meets bf16 dot products
    interpreter_wrong_dtypes = {"q_dtype": (torch.bfloat16,), "kv_dtype": (torch.bfloat16,)}
    batch_invariance = (
        ("split-KV", False, "pick_num_kv_splits chooses the split count from batch, heads and SM count"),
        ("persistent", False, "the schedule deals the batch's KV to programs in equal quotas: split points depend on "
                              "the whole batch"),
    )

    def unsupported_reason(self, case: Case, platform: PlatformInfo) -> str | None:
        return fp8_unsupported_reason(case, platform)

    def prepare(self, case: Case, io: MlaIO, ctx: RankContext) -> Prepared:
        return self.prepare_fitted(case, io, ctx, *self.config(case, ctx))

    def config(self, case: Case, ctx: RankContext) -> tuple:
        """The config this case runs (tuned for this device, else built in) and the words that say which."""
        from rocbench.kernels import mla_config as kc

        builtin = platform_builtin(case, ctx.platform)
        config = kc.tuned_config(case["kv_dtype"], case["nhead"], case["qlen"], ctx.device, case["batch"],
                                 persistent=case["persist"]) or builtin
        return config, f"{'tuned' if config != builtin else 'built-in'} config"

    def tuning(self, case: Case, ctx: RankContext) -> Tuning:
        from rocbench.kernels import mla_config as kc
        from rocbench.kernels import tuned

        key = kc.tune_key(case["kv_dtype"], case["nhead"], case["qlen"], case["batch"], persistent=case["persist"])

        def remember(name: str, config, evidence: dict) -> str:
            where = tuned.remember("mla_decode", ctx.device, key, dataclasses.asdict(config), {"name": name, **evidence})
            return f"{where} [{key}]"

        return Tuning(kc.tune_candidates(case["kv_dtype"], case["nhead"], case["qlen"], case["batch"],
                                         persistent=case["persist"], builtin=platform_builtin(case, ctx.platform)),
                      lambda io, config: self.prepare_fitted(case, io, ctx, config, "candidate"), remember)

    @classmethod
    def prepare_fitted(cls, case: Case, io: MlaIO, ctx: RankContext, config, source: str,
                       split_tokens: int | None = None) -> Prepared:
        """prepare_with `config`, or where this GPU cannot hold it, the first of its smaller configs that fits
        (rocbench.kernels.fit): the path then says what changed and why."""
        from rocbench.kernels import mla_config as kc
        from rocbench.kernels.fit import first_fitting

        # what the compiled kernels depend on: dtypes, head tile, q length, kernel, fixed splits, config
        key = ("mla", str(ctx.device), case["q_dtype"], case["kv_dtype"], case["nhead"], case["qlen"], case["persist"],
               split_tokens, config)
        return first_fitting(key, kc.smaller_configs(config), lambda fitted, note: cls.prepare_with(
            case, io, ctx, fitted, f"{source}, {note}" if note else source, split_tokens))

    @staticmethod
    def prepare_with(case: Case, io: MlaIO, ctx: RankContext, config, source: str,
                     split_tokens: int | None = None) -> Prepared:
        """split_tokens: fixed splits of that many tokens (batch-invariant) instead of batch-sized ones."""
        from rocbench.kernels import mla_config as kc
        from rocbench.kernels import mla_decode as k

        hpg = kc.kernel_heads_per_group(case["nhead"], case["qlen"], config)
        lens = [int(x) for x in io.kv.seq_lens.cpu()]
        qlen = case["qlen"]
        if case["persist"]:
            def schedule_for(config):
                return k.build_persistent_schedule(lens, qlen, case["nhead"], ctx.platform.grid_sms, config,
                                                   fixed_split_tokens=split_tokens,
                                                   kv_element_bytes=io.kv.kv_buffer.element_size()).to(ctx.device)

            schedule = schedule_for(config)
            if config.gluon_ws:
                from rocbench.kernels import mla_gluon_scope

                reason = mla_gluon_scope.unsupported_reason(io.q, io.kv, qlen, schedule)
                if reason:  # the Triton tile's schedule differs where there is more than one query token
                    config = dataclasses.replace(config, gluon_ws=False)
                    schedule = schedule_for(config)
                tile = (f"Triton tile (not the Gluon tile: {reason})" if reason
                        else kc.gluon_tile_name(config, case["kv_dtype"]))
                source += f"; {tile}"
            workspace = k.alloc_persistent_workspace(schedule, ctx.device)

            def run() -> torch.Tensor:
                return k.mla_decode_persistent(io.q, io.kv, schedule, SM_SCALE, qlen, out=io.out,
                                               workspace=workspace, config=config)
            return Prepared(run, f"persistent programs={schedule.num_programs} items={schedule.num_items} "
                                 f"partials={schedule.num_partials} heads/group={schedule.heads_per_group}; {source}")
        if split_tokens is None:
            splits = k.pick_num_kv_splits(case["batch"], case["nhead"] // hpg, sum(lens) // len(lens),
                                          ctx.platform.grid_sms, min_tokens_per_split=config.split_min_tokens,
                                          max_splits=config.max_splits)
        else:
            splits = k.fixed_split_count(max(lens), split_tokens)
        workspace = k.alloc_split_kv_workspace(io.q, splits, qlen, hpg, config)

        def run() -> torch.Tensor:
            return k.mla_decode_split_kv(io.q, io.kv, SM_SCALE, qlen, splits, out=io.out, workspace=workspace,
                                         config=config, heads_per_group=hpg, split_tokens=split_tokens)
        return Prepared(run, f"split-kv splits={splits} heads/group={hpg}; {source}")


@REGISTRY.register
class AiterTritonMla(Backend):
    """The Triton MLA decode that SGLang's and vLLM's Triton backends run (AITER ships it), as a peer: the same paged
    inputs, the page table made dense from the CSR indices as the kernel wants, SGLang's default split count."""

    name = "aiter_triton"
    platforms = ("cuda", "rocm", "cpu")  # on CPU under TRITON_INTERPRET=1 (tests)
    description = ("AITER's Triton decode_attention_fwd (SGLang's and vLLM's Triton MLA kernel): CSR page table made "
                   "dense, stage 1 over 8 KV splits (SGLang's default), then the LSE reduce")
    requires = ("triton",)
    supports = {"persist": (False,), "qlen": (1,)}  # a split-KV decode kernel: one query token per sequence
    batch_invariance = (("split-KV", True, "a fixed 8 splits of each sequence's own length, reduced in order: "
                                           "nothing depends on the rest of the batch"),)
    interpreter_wrong_dtypes = TritonMla.interpreter_wrong_dtypes
    unsupported_reason = TritonMla.unsupported_reason

    def unavailable_reason(self, platform: PlatformInfo, world_size: int) -> str | None:
        from rocbench.rocm import aiter_triton

        reason = super().unavailable_reason(platform, world_size)
        if reason:
            return reason
        try:
            aiter_triton.module()
        except ImportError as err:
            return str(err)
        return None

    def prepare(self, case: Case, io: MlaIO, ctx: RankContext) -> Prepared:
        from rocbench.rocm import aiter_triton

        kernel = aiter_triton.module()
        kv = io.kv
        slots = kv.kv_buffer.view(-1, 1, kv.kv_buffer.shape[-1])  # [pages * page_size, 1 latent head, 576]
        values = slots[..., :KV_LORA_RANK]  # V is the first 512 of the latent
        batch, nhead = case["batch"], case["nhead"]
        pages = [(int(n) + kv.page_size - 1) // kv.page_size for n in kv.seq_lens.cpu()]
        table = torch.zeros(batch, max(pages), dtype=torch.int32, device=ctx.device)
        splits = aiter_triton.SGLANG_NUM_KV_SPLITS
        logits = torch.empty(batch, nhead, splits, KV_LORA_RANK + 1, dtype=torch.float32, device=ctx.device)
        lse = torch.empty(batch, nhead, dtype=torch.float32, device=ctx.device)
        # an fp8 cache's scale, else ones made here: the kernel would otherwise make them inside a captured graph
        scale = kv.kv_scale if kv.kv_scale is not None else torch.ones((), dtype=torch.float32, device=ctx.device)

        def run() -> torch.Tensor:
            kernel.csr_to_dense_block_table(kv.kv_indices, kv.kv_indptr, table, max(pages), batch)
            kernel.decode_attention_fwd(io.q, slots, values, io.out, lse, table, kv.seq_lens, logits, splits, SM_SCALE,
                                        page_size=kv.page_size, k_scale=scale, v_scale=scale)
            return io.out
        grouped = aiter_triton.grouped_path(nhead, ctx.platform.kind == "rocm")
        return Prepared(run, f"{'grouped' if grouped else 'per-head'} stage 1, {splits} KV splits; "
                             f"{aiter_triton.origin()}")


@REGISTRY.register
class TritonMlaDeterministic(Backend):
    """The triton backend made batch-invariant: every sequence is split at multiples of a fixed token count, so a
    request's output does not depend on the rest of its batch. No tuning: a config chosen per batch would make the
    kernel, and so the result, depend on the batch."""

    name = "triton_det"
    platforms = TritonMla.platforms
    description = (f"portable Triton, batch-invariant: fixed split size {DETERMINISTIC_SPLIT_TOKENS} tokens per "
                   "sequence (split-KV, or persistent work lists of those pieces), each request's splits merged in KV "
                   "order; built-in config")
    requires = TritonMla.requires
    interpreter_wrong_dtypes = TritonMla.interpreter_wrong_dtypes
    deterministic_of = "triton"
    unsupported_reason = TritonMla.unsupported_reason
    batch_invariance = (("both", True, "fixed split size in tokens, reduced in KV order: depends on the request alone "
                                       "(SGLang's deterministic Triton attention does the same)"),)

    def prepare(self, case: Case, io: MlaIO, ctx: RankContext) -> Prepared:
        from rocbench.kernels import mla_config as kc

        config = kc.builtin_config(case["kv_dtype"], case["nhead"], case["qlen"], persistent=case["persist"])
        return TritonMla.prepare_fitted(case, io, ctx, config,
                                        f"fixed split {DETERMINISTIC_SPLIT_TOKENS} tokens, built-in config",
                                        split_tokens=DETERMINISTIC_SPLIT_TOKENS)


@dataclass
class AiterMlaSchedule:
    """get_mla_metadata_v1's buffers and the split count they were built for (all None: non-persistent)."""

    work_metadata_ptrs: torch.Tensor | None = None
    work_indptr: torch.Tensor | None = None
    work_info_set: torch.Tensor | None = None
    reduce_indptr: torch.Tensor | None = None
    reduce_final_map: torch.Tensor | None = None
    reduce_partial_map: torch.Tensor | None = None
    num_kv_splits: int | None = None
    intra_batch_mode: bool = False


# q cast to fp8 adds up to one fp8 ulp (2^-3 relative) per query element: scores move by ~1e-2.
FP8_QUERY_TOLERANCE = Tolerance(atol=3e-2, rtol=5e-2, min_cosine=0.999, why="q in fp8")


@REGISTRY.register
class TritonMlaFp8Query(TritonMla):
    """The triton backend with fp8 KV and q cast to fp8 as AITER's fp8 path casts it: one fp8 MMA for Q@K^T on the
    KV tile as loaded (MlaKernelConfig.fp8_q_one_part), where `triton` splits q into two fp8 parts to keep bf16's
    accuracy. Judged at the fp8-query tolerance, as aiter is: the portable peer of AITER's numerics."""

    name = "triton_fp8q"
    description = "portable Triton, fp8 KV with q cast to fp8 (AITER's numerics): one fp8 MMA for Q@K^T"
    on_request = True  # a question of its own (q's precision), not every sweep's

    def unavailable_reason(self, platform: PlatformInfo, world_size: int) -> str | None:
        if not platform.has_gpu:  # its gate would judge the interpreter's rounding, not the kernel's
            return ("Triton's CPU interpreter rounds to fp8 unlike a GPU, so q's fp8 cast cannot be judged here "
                    "(tests/test_mla_kernels.py checks its kernels on the CPU)")
        return super().unavailable_reason(platform, world_size)

    def unsupported_reason(self, case: Case, platform: PlatformInfo) -> str | None:
        if not is_fp8(case["kv_dtype"]):
            return "q in fp8 goes with an fp8 KV cache"
        return fp8_unsupported_reason(case, platform)

    def tolerance(self, case: Case, platform: PlatformInfo) -> Tolerance | None:
        return FP8_QUERY_TOLERANCE

    def config(self, case: Case, ctx: RankContext) -> tuple:
        config, source = super().config(case, ctx)
        return dataclasses.replace(config, fp8_qk=True, fp8_q_one_part=True), f"{source}, q in one fp8 part"

    def tuning(self, case: Case, ctx: RankContext) -> Tuning | None:
        return None  # the triton backend's tuned configs apply (default_config); the q part is this backend's


@REGISTRY.register
class AiterMla(Backend):
    """AITER's MLA decode as SGLang's aiter backend calls it for decode (seed PRs #27188, #23382)."""

    name = "aiter"
    platforms = ("rocm",)
    description = ("AITER mla_decode_fwd; persistent via get_mla_metadata_v1 with SGLang's decode arguments and "
                   "fast_mode policy; kernels looked up in AITER's mla_asm.csv")
    requires = ("aiter.mla", "aiter.ops.attention")
    batch_invariance = (
        ("non-persistent", False, "rocbench passes num_kv_splits=None; mla_decode_fwd then asks get_meta_param for a "
                                  "split count chosen from the batch size, total KV and CU count (aiter/mla.py:305-343, "
                                  "called at :594-597): a request's KV is split, and reduced, differently in another "
                                  "batch"),
        ("persistent", False, "get_mla_metadata_v1 deals the whole batch's KV granules to the CUs "
                              "(max_split_per_batch 64/32): a request's split points depend on every other sequence"),
    )

    def unsupported_reason(self, case: Case, platform: PlatformInfo) -> str | None:
        return aiter_mla_plan(case, platform).reason

    def tolerance(self, case: Case, platform: PlatformInfo) -> Tolerance | None:
        return FP8_QUERY_TOLERANCE if is_fp8(case["kv_dtype"]) else None

    def prepare(self, case: Case, io: MlaIO, ctx: RankContext) -> Prepared:
        from aiter.mla import mla_decode_fwd

        plan = aiter_mla_plan(case, ctx.platform)
        batch, qlen, page_size = case["batch"], case["qlen"], io.kv.page_size
        qo_indptr = torch.arange(0, (batch + 1) * qlen, qlen, dtype=torch.int32, device=ctx.device)
        kv_buffer = io.kv.kv_buffer.view(-1, page_size, 1, io.kv.kv_buffer.shape[-1])
        kv_scale = io.kv.kv_scale if is_fp8(io.kv.dtype) else None
        q_scale, q_kernel = None, io.q
        if plan.q_dtype != io.q.dtype:  # SGLang hands the kernel a query already in the cache's fp8
            q_scale = torch.ones((), dtype=torch.float32, device=ctx.device)
            q_kernel = torch.empty(io.q.shape, dtype=plan.q_dtype, device=ctx.device)
        s = self.schedule(case, io, ctx, qo_indptr, plan) if plan.decision.persistent else AiterMlaSchedule()

        def run() -> torch.Tensor:
            if q_kernel is not io.q:
                q_kernel.copy_(io.q)
            mla_decode_fwd(q_kernel, kv_buffer, io.out, qo_indptr, io.kv.kv_indptr, io.kv.kv_indices,
                           io.kv.kv_last_page_lens, qlen, page_size=page_size, nhead_kv=1, sm_scale=SM_SCALE,
                           num_kv_splits=s.num_kv_splits, work_meta_data=s.work_metadata_ptrs,
                           work_indptr=s.work_indptr, work_info_set=s.work_info_set, reduce_indptr=s.reduce_indptr,
                           reduce_final_map=s.reduce_final_map, reduce_partial_map=s.reduce_partial_map,
                           q_scale=q_scale, kv_scale=kv_scale, intra_batch_mode=s.intra_batch_mode)
            return io.out
        return Prepared(run, plan.describe())

    @staticmethod
    def schedule(case: Case, io: MlaIO, ctx: RankContext, qo_indptr: torch.Tensor,
                 plan: AiterMlaPlan) -> "AiterMlaSchedule":
        """The persistent schedule, built the way SGLang builds it for decode."""
        from aiter.ops.attention import get_mla_metadata_info_v1, get_mla_metadata_v1

        decision, split, page_size = plan.decision, plan.split, io.kv.page_size
        specs = get_mla_metadata_info_v1(case["batch"], case["qlen"], case["nhead"], plan.q_dtype, io.kv.dtype,
                                         is_sparse=False, fast_mode=decision.fast_mode, num_kv_splits=split,
                                         intra_batch_mode=decision.intra_batch_mode)
        # get_mla_metadata_info_v1 lists the buffers in this order (aiter/ops/attention.py:1136-1156) ...
        order = ("work_metadata_ptrs", "work_indptr", "work_info_set", "reduce_indptr", "reduce_final_map",
                 "reduce_partial_map")
        s = AiterMlaSchedule(num_kv_splits=split, intra_batch_mode=decision.intra_batch_mode,
                             **{name: torch.empty(shape, dtype=dtype, device=ctx.device)
                                for name, (shape, dtype) in zip(order, specs)})
        # ... and get_mla_metadata_v1 takes them in another order (:1362-1374): by keyword, never by position.
        get_mla_metadata_v1(qo_indptr, io.kv.kv_indptr, io.kv.kv_last_page_lens, case["nhead"], 1, False,
                            work_metadata_ptrs=s.work_metadata_ptrs, work_info_set=s.work_info_set,
                            work_indptr=s.work_indptr, reduce_indptr=s.reduce_indptr,
                            reduce_final_map=s.reduce_final_map, reduce_partial_map=s.reduce_partial_map,
                            page_size=page_size, kv_granularity=max(page_size, 16), max_seqlen_qo=case["qlen"],
                            uni_seqlen_qo=case["qlen"], fast_mode=decision.fast_mode, max_split_per_batch=split,
                            intra_batch_mode=decision.intra_batch_mode, dtype_q=plan.q_dtype, dtype_kv=io.kv.dtype)
        return s

    def paths_here(self, platform: PlatformInfo) -> list[dict]:
        rows = []
        for nhead in NHEADS:
            for kv in (torch.bfloat16, fp8_for_arch(platform.arch)):
                for persist in (False, True):
                    case = Case((("nhead", nhead), ("kv_dtype", kv), ("q_dtype", torch.bfloat16), ("qlen", 1),
                                 ("persist", persist)))
                    plan = aiter_mla_plan(case, platform)
                    rows.append({"nhead": nhead, "kv": dtype_name(kv), "persist asked": persist,
                                 "q length 1": "unsupported: " + plan.reason if plan.reason else plan.describe()})
        return rows
