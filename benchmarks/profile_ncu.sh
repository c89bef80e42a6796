#!/usr/bin/env bash
# Each step's kernel under Nsight Compute (ncu), once, at B=4 H=16 N=2048 fp16 (GPU only; about 2-3 minutes).
#     bash benchmarks/profile_ncu.sh [DEST]   # DEST (default $OUT, else scratch/profile_ncu) gets the CSVs, log, summary
#
# What it does, in order (the workload is benchmarks/profile_kernels.py; its docstring lists the cases):
#  1. python benchmarks/profile_kernels.py: checks every case against the float64 reference, times it,
#     measures the matmul and copy ceilings, writes DEST/kernels.json; compiles every kernel (Triton's cache).
#  2. ncu --query-metrics and --list-sections: only the sections and metric names this ncu knows are asked for.
#  3. ncu over the same script (--under-ncu), profiling only the kernels inside its NVTX range "profile":
#     one launch per kernel. --replay-mode kernel (the default, said out loud): each kernel is replayed
#     alone, memory saved and restored between passes; --cache-control all (the default): caches flushed
#     before each pass, so every pass starts cold, as do_bench's runs do.
#     --clock-control none (not ncu's default, base): the SM runs at the clocks it picks by itself, as
#     in every benchmark of the series, so durations compare with the posts' timings; the price is a
#     little run-to-run spread, and the clock ncu saw is in the summary (sm_clock_hz). Set
#     NCU_CLOCK=base to lock the base clock instead (steadier metrics, longer kernels). If ncu refuses
#     an option at once (a section or metric this GPU lacks), it tries again with fewer, twice at most.
#  4. The report is exported twice as CSV (--page details and --page raw, --print-units base) and
#     summarized: python benchmarks/profile_kernels.py --summarize DEST -> DEST/summary.json.
# Files in DEST (7): kernels.json, metrics_query.txt, profile.ncu-rep, ncu_details.csv, ncu_raw.csv,
# profile.log, summary.json. Commit all but profile.ncu-rep and metrics_query.txt (1 MB) to 04_profiling/results/ncu/.
set -uo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "profile_ncu.sh runs on a GPU machine with Nsight Compute: no GPU here, nothing to do."; exit 0; fi
for dir in /usr/local/cuda/bin /opt/nvidia/nsight-compute/*; do  # ncu is often installed off the PATH
  command -v ncu >/dev/null || { [[ -x $dir/ncu ]] && PATH=$PATH:$dir; }
done
if ! command -v ncu >/dev/null; then echo "profile_ncu.sh needs ncu (Nsight Compute) beside the GPU: not found."; exit 0; fi
cd "$(dirname "$0")/.."
DEST=${1:-${OUT:-scratch/profile_ncu}}; mkdir -p "$DEST"
LOG="$DEST/profile.log"
CLOCK=${NCU_CLOCK:-none}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 LC_ALL=C
start=$SECONDS
{ ncu --version; nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv; echo "clock control: $CLOCK"; } > "$LOG" 2>&1

echo "== 1. check, time, ceilings (no profiler)" | tee -a "$LOG"
if ! "$PY" benchmarks/profile_kernels.py --out "$DEST" >> "$LOG" 2>&1; then
  tail -5 "$LOG"; echo "the workload failed its check (see $LOG): nothing profiled"; exit 1; fi

echo "== 2. what this ncu offers" | tee -a "$LOG"
ncu --query-metrics > "$DEST/metrics_query.txt" 2>&1
sections=$(ncu --list-sections 2>>"$LOG")
echo "$sections" >> "$LOG"
WANT_SECTIONS=(SpeedOfLight ComputeWorkloadAnalysis MemoryWorkloadAnalysis Occupancy LaunchStats WarpStateStats
               SchedulerStats SpeedOfLight_RooflineChart SpeedOfLight_HierarchicalTensorRooflineChart)
section_args=()
for s in "${WANT_SECTIONS[@]}"; do
  if grep -qE "^ *$s( |$)" <<< "$sections"; then section_args+=(--section "$s"); else echo "no section $s" | tee -a "$LOG"; fi
done
# Metric names: base name (before the first '.') must be in --query-metrics. Tensor pipes have
# different names per architecture (wgmma: ..._gmma_..., mma.sync: ..._hmma_...), so several are asked for.
CANDIDATES=(
  gpu__time_duration.sum sm__cycles_elapsed.avg.per_second sm__cycles_elapsed.avg sm__cycles_active.avg
  dram__bytes_read.sum dram__bytes_write.sum dram__bytes.sum.peak_sustained dram__cycles_elapsed.avg.per_second
  dram__throughput.avg.pct_of_peak_sustained_elapsed
  lts__t_bytes.sum lts__t_sectors_srcunit_tex_op_read.sum lts__t_sector_hit_rate.pct
  lts__throughput.avg.pct_of_peak_sustained_elapsed
  l1tex__t_sector_hit_rate.pct l1tex__throughput.avg.pct_of_peak_sustained_active
  l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum
  sm__throughput.avg.pct_of_peak_sustained_elapsed sm__warps_active.avg.pct_of_peak_sustained_active
  smsp__average_warp_latency_per_inst_issued.ratio smsp__inst_executed.sum
  sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active
  sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
  sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active
  sm__inst_executed_pipe_tensor_op_gmma.sum sm__inst_executed_pipe_tensor_op_hmma.sum
  sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active
)
metrics=()
for m in "${CANDIDATES[@]}"; do
  if grep -qE "^ *${m%%.*}( |$)" "$DEST/metrics_query.txt"; then metrics+=("$m"); else echo "no metric ${m%%.*}" >> "$LOG"; fi
done
# Every warp-stall reason this ncu knows, as cycles per issued instruction (the Warp State chart).
while read -r base; do metrics+=("$base.ratio"); done < <(
  grep -oE "^ *smsp__average_warps_issue_stalled_[a-z_]+_per_issue_active( |$)" "$DEST/metrics_query.txt" | tr -d ' ')
metric_list=$(IFS=,; echo "${metrics[*]}")
echo "sections: ${section_args[*]}" >> "$LOG"; echo "metrics: $metric_list" >> "$LOG"

echo "== 3. ncu over the same launches (clock control: $CLOCK)" | tee -a "$LOG"
run_ncu() {  # $@: the sections and metrics to ask for
  timeout 300 ncu --target-processes all --nvtx --nvtx-include "profile/" --replay-mode kernel \
      --cache-control all --clock-control "$CLOCK" --import-source no "$@" \
      -f -o "$DEST/profile" "$PY" benchmarks/profile_kernels.py --under-ncu >> "$LOG" 2>&1
}
CORE=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats
      --section WarpStateStats)
# An option ncu refuses (a section this GPU lacks, a metric name) fails within seconds: then fewer
# options, twice at most. A failure after a long run is not retried (device time).
attempts=("all" "core sections and metrics" "core sections")
for attempt in "${attempts[@]}"; do
  case $attempt in
    all) args=("${section_args[@]}" ${metric_list:+--metrics "$metric_list"});;
    core\ sections\ and\ metrics) args=("${CORE[@]}" ${metric_list:+--metrics "$metric_list"});;
    *) args=("${CORE[@]}");;
  esac
  t0=$SECONDS; run_ncu "${args[@]}"; rc=$?
  echo "ncu ($attempt): exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  [[ $rc -eq 0 || $((SECONDS - t0)) -gt 90 ]] && break
done
if [[ $rc -ne 0 ]]; then tail -20 "$LOG"; echo "ncu failed (exit $rc), see $LOG"; exit 1; fi

echo "== 4. CSV and summary" | tee -a "$LOG"
ncu -i "$DEST/profile.ncu-rep" --csv --page details --print-units base > "$DEST/ncu_details.csv" 2>>"$LOG"
ncu -i "$DEST/profile.ncu-rep" --csv --page raw --print-units base > "$DEST/ncu_raw.csv" 2>>"$LOG"
"$PY" benchmarks/profile_kernels.py --summarize "$DEST" 2>&1 | tee -a "$LOG"
echo "done in $((SECONDS - start)) s: $(ls "$DEST" | tr '\n' ' ')" | tee -a "$LOG"
