#!/usr/bin/env bash
# Device call 3 (notes/gpu_log.md): host cost with direct launches, the model-path grid with
# profiles and the large before/after grid, step 02's tl.range pipelining experiment.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
timeout 60 python3 03_advanced_optimizations/host_cost.py --out-dir "$OUT" 2>&1 | tee "$OUT/host_cost.log" | head -12
cd 03_advanced_optimizations
timeout 330 python3 bench_model_path.py --before ../.baseline/flash_attention_before.py --profile --grid \
    --out-dir "$OUT" > "$OUT/model_path.log" 2>&1; echo "bench rc=$?"
grep -v "^    " "$OUT/model_path.log" | grep -E "bfloat16|host|wrote|Error" | tail -45
cd ..
timeout 120 python3 benchmarks/step02_range_stages.py --out "$OUT/range_stages.json" > "$OUT/range_stages.log" 2>&1
echo "range rc=$?"; tail -5 "$OUT/range_stages.log"
