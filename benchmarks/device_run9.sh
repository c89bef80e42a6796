#!/usr/bin/env bash
# Device call 9 (notes/gpu_log.md), on 4 GPUs of one host: ring attention on 2 then 4 GPUs against
# PyTorch's context parallelism; while W=2 holds GPUs 0-1, GPUs 2-3 run step 03's GPU tests and the stress run.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.device_count(), torch.cuda.get_device_name())" >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
AUX="$OUT/aux"; mkdir -p "$AUX"; mv "$OUT/gpu.txt" "$AUX/"
LENS="--seq-lens 32768 65536 131072"
# GPUs 2 and 3, in the background while W=2 runs (each bounded well inside W=2's time)
(CUDA_VISIBLE_DEVICES=2 timeout 290 python3 benchmarks/stress_step_inputs.py --steps 03 --max-seconds 260 \
    --warmup 40 --max-len 2048 --seed 1 --out "$OUT/stress03.json" > "$AUX/stress03.log" 2>&1
 echo "stress03 rc=$?" >> "$AUX/stress03.log") &
(CUDA_VISIBLE_DEVICES=3 timeout 140 python3 -m pytest -q -n 6 -p no:cacheprovider tests/test_flash_variants.py \
    tests/test_flash_forward.py tests/test_flash_backward.py > "$AUX/pytest_step03.log" 2>&1
 echo "pytest rc=$?" >> "$AUX/pytest_step03.log"
 CUDA_VISIBLE_DEVICES=3 timeout 140 python3 benchmarks/stress_step_inputs.py --steps 01 02 --max-seconds 60 \
    --warmup 20 --max-len 1024 --seed 2 --out "$OUT/stress0102.json" > "$AUX/stress0102.log" 2>&1
 echo "stress0102 rc=$?" >> "$AUX/stress0102.log") &
WORLDS=2 CUDA_VISIBLE_DEVICES=0,1 timeout 320 bash benchmarks/run_ring_attention.sh "$AUX" -- $LENS --budget-s 190
echo "ring W=2 rc=$?"
wait
tail -3 "$AUX/pytest_step03.log" "$AUX/stress03.log" "$AUX/stress0102.log"
WORLDS=4 timeout 215 bash benchmarks/run_ring_attention.sh "$AUX" -- $LENS --budget-s 120
echo "ring W=4 rc=$?"
mv "$AUX"/ring_w*.json "$OUT/" 2>/dev/null
tar czf "$OUT/aux.tgz" -C "$AUX" . && rm -rf "$AUX"
ls -la "$OUT"
