#!/usr/bin/env bash
# One device call: step 03's backward grid (parts saved as they finish), then the training demo,
# then, with what time is left, step 03's bf16 forward at D=128.
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;; esac
python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
  || { echo "$(basename "$0") runs the benchmarks on a CUDA GPU, and there is none here (nothing to do)."; exit 0; }
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/bwd /tmp/train /tmp/fwd
start=$SECONDS
python3 benchmarks/step03_backward_grid.py --out-dir /tmp/bwd --seconds 330 2>&1 | tee "$OUT/backward.log" | grep -E "SKIPPED|Error|error" 
python3 03_advanced_optimizations/train_gpt.py --steps 300 --out-dir /tmp/train 2>&1 | tail -8 | tee "$OUT/train.log"
left=$(( 570 - (SECONDS - start) ))
if (( left > 200 )); then
  timeout $left python3 03_advanced_optimizations/flash_attention.py --quick-check --no-plots --no-flex \
    --dtype bfloat16 --head-dim 128 --tag bfloat16_d128_noflex --slow-n-max 2048 --out-dir /tmp/fwd 2>&1 \
    | tee "$OUT/forward_bf16.log" | grep -E "FAIL|ceilings|wrote"
fi
tar czf "$OUT/results.tgz" -C /tmp bwd train fwd
