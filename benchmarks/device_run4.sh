#!/usr/bin/env bash
# Device call 4 (notes/gpu_log.md): host cost with direct launches (fixed) and its breakdown,
# then the model-path grid and profiles, before/after.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
timeout 90 python3 03_advanced_optimizations/host_cost.py --out-dir "$OUT" 2>&1 | tee "$OUT/host_cost.log" | head -16
cd 03_advanced_optimizations
timeout 300 python3 bench_model_path.py --before ../.baseline/flash_attention_before.py --profile \
    --out-dir "$OUT" > "$OUT/model_path.log" 2>&1; echo "bench rc=$?"
grep -v "^    " "$OUT/model_path.log" | grep -E "bfloat16|host|wrote|Error" | tail -40
