#!/usr/bin/env bash
# Device call 2 (notes/gpu_log.md): where one call's host time goes (host_cost.py), step 03's
# tests on the GPU in 8 processes, the model-path grid and profiles before/after.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" >> "$OUT/gpu.txt"
timeout 60 python3 03_advanced_optimizations/host_cost.py --out-dir "$OUT" 2>&1 | tee "$OUT/host_cost.log"
timeout 170 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_flash_variants.py tests/test_flash_forward.py \
    tests/test_flash_backward.py > "$OUT/pytest_step03.log" 2>&1
echo "pytest rc=$?" | tee -a "$OUT/pytest_step03.log"; tail -15 "$OUT/pytest_step03.log"
cd 03_advanced_optimizations
timeout 230 python3 bench_model_path.py --before ../.baseline/flash_attention_before.py --profile \
    --out-dir "$OUT" 2>&1 | tee "$OUT/model_path.log" | grep -v "^    " | tail -60
