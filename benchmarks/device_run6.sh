#!/usr/bin/env bash
# Device call 6 (notes/gpu_log.md): the training demo at both sizes, eager and compiled, then
# every kernel under compute-sanitizer (memcheck, racecheck, initcheck) and CUDA-graph capture.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
timeout 330 python3 03_advanced_optimizations/train_gpt.py --out-dir "$OUT" > "$OUT/train_gpt.log" 2>&1
echo "train rc=$?"; grep -E "final loss|Error|error" "$OUT/train_gpt.log" | tail -12
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_flash_backward.py -k "reduce_overhead" 2>&1 | tail -2
timeout 200 bash benchmarks/sanitize.sh "$OUT"
