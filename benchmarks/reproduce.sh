#!/usr/bin/env bash
# Rerun every benchmark of the series on one CUDA GPU, then regenerate every results table and figure.
#
#   bash benchmarks/reproduce.sh            # everything on one GPU: about 75 minutes on an H100 (estimated)
#   bash benchmarks/reproduce.sh --list     # the parts, their commands and expected minutes; runs nothing
#   bash benchmarks/reproduce.sh --from 4   # resume at part 4 (after a failure)
#   bash benchmarks/reproduce.sh --out-root scratch/h200  # leave the committed results alone: write
#                                           # under scratch/h200/<step folder>/results/, no tables
#
# A full GPU run is the official one: each part writes into its step's committed results/ folder,
# so every file it names is replaced by this GPU's numbers (env.gpu in each file says which GPU;
# the tables print it). Each part's output also goes to scratch/reproduce/<UTC time>/NN.log.
# Progress: part i of n, time so far, time left estimated from the parts' expected durations
# (scaled by how the finished parts compared with theirs); the long sweeps inside a part print
# their own progress bar. A failed part is reported, the others still run, the exit status is 1.
# Without a GPU it says so and runs nothing (exit status 1). Not included: ring attention, which needs
# two GPUs or more (bash benchmarks/run_ring_attention.sh), and the compute-sanitizer run
# (bash benchmarks/sanitize.sh).
set -uo pipefail
cd "$(dirname "$0")/.."

# ------------------------------------------------------------------ the parts
# "expected seconds on an H100 | name | command", in order. Estimates from the runs in
# notes/gpu_log.md; the summary at the end prints the measured times to replace them with.
# To extend: add a line (the command runs from the repository root, with `python` on the PATH).
PARTS=(
  "180|step 01: check, full benchmark, plots|python 01_basic_attention/basic_attention.py --out-dir 01_basic_attention/results"
  "240|step 02: check, full benchmark, plots|python 02_vectorized_attention/vectorized_attention.py --out-dir 02_vectorized_attention/results"
  "180|step 02: block-size sweep (sweep02.json)|python benchmarks/sweep_step02.py --out-dir 02_vectorized_attention/results"
  # ---- step 03 (the lead extends this list as flash_attention.py / train_gpt.py change) ----
  "900|step 03: check, forward grid fp16 (forward.json)|python 03_advanced_optimizations/flash_attention.py --dtype float16 --out-dir 03_advanced_optimizations/results"
  "660|step 03: backward grid fp16 (backward.json)|python 03_advanced_optimizations/flash_attention.py --backward --quick-check --dtype float16 --out-dir 03_advanced_optimizations/results"
  "90|step 03: training demo (train_gpt.json)|python 03_advanced_optimizations/flash_attention.py --train --out-dir 03_advanced_optimizations/results"
  "180|step 03: backward tile sweep (backward_sweep.json)|python 03_advanced_optimizations/tune_backward.py --out-dir 03_advanced_optimizations/results"
  "480|step 03: autotuned kernel vs SDPA, fp16+bf16 (confirm3.json)|python 03_advanced_optimizations/tune_forward.py --stage 3 --out-dir 03_advanced_optimizations/results"
  "60|step 03: naive PyTorch out of memory (naive_oom.json)|python benchmarks/naive_oom.py --out-dir 03_advanced_optimizations/results"
  "240|step 03: decoding, packed batches, windows (variants.json)|python 03_advanced_optimizations/bench_variants.py --out-dir 03_advanced_optimizations/results"
  "60|step 03: host cost of one call (host_cost.json)|python 03_advanced_optimizations/host_cost.py --out-dir 03_advanced_optimizations/results"
  "420|step 03: model path and large grid against the previous version (model_path.json, grid_before_after.json)|bash benchmarks/make_baseline.sh && python 03_advanced_optimizations/bench_model_path.py --before .baseline/flash_attention_before.py --profile --grid --out-dir 03_advanced_optimizations/results"
  "600|step 03: Hopper variants against cuDNN and Flex (hopper_experiments.json)|python benchmarks/hopper_experiments.py --budget-s 540 --out-dir 03_advanced_optimizations/results"
  "180|profiling: every step's kernel under ncu (04_profiling/results/ncu)|bash benchmarks/profile_ncu.sh scratch/ncu && cp scratch/ncu/{kernels.json,ncu_details.csv,ncu_raw.csv,profile.log,summary.json} 04_profiling/results/ncu/"
  # ---- last: every table and figure from the files above ----
  "60|tables and figures (make_tables.py)|python make_tables.py && python make_tables.py --check"
)

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }
fmt() { local s=$1; if (( s < 60 )); then echo "${s} s"; elif (( s < 3600 )); then printf '%dm%02ds\n' $((s / 60)) $((s % 60)); else printf '%dh%02dm\n' $((s / 3600)) $((s % 3600 / 60)); fi; }

