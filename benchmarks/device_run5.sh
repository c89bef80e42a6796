#!/usr/bin/env bash
# Device call 5 (notes/gpu_log.md): the model-path grid (five wall-clock trials) with profiles,
# then the large before/after grid, forward and backward.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
timeout 90 python3 03_advanced_optimizations/host_cost.py --out-dir "$OUT" > "$OUT/host_cost.log" 2>&1
head -13 "$OUT/host_cost.log"
cd 03_advanced_optimizations
timeout 200 python3 bench_model_path.py --before ../.baseline/flash_attention_before.py --profile \
    --out-dir "$OUT" > "$OUT/model_path.log" 2>&1; echo "model path rc=$?"
timeout 270 python3 bench_model_path.py --before ../.baseline/flash_attention_before.py --no-model --grid \
    --out-dir "$OUT" > "$OUT/grid.log" 2>&1; echo "grid rc=$?"
grep -E "TFLOP" "$OUT/grid.log" | tail -48
