"""The Gluon stand-ins scripts/mla_gluon_ablate.py swaps into rocbench.kernels.mla_gluon (their names and signatures
are those they replace); module-level so that Triton finds their source and globals."""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier

from rocbench.kernels.mla_gluon import BLOCK, _program_items, _work_item


@gluon.jit
def _no_conversion(kv_smem, v16_smem, first_box, DV_BASE: gl.constexpr):
    """mla_gluon._v_to_f16 without the conversion, wherever the tile converts (after the Q@K^T wait, or under the
    MMAs: gluon_convert_under_qk): V's fp16 buffer left as it is, the fence kept."""
    fence_async_shared()


@gluon.jit
def _wait_and_release(shared, DV_BASE: gl.constexpr, INFO_COLS: gl.constexpr, ONE_CHAIN: gl.constexpr):
    """mla_gluon._consumer_of doing nothing but the handshakes: each item's q and each KV block waited for and
    released, so that the producer streams the KV at its own pace."""
    WORK_INDPTR, WORK_INFO = shared[5], shared[6]
    q_full, q_empty, kv_full, kv_empty = shared[4]
    NUM_STAGES: gl.constexpr = kv_full.shape[0]
    first, last = _program_items(WORK_INDPTR)
    it = 0
    for item in range(first, last):
        b, g, kv_start, kv_end, slot = _work_item(WORK_INFO, item, INFO_COLS)
        mbarrier.wait(q_full, (item - first) & 1)
        for start in range(kv_start, kv_end, BLOCK):
            stage = it % NUM_STAGES
            mbarrier.wait(kv_full.index(stage), (it // NUM_STAGES) & 1)
            mbarrier.arrive(kv_empty.index(stage), count=1)
            it += 1
        mbarrier.arrive(q_empty, count=1)