from=1 list=0 out_root=""
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --list) list=1 ;;
    --from) from=${2:?--from needs a part number}; shift ;;
    --out-root) out_root=${2:?--out-root needs a folder}; shift ;;
    *) echo "reproduce.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# The parts this run takes: from --from on; with --out-root, their --out-dir moved under it and
# without the tables (make_tables.py reads the committed files).
n=${#PARTS[@]} total=0 run=()
for (( i = 1; i <= n; i++ )); do
  part=${PARTS[i - 1]}
  if (( i >= from )) && { [ -z "$out_root" ] || [[ "$part" == *--out-dir* ]]; }; then
    [ -n "$out_root" ] && part=${part//--out-dir /--out-dir $out_root/}
    run+=("$i|$part"); total=$(( total + ${part%%|*} ))
  fi
done
if (( list )); then
  for part in "${run[@]}"; do
    IFS='|' read -r i secs name cmd <<< "$part"
    printf '%2d. %-62s ~%s\n      %s\n' "$i" "$name" "$(fmt "$secs")" "$cmd"
  done
  echo "total: about $(fmt "$total") on an H100 (estimated)"
  exit 0
fi

PYTHON=${PYTHON:-$(command -v python || command -v python3)}
if ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "reproduce.sh reruns the benchmarks on a CUDA GPU, and there is none here (nothing was run)."
  exit 1
fi

logs="scratch/reproduce/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$logs/bin"
ln -sf "$PYTHON" "$logs/bin/python"  # the parts say `python`, whatever this machine calls it
export PATH="$PWD/$logs/bin:$PATH" PYTHONUNBUFFERED=1
exec > >(tee -a "$logs/reproduce.log") 2>&1
echo "reproduce.sh: ${#run[@]} of $n parts, about $(fmt "$total") expected on an H100; logs in $logs/"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,temperature.gpu,power.draw --format=csv 2>&1 || true
python -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '| GPU', torch.cuda.get_device_name())"

start=$SECONDS expected_done=0 failed=() summary=()
for part in "${run[@]}"; do
  IFS='|' read -r i secs name cmd <<< "$part"
  elapsed=$(( SECONDS - start ))
  # Time left: the expected seconds still to run, scaled by how long the finished parts took
  # against their own expectations.
  left=$(( total - expected_done ))
  if (( expected_done > 0 && elapsed > 0 )); then left=$(( left * elapsed / expected_done )); fi
  echo
  echo "=== [$i/$n] $name | $(fmt "$elapsed") so far, about $(fmt "$left") left | expected $(fmt "$secs")"
  echo "    $cmd"
  t0=$SECONDS
  bash -c "$cmd" 2>&1 | tee "$logs/$(printf %02d "$i").log"
  status=${PIPESTATUS[0]}
  took=$(( SECONDS - t0 ))
  expected_done=$(( expected_done + secs ))
  if (( status != 0 )); then
    failed+=("$i. $name (exit status $status)")
    echo "=== [$i/$n] FAILED after $(fmt "$took"): $name (exit status $status); going on with the next part"
  fi
  summary+=("$(printf '%2d. %-62s expected %7s, took %7s%s' "$i" "$name" "$(fmt "$secs")" "$(fmt "$took")" \
              "$( (( status != 0 )) && echo ', FAILED')")")
done

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "total: $(fmt $(( SECONDS - start ))) (expected about $(fmt "$total")); logs in $logs/"
if (( ${#failed[@]} )); then
  echo "failed parts (their results files may be the old ones, or partly rewritten: see their logs):"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
if [ -n "$out_root" ]; then echo "every part passed: the results are under $out_root/"
else echo "every part passed: git status shows the results, tables and figures this GPU produced."; fi
