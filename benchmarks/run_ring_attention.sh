#!/usr/bin/env bash
# Ring attention against PyTorch's context parallelism and one GPU: one torchrun per GPU count in
# $WORLDS (default "2 4"; a count above the GPUs present is skipped), each run with its own one-GPU
# reference, then the post's table. Extra arguments go to every run, e.g. --seq-lens 16384 65536.
#
#     bash benchmarks/run_ring_attention.sh [DEST] [-- bench args]
#
# DEST (default $OUT if set, else 03_advanced_optimizations/results) receives ring_w<W>.json and
# ring_w<W>.log. NVLink multicast stays off (NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1).
set -uo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
cd "$(dirname "$0")/.."
DEST=${OUT:-03_advanced_optimizations/results}
if [[ $# -gt 0 && $1 != -- ]]; then DEST=$1; shift; fi
[[ ${1:-} == -- ]] && shift
mkdir -p "$DEST"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
GPUS=$($PY -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if (( GPUS < 2 )); then echo "run_ring_attention.sh needs 2 or more CUDA GPUs ($GPUS here): nothing to do."; exit 0; fi
nvidia-smi --query-gpu=index,name,clocks.sm,temperature.gpu,power.draw --format=csv 2>&1 | tee "$DEST/ring_env.log"
nvidia-smi topo -m 2>&1 | tee -a "$DEST/ring_env.log" >/dev/null
for W in ${WORLDS:-2 4}; do
  if (( W > GPUS )); then echo "skipping W=$W: $GPUS GPU(s) here"; continue; fi
  $PY -m torch.distributed.run --standalone --nproc-per-node="$W" benchmarks/ring_attention_bench.py \
    --out "$DEST/ring_w$W.json" "$@" 2>&1 | tee "$DEST/ring_w$W.log"
done
$PY benchmarks/ring_attention_bench.py --table "$DEST"/ring_w*.json
