#!/usr/bin/env bash
# All-gather on a machine with >= 2 GPUs, in two calls that each fit the device's 10-minute limit:
#   scripts/device_allgather.sh graph   GPU tests, all-dtype gates under CUDA graphs, timed graph-gated sweep
#   scripts/device_allgather.sh eager   all-dtype gates in eager mode, timed eager-gated sweep, fault injection
# Everything lands under $OUT (the run directories tarred into one file, since few files come back).
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-results/device}
mkdir -p "$OUT/runs"
TP=${TP:-$(nvidia-smi -L | wc -l)}
# 2 KiB .. 64 MiB per rank in bf16: TP8/TP2 logits rows, hidden states, and the bandwidth end.
SHAPES=1x1024,1x7168,1x16160,8x7168,1x64640,64x7168,8x64640,256x7168,64x64640,512x16384,256x64640,2048x16384

step() {
    local limit=$1; shift
    echo "== $* (limit ${limit}s)"
    timeout -k 10 "$limit" "$@"
    echo "== rc=$? after ${SECONDS}s"
}

case "${1:-}" in
    graph)
        nvidia-smi topo -m
        step 150 python3 -m pytest -q -x tests/test_allgather_gpu.py
        step 200 python3 -m rocbench allgather --tp "$TP" --correctness-only --cuda-graph --out "$OUT/runs"
        step 220 python3 -m rocbench allgather --tp "$TP" --dtypes bfloat16 --shapes "$SHAPES" --dims 0,-1 \
            --cuda-graph --out "$OUT/runs"
        ;;
    eager)
        step 150 python3 -m rocbench allgather --tp "$TP" --correctness-only --out "$OUT/runs"
        step 200 python3 -m rocbench allgather --tp "$TP" --dtypes bfloat16 --shapes "$SHAPES" --dims 0,-1 \
            --out "$OUT/runs"
        step 220 python3 scripts/fault_injection.py --gpu --only allgather --out "$OUT/inject"
        ;;
    *)
        echo "usage: $0 graph|eager" >&2; exit 2 ;;
esac
tar czf "$OUT/runs.tgz" -C "$OUT" runs $( [ -d "$OUT/inject" ] && echo inject )
rm -rf "$OUT/runs" "$OUT/inject"
