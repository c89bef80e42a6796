#!/usr/bin/env bash
# Every kernel of the series under compute-sanitizer: memcheck, racecheck, initcheck (GPU only).
#     bash benchmarks/sanitize.sh [DEST]      # DEST (default $OUT or scratch/sanitize) gets one log per tool
set -uo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
if ! command -v compute-sanitizer >/dev/null; then echo "sanitize.sh needs compute-sanitizer and a GPU: nothing to do."; exit 0; fi
cd "$(dirname "$0")/.."
DEST=${1:-${OUT:-scratch/sanitize}}; mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
python3 benchmarks/sanitize_kernels.py > "$DEST/sanitize_plain.log" 2>&1  # compile once, outside the tools
for tool in memcheck racecheck initcheck; do
  timeout 300 compute-sanitizer --tool "$tool" --target-processes all --print-limit 20 \
      python3 benchmarks/sanitize_kernels.py > "$DEST/sanitize_$tool.log" 2>&1
  echo "$tool: exit $? | $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$DEST/sanitize_$tool.log" | tail -1)"
done
