#!/usr/bin/env bash
# One device call: step 03's forward grid (B=4, H=32, N 1024..16384, causal and not) beside every
# baseline, in parts that each save their own results file, most important first, so that a call
# that runs out of time still returns what it finished. Writes $OUT/forward.tgz and logs.
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;; esac
python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
  || { echo "$(basename "$0") runs the benchmarks on a CUDA GPU, and there is none here (nothing to do)."; exit 0; }
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/fwd
budget=${BUDGET_S:-560}
start=$SECONDS
run_part() {  # dtype head_dim
  if (( SECONDS - start > budget - 150 )); then echo "SKIPPED part $1 d$2: out of time"; return; fi
  timeout $(( budget - (SECONDS - start) )) python3 03_advanced_optimizations/flash_attention.py \
    --quick-check --no-plots --dtype "$1" --head-dim "$2" --tag "$1_d$2" --out-dir /tmp/fwd
}
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu,power.draw --format=csv 2>&1 | tee "$OUT/env.log"
for part in "float16 128" "float16 64" "bfloat16 128" "bfloat16 64"; do
  run_part $part 2>&1 | tee -a "$OUT/forward.log" | grep -E "FAIL|ceilings|wrote|SKIPPED|Error|error" 
done
tar czf "$OUT/forward.tgz" -C /tmp/fwd .
