#!/usr/bin/env bash
# Device call 8 (notes/gpu_log.md): the variants against their peers again (the 128k window's
# check no longer builds a full mask), CUDA-graph capture, property tests and the stress run.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_flash_backward.py -k "reduce_overhead" \
    > "$OUT/cuda_graphs.log" 2>&1; echo "cuda graphs rc=$?"; grep -E "^E |passed|failed" "$OUT/cuda_graphs.log" | head -6
timeout 300 python3 03_advanced_optimizations/bench_variants.py --out-dir "$OUT" > "$OUT/variants.log" 2>&1
echo "variants rc=$?"; grep -E "^window|wrote|Error" "$OUT/variants.log" | tail -12
timeout 75 python3 benchmarks/stress_step_inputs.py --max-seconds 20 --warmup 10 --max-len 2048 \
    --out "$OUT/stress.json" > "$OUT/stress.log" 2>&1; echo "stress rc=$?"; tail -4 "$OUT/stress.log"
HYPOTHESIS_PROFILE=gpu timeout 100 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_properties.py \
    -x > "$OUT/properties_gpu.log" 2>&1; echo "properties rc=$?"; tail -3 "$OUT/properties_gpu.log"
