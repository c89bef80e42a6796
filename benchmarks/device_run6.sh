#!/usr/bin/env bash
# Device call 6 (notes/gpu_log.md): the training demo at both sizes, eager and compiled, then
# every kernel under compute-sanitizer (memcheck, racecheck, initcheck) and CUDA-graph capture.
set -uo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
if ! command -v nvidia-smi >/dev/null; then echo "$(basename "$0") runs on the GPU machine: no nvidia-smi here, nothing to do."; exit 0; fi
export PYTHONUNBUFFERED=1
OUT=${OUT:-scratch/run6}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
timeout 330 python3 03_advanced_optimizations/train_gpt.py --out-dir "$OUT" > "$OUT/train_gpt.log" 2>&1
echo "train rc=$?"; grep -E "final loss|Error|error" "$OUT/train_gpt.log" | tail -12
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_flash_backward.py -k "reduce_overhead" 2>&1 | tail -2
timeout 200 bash benchmarks/sanitize.sh "$OUT"
