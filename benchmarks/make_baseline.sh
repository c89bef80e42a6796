#!/usr/bin/env bash
# The "previous version" of step 03 that bench_model_path.py --before times beside the current one:
# commit bb99857's flash_attention.py, with its custom ops renamed (both register in one process) and
# differentiable=True added to its input checks (the shared checks now refuse inputs that need a
# gradient unless the caller says it has a backward pass).
#     bash benchmarks/make_baseline.sh        # writes .baseline/flash_attention_before.py (ignored by git)
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
if ! command -v nvidia-smi >/dev/null; then
  echo "make_baseline.sh prepares a GPU benchmark (bench_model_path.py --before): no GPU here, nothing to do."; exit 0
fi
cd "$(dirname "$0")/.."
git cat-file -e bb99857 2>/dev/null || { echo "make_baseline.sh needs the repository's history (commit bb99857)" >&2; exit 1; }
mkdir -p .baseline
git show bb99857:03_advanced_optimizations/flash_attention.py \
  | sed 's/triton_attention::/triton_attention_before::/g' \
  | sed 's/min_head_dim=16,$/min_head_dim=16, differentiable=True,/' \
  | sed 's/min_head_dim=16, max_head_dim=256)$/min_head_dim=16, max_head_dim=256, differentiable=True)/' \
  > .baseline/flash_attention_before.py
echo "wrote .baseline/flash_attention_before.py"
