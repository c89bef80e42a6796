# Sourced by benchmarks/device_run*.sh: --help from the caller's header (lines 2-3), a clean exit
# without a GPU, and $OUT (the device tool's output folder, else scratch/<name>) with the GPU stamp.
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
if ! command -v nvidia-smi >/dev/null; then echo "$(basename "$0") runs on the GPU machine: no nvidia-smi here, nothing to do."; exit 0; fi
export PYTHONUNBUFFERED=1
OUT=${OUT:-scratch/$(basename "$0" .sh)}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
