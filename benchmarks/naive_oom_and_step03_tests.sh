#!/usr/bin/env bash
# One short device call: naive PyTorch at N = 8192 and 16384 (does it fit in 80 GB?) beside step 03's
# peak memory, then step 03's test files natively on the GPU (the merged forward + backward).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
python3 - <<'PY' 2>&1 | tee "$OUT/naive_oom.log"
import os, sys
sys.path.insert(0, ".")
import shared, torch
flash = shared.load_step("03").flash_attention
rows = shared.quick_benchmark({"naive torch": shared.naive_torch, "03 flash": flash},
                              shapes=[(4, 32, n, d) for d in (64, 128) for n in (8192, 16384)],
                              causal=False, dtype=torch.float16, warmup=5, rep=20)
shared.save_results(os.path.join(os.environ.get("OUT", "/tmp"), "naive_oom.json"), rows,
                    command="bash benchmarks/naive_oom_and_step03_tests.sh")
PY
timeout 300 python3 -m pytest -q tests/test_flash_forward.py tests/test_flash_backward.py 2>&1 | tail -15 | tee "$OUT/pytest_step03.log"
