#!/usr/bin/env bash
# All-gather on a machine with >= 2 GPUs. Name the parts to run (each fits well inside the device's
# 10-minute limit alone; about 4 minutes for all but `faults`):
#   tests        GPU tests: the copy kernel, then the whole suite at TP = all GPUs (stops here on failure)
#   gates-graph  every dtype x default shape x dim 0/-1, correctness only, CUDA-graph replays gated
#   gates-eager  the same without graphs
#   timed-graph  bf16, 2 KiB .. 64 MiB per rank, timed, graph replays gated
#   timed-eager  the same, eager gates
#   faults       the fault-injection matrix's all-gather GPU entries
# e.g.  scripts/device_allgather.sh tests gates-graph timed-graph timed-eager
# Everything lands under $OUT (run directories tarred into one file, since few files come back).
set -u
[ $# -gt 0 ] || { sed -n 2,11p "$0" >&2; exit 2; }
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-results/device}
mkdir -p "$OUT/runs"
TP=${TP:-$(nvidia-smi -L | wc -l)}
# 2 KiB .. 64 MiB per rank in bf16: TP8/TP2 logits rows, hidden states, and the bandwidth end.
SHAPES=1x1024,1x7168,1x16160,8x7168,1x64640,64x7168,8x64640,256x7168,64x64640,512x16384,256x64640,2048x16384

# shellcheck source=scripts/device_step.sh
source "$(dirname "$0")/device_step.sh"

finish() {
    tar czf "$OUT/runs.tgz" -C "$OUT" runs $( [ -d "$OUT/inject" ] && echo inject )
    rm -rf "$OUT/runs" "$OUT/inject"
    exit "$1"
}

nvidia-smi topo -m
for part in "$@"; do
    case "$part" in
        tests) step 200 python3 -m pytest -q -x tests/test_allgather_kernel.py tests/test_allgather_gpu.py || finish 1 ;;
        gates-graph) step 240 python3 -m rocbench allgather --tp "$TP" --correctness-only --cuda-graph --out "$OUT/runs" ;;
        gates-eager) step 150 python3 -m rocbench allgather --tp "$TP" --correctness-only --out "$OUT/runs" ;;
        timed-graph) step 200 python3 -m rocbench allgather --tp "$TP" --dtypes bfloat16 --shapes "$SHAPES" --dims 0,-1 \
                         --cuda-graph --out "$OUT/runs" ;;
        timed-eager) step 200 python3 -m rocbench allgather --tp "$TP" --dtypes bfloat16 --shapes "$SHAPES" --dims 0,-1 \
                         --out "$OUT/runs" ;;
        faults) step 240 python3 scripts/fault_injection.py --gpu --only allgather --out "$OUT/inject" ;;
        *) echo "unknown part: $part" >&2; finish 2 ;;
    esac
done
finish 0
