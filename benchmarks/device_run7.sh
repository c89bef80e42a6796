#!/usr/bin/env bash
# Device call 7 (notes/gpu_log.md): the variants against their peers (decoding, packed batches,
# sliding windows), CUDA-graph capture, property tests and the stress run on the GPU.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_flash_backward.py -k "reduce_overhead" \
    > "$OUT/cuda_graphs.log" 2>&1; echo "cuda graphs rc=$?"; grep -E "^E |passed|failed" "$OUT/cuda_graphs.log" | head -12
timeout 270 python3 03_advanced_optimizations/bench_variants.py --out-dir "$OUT" > "$OUT/variants.log" 2>&1
echo "variants rc=$?"; grep -vE "^ +|Warning|warn" "$OUT/variants.log" | tail -40
HYPOTHESIS_PROFILE=gpu timeout 120 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_properties.py \
    > "$OUT/properties_gpu.log" 2>&1; echo "properties rc=$?"; tail -3 "$OUT/properties_gpu.log"
timeout 100 python3 benchmarks/stress_step_inputs.py --max-seconds 25 --out "$OUT/stress.json" \
    > "$OUT/stress.log" 2>&1; echo "stress rc=$?"; tail -4 "$OUT/stress.log"
