#!/usr/bin/env bash
# One device call: the tests natively on the GPU, then steps 01 and 02 (check + full benchmark).
# Usage on the device machine: bash benchmarks/run_steps_01_02.sh  (writes under $OUT)
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;; esac
python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
  || { echo "$(basename "$0") runs the benchmarks on a CUDA GPU, and there is none here (nothing to do)."; exit 0; }
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
  python3 -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee "$OUT/env.log"
python3 -m pytest -q -x tests/test_shared.py tests/test_basic_attention.py tests/test_vectorized_attention.py \
  2>&1 | tail -20 | tee "$OUT/pytest.log"
python3 01_basic_attention/basic_attention.py --out-dir /tmp/step01 2>&1 | tee "$OUT/step01.log"
python3 02_vectorized_attention/vectorized_attention.py --out-dir /tmp/step02 2>&1 | tee "$OUT/step02.log"
tar czf "$OUT/step01.tgz" -C /tmp/step01 . ; tar czf "$OUT/step02.tgz" -C /tmp/step02 .
