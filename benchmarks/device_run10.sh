#!/usr/bin/env bash
# Device call 10 (notes/gpu_log.md), one GPU: the stress run (8 workers), the GPU property tests and the
# Gluon kernel's correctness check side by side (nothing timed then), then every kernel under ncu.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
AUX="$OUT/aux"; mkdir -p "$AUX"; mv "$OUT/gpu.txt" "$AUX/"
(timeout 150 python3 benchmarks/stress_step_inputs.py --steps 03 --workers 6 --max-seconds 105 --warmup 20 \
    --max-len 2048 --seed 11 --out "$OUT/stress03.json" > "$AUX/stress03.log" 2>&1; echo "stress03 rc=$?" >> "$AUX/stress03.log"
 timeout 80 python3 benchmarks/stress_step_inputs.py --steps 01 02 --workers 4 --max-seconds 28 --warmup 10 \
    --max-len 1024 --seed 12 --out "$OUT/stress0102.json" > "$AUX/stress0102.log" 2>&1; echo "stress0102 rc=$?" >> "$AUX/stress0102.log") &
(HYPOTHESIS_PROFILE=gpu timeout 200 python3 -m pytest -q -n 5 -p no:cacheprovider --hypothesis-show-statistics \
    tests/test_properties.py > "$AUX/properties_gpu.log" 2>&1; echo "properties rc=$?" >> "$AUX/properties_gpu.log") &
timeout 200 python3 03_advanced_optimizations/flash_attention_gluon.py --check --out-dir "$AUX" > "$AUX/gluon_check.log" 2>&1
echo "gluon check rc=$?" | tee -a "$AUX/gluon_check.log"; grep -ciE "fail" "$AUX/gluon_check.log"; tail -4 "$AUX/gluon_check.log"
wait
tail -2 "$AUX/stress03.log" "$AUX/stress0102.log"; grep -E "passed|failed|rc=" "$AUX/properties_gpu.log" | tail -3
timeout 290 bash benchmarks/profile_ncu.sh "$AUX/ncu" > "$AUX/profile_ncu.out" 2>&1; echo "ncu rc=$?"; tail -15 "$AUX/profile_ncu.out"
if [[ -f "$AUX/ncu/profile.ncu-rep" ]]; then mv "$AUX/ncu/profile.ncu-rep" "$OUT/"; fi
timeout 60 python3 03_advanced_optimizations/flash_attention_gluon.py --kernel ws --check > "$AUX/gluon_ws_check.log" 2>&1
echo "gluon ws rc=$?"; tail -3 "$AUX/gluon_ws_check.log"
tar czf "$OUT/aux.tgz" -C "$AUX" . && rm -rf "$AUX"; ls -la "$OUT"
