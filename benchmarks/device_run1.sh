#!/usr/bin/env bash
# Device call 1 of the model-path session (see notes/gpu_log.md): step 03's tests on the GPU,
# then the model-path grid, the profiler tables and the large grid, before (the last commit
# before the rewrite, carried as .baseline/flash_attention_before.py) against after.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" >> "$OUT/gpu.txt"
cd 03_advanced_optimizations
timeout 230 python3 -m pytest -q -p no:cacheprovider --maxfail=5 ../tests/test_flash_variants.py \
    ../tests/test_flash_forward.py ../tests/test_flash_backward.py > "$OUT/pytest_step03.log" 2>&1
echo "pytest rc=$?" | tee -a "$OUT/pytest_step03.log"
tail -5 "$OUT/pytest_step03.log"
timeout 240 python3 bench_model_path.py --before ../.baseline/flash_attention_before.py --profile --grid \
    --out-dir "$OUT" 2>&1 | tee "$OUT/model_path.log" | grep -v "^    "
echo "bench rc=$?"
