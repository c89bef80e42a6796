#!/usr/bin/env bash
# Device call 11 (notes/gpu_log.md), one GPU: issue 11's variants (TMA forward, Gluon forward, backward tiles,
# one-launch and atomic-dQ backward) against cuDNN and FlexAttention, compiled first by 12 processes.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
AUX="$OUT/aux"; mkdir -p "$AUX"; mv "$OUT/gpu.txt" "$AUX/"
ARGS=${HOPPER_ARGS:-"--lengths 4096 16384"}  # e.g. HOPPER_ARGS="--lengths 2048 4096 16384 --dtype bfloat16 float16"
K=12
# 1. compile everything the timed run launches (no timing yet), and meanwhile more stress calls at low priority
(nice -n 19 timeout 160 python3 benchmarks/stress_step_inputs.py --steps 03 --workers 3 --max-seconds 140 \
    --warmup 10 --max-len 2048 --seed 21 --out "$OUT/stress03.json" > "$AUX/stress03.log" 2>&1
 echo "stress03 rc=$?" >> "$AUX/stress03.log") &
stress=$!
pids=()
for (( i = 0; i < K; i++ )); do
  timeout 170 python3 benchmarks/hopper_experiments.py --warm-only --shard $i/$K $ARGS \
      --out-dir "$AUX/warm$i" > "$AUX/warm$i.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"; echo "warm done at $SECONDS s"; grep -h "FAIL\|^warm \|shard" "$AUX"/warm*.log | head -40
wait $stress; tail -3 "$AUX/stress03.log"
# 2. the timed run: checks (cache-hot), the short point, then the grid until the budget is spent
timeout $(( ${BUDGET:-260} + 70 )) python3 benchmarks/hopper_experiments.py $ARGS --budget-s ${BUDGET:-260} --out-dir "$OUT" > "$AUX/hopper.log" 2>&1
echo "hopper rc=$? at $SECONDS s"; grep -E "^check|FAIL" "$AUX/hopper.log" | head -30; sed -n '/^summary/,$p' "$AUX/hopper.log"
rm -rf "$AUX"/warm*/; tar czf "$OUT/aux.tgz" -C "$AUX" . && rm -rf "$AUX"; ls -la "$OUT"
