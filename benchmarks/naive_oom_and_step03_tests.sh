#!/usr/bin/env bash
# One short device call: naive PyTorch at N = 8192 and 16384 (does it fit in 80 GB?) beside step 03's
# peak memory, then step 03's test files natively on the GPU (the merged forward + backward).
# Usage on a GPU machine: bash benchmarks/naive_oom_and_step03_tests.sh   (writes under $OUT)
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;; esac
python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
  || { echo "$(basename "$0") runs the benchmarks on a CUDA GPU, and there is none here (nothing to do)."; exit 0; }
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 benchmarks/naive_oom.py --out-dir "$OUT" 2>&1 | tee "$OUT/naive_oom.log"
timeout 300 python3 -m pytest -q tests/test_flash_forward.py tests/test_flash_backward.py 2>&1 | tail -15 | tee "$OUT/pytest_step03.log"
