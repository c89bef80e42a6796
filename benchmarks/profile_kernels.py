"""Profile each step's kernel under Nsight Compute: the workload, and the parser of ncu's CSV.

    python benchmarks/profile_kernels.py [--out DIR]        # GPU: check, time, launch each kernel once
    python benchmarks/profile_kernels.py --summarize DIR    # no GPU needed: DIR/ncu_details.csv -> DIR/summary.json
    bash benchmarks/profile_ncu.sh [DIR]                    # the whole thing under ncu (GPU; see its --help)

The workload, in launch order (fp16, B = 4, H = 16, N = 2048): steps 01 and 02 at D = 64 and 128, not
causal and causal (D = 128 causal is where step 02 falls short of 2x over step 01), step 02 at D = 128
and N = 512 (full and causal: there its causal run is no faster than the full one), then step 03's
forward and its backward's two kernels (dQ, then dK/dV) at D = 64, not causal. Each case is first
checked against the float64 reference at that very shape, and the script stops (exit 1) before
profiling anything if one does not match. Then, on a GPU, every case is timed with do_bench and the
same run measures the two ceilings the roofline needs (fp16 matmul, device-to-device copy). Last,
each case is launched exactly once inside one NVTX range, "profile", which is what `profile_ncu.sh`
tells ncu to profile (`--nvtx --nvtx-include profile/`): one launch per kernel, warm (compiled,
caches of Triton filled), with no other kernel inside the range. `DIR/kernels.json` lists those
launches in order, with the shape, FLOPs and do_bench time of each; `--summarize` matches them to
ncu's rows by order and checks the kernel names.

Step 01 is the slow one: about 24 ms per call at D = 128 on an H100 (half of the 48.5 ms its
results file records at H = 32), so ncu's replay passes stay within seconds per kernel.
"""
import argparse
import csv
import io
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE = {"batch": 4, "heads": 16, "n": 2048}
RANGE = "profile"  # the NVTX range ncu profiles
MANIFEST = "kernels.json"
DETAILS = "ncu_details.csv"
RAW = "ncu_raw.csv"  # optional: every collected metric by its name (the stall reasons of WarpStateStats, say)
SUMMARY = "summary.json"


def cases():
    """(label, step, head_dim, causal, mode, n, expected kernel names) in launch order."""
    out = []
    for step, kernel in (("01", "basic_attention_kernel"), ("02", "vectorized_attention_kernel")):
        name = {"01": "01 basic", "02": "02 vectorized"}[step]
        for d in (64, 128):
            for causal in (False, True):
                out.append((f"{name} D={d}{' causal' if causal else ''}", step, d, causal, "fwd", SHAPE["n"], [kernel]))
    # N = 512: where step 02's causal run is no faster than its full one (step 02's results file)
    for causal in (False, True):
        out.append((f"02 vectorized D=128{' causal' if causal else ''} N=512", "02", 128, causal, "fwd", 512,
                    ["vectorized_attention_kernel"]))
    out.append(("03 flash fwd D=64", "03", 64, False, "fwd", SHAPE["n"], ["flash_attention_forward_kernel"]))
    out.append(("03 flash bwd D=64", "03", 64, False, "bwd", SHAPE["n"], ["_bwd_dq_kernel", "_bwd_dkdv_kernel"]))
    return out


def loop_iterations(step, n, head_dim, causal):
    """Trips through the key loop, summed over every program of a step-01 or step-02 launch.

    Step 01 visits one key per trip, step 02 one block of BLOCK_N keys; causal row i stops at key i.
    """
    import shared

    block = 1 if step == "01" else shared.load_step("02").block_n_for(head_dim)
    rows = [(i + 1) if causal else n for i in range(n)]
    return SHAPE["batch"] * SHAPE["heads"] * sum(-(-r // block) for r in rows)


# ----------------------------------------------------------------------------- the workload (GPU)
def build(step, head_dim, causal, mode, n):
    """(run, check): run() launches the case's kernel(s) once; check() says whether it matches the reference."""
    import shared
    import torch

    b, h = SHAPE["batch"], SHAPE["heads"]
    torch.manual_seed(0)
    q, k, v = shared.make_qkv(b, h, n, head_dim, dtype=torch.float16)
    module = shared.load_step(step)
    if mode == "fwd":
        if step == "03":
            def run():
                return module.flash_attention_forward(q, k, v, causal=causal)[0]
        else:
            fn = module.basic_attention if step == "01" else module.vectorized_attention

            def run():
                return fn(q, k, v, causal=causal)

        def check():
            result = shared.test_correctness(lambda q, k, v, causal=False: run(), q, k, v, causal=causal)
            print(f"  {result}")
            return result.passed
        return run, check
    o, lse = module.flash_attention_forward(q, k, v, causal=causal)
    do = torch.randn_like(o)

    def run():
        return module.flash_attention_backward(do, q, k, v, o, lse, causal=causal)

    def check():
        errors = shared.compare_gradients(run(), q, k, v, do, causal=causal)
        for name, e in zip(("dq", "dk", "dv"), errors):
            print(f"  {name}: max abs error {e['ours']:.2e} (bound {e['bound']:.2e}) {'ok' if e['ok'] else 'FAIL'}")
        return all(e["ok"] for e in errors)
    return run, check


def workload(out, measure):
    import shared
    import torch
    import triton.testing

    built = []
    for label, step, d, causal, mode, n, kernels in cases():
        print(f"check {label}", flush=True)
        run, check = build(step, d, causal, mode, n)
        if not check():
            print(f"FAIL {label}: does not match the reference; nothing is profiled")
            return 1
        built.append((label, step, d, causal, mode, n, kernels, run))
    launches, ceilings = [], None
    if measure:
        for label, step, d, causal, mode, n, kernels, run in built:
            ms = triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median")
            flops = shared.attention_flops(SHAPE["batch"], SHAPE["heads"], n, n, d, causal, mode)
            print(f"time  {label:<32} {ms:8.3f} ms  {flops / ms / 1e9:7.1f} TFLOP/s", flush=True)
            launches.append({"label": label, "step": step, "head_dim": d, "causal": causal, "mode": mode, "n": n,
                             "kernels": kernels, "flops": flops, "do_bench_ms": ms,
                             "loop_iterations": loop_iterations(step, n, d, causal) if step != "03" else None,
                             "min_bytes": shared.attention_min_bytes(SHAPE["batch"], SHAPE["heads"], SHAPE["heads"],
                                                                     n, n, d, 2, mode)})
        ceilings = shared.measure_ceilings()
        print(f"ceilings: fp16 matmul {ceilings['matmul_tflops']:.0f} TFLOP/s, copy {ceilings['copy_gbps']:.0f} GB/s")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # freed blocks back to the driver: less memory for ncu to save and restore per pass
    torch.cuda.nvtx.range_push(RANGE)  # ncu profiles every kernel launched from here to the pop
    for *_, run in built:
        run()
        torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
    print(f"launched {len(built)} cases once each inside the NVTX range {RANGE!r}")
    if measure:
        path = Path(out) / MANIFEST
        path.parent.mkdir(parents=True, exist_ok=True)
        command = "bash benchmarks/profile_ncu.sh"
        shared.save_results(path, launches, shape={**SHAPE, "dtype": "float16"}, ceilings=ceilings,
                            command=command, nvtx_range=RANGE)
        print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- the parser (no GPU)
# Base units ncu prints with --print-units base, and a few scaled ones in case a report was exported
# without it: the factor to seconds or to bytes.
TIME_UNITS = {"nsecond": 1e-9, "ns": 1e-9, "usecond": 1e-6, "us": 1e-6, "msecond": 1e-3, "ms": 1e-3,
              "second": 1.0, "s": 1.0}
BYTE_UNITS = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12, "KB": 1e3, "MB": 1e6, "GB": 1e9}
RATE_UNITS = {"byte/second": 1, "Kbyte/second": 1e3, "Mbyte/second": 1e6, "Gbyte/second": 1e9,
              "Tbyte/second": 1e12, "byte/s": 1, "B/s": 1, "GB/s": 1e9, "TB/s": 1e12}
HZ_UNITS = {"hz": 1, "Hz": 1, "cycle/second": 1, "cycle/nsecond": 1e9, "Khz": 1e3, "Mhz": 1e6, "Ghz": 1e9,
            "KHz": 1e3, "MHz": 1e6, "GHz": 1e9, "cycle/usecond": 1e6}


def number(text):
    """ncu's value text as a float ("1,234.5" -> 1234.5), or None ("n/a", "")."""
    try:
        return float(text.replace(",", ""))
    except (AttributeError, ValueError):
        return None


def parse_details_csv(text):
    """``ncu --csv --page details`` text -> list of launches in ID order.

    Each launch: {"id", "kernel", "block", "grid", "metrics": {name: (unit, value)}, "sections":
    {(section, name): (unit, value)}}. Section metrics carry ncu's display names ("Duration"),
    `--metrics` ones their metric names, under "Command line profiler metrics". Lines before the
    header (==PROF== messages, the program's own output) are skipped; rule rows (no metric name) too.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID","Process ID"')), None)
    if start is None:
        raise ValueError("no ncu CSV header (\"ID\",\"Process ID\",...) in this text")
    launches = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        if not row.get("ID", "").isdigit() or not row.get("Metric Name"):
            continue
        launch = launches.setdefault(int(row["ID"]), {
            "id": int(row["ID"]), "kernel": row["Kernel Name"], "block": row.get("Block Size"),
            "grid": row.get("Grid Size"), "device": row.get("Device"), "cc": row.get("CC"),
            "metrics": {}, "sections": {}})
        value = number(row["Metric Value"])
        entry = (row.get("Metric Unit", ""), row["Metric Value"] if value is None else value)
        launch["metrics"].setdefault(row["Metric Name"], entry)
        launch["sections"][(row.get("Section Name", ""), row["Metric Name"])] = entry
    return [launches[i] for i in sorted(launches)]


def parse_raw_csv(text):
    """``ncu --csv --page raw`` text -> {launch ID: {metric name: (unit, value)}}.

    One header row (the launch columns, then one column per metric name), one row of units, then
    one row per launch.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID","Process ID"')), None)
    if start is None:
        raise ValueError("no ncu CSV header (\"ID\",\"Process ID\",...) in this text")
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header, units = rows[0], rows[1] if len(rows) > 1 else []
    out = {}
    for row in rows[1:]:
        if not row or not row[0].isdigit():
            continue  # the units row, or anything else
        metrics = out.setdefault(int(row[0]), {})
        for name, unit, text_value in zip(header, units, row):
            value = number(text_value)
            if "__" in name:  # metric names have a unit prefix: dram__, sm__, launch__ ...
                metrics[name] = (unit, text_value if value is None else value)
    return out


def first(metrics, *names, units=None):
    """The first of `names` that the launch has, as a float in base units (None if none has it)."""
    for name in names:
        if name in metrics:
            unit, value = metrics[name]
            if not isinstance(value, float):
                continue
            if units is not None:
                unit = unit if unit in units else unit.split("/")[0]  # "byte/block" counts in bytes
                if unit not in units:
                    continue
                value *= units[unit]
            return value
    return None


STALL = re.compile(r"issue_stalled_([a-z0-9_]+?)(_per_(?:issue|warp)_active)?\.(?:ratio|pct)$")


def stall_reasons(metrics):
    """{reason: value} from the warp-state metrics of one family.

    ncu names the same breakdown several ways (`smsp__average_warps_issue_stalled_<reason>_per_issue_active
    .ratio`: cycles per issued instruction; `smsp__warp_issue_stalled_<reason>_per_warp_active.pct`: % of
    warps; ...). Values of two families do not mix, so this takes the family with the most reasons.
    """
    families = {}
    for name, (_, value) in metrics.items():
        match = STALL.search(name)
        if match and isinstance(value, float) and "not_issued" not in name:
            family = name[:match.start(1)] + "*" + name[match.end(1):]
            families.setdefault(family, {})[match.group(1)] = value
    return max(families.values(), key=len) if families else {}


def summarize_launch(launch):
    """The chapter's numbers for one ncu launch, each from the first metric name that ncu reported."""
    m = launch["metrics"]
    pct = {"%": 1, "pct": 1, "": 1}
    duration = first(m, "gpu__time_duration.sum", "Duration", units=TIME_UNITS)
    read = first(m, "dram__bytes_read.sum", units=BYTE_UNITS)
    write = first(m, "dram__bytes_write.sum", units=BYTE_UNITS)
    dram = read + write if read is not None and write is not None else first(m, "dram__bytes.sum", units=BYTE_UNITS)
    dram_pct = first(m, "dram__throughput.avg.pct_of_peak_sustained_elapsed", "DRAM Throughput", units=pct)
    dram_bw = dram / duration if dram is not None and duration else first(
        m, "dram__bytes.sum.per_second", "DRAM Bandwidth", units=RATE_UNITS)
    peak = first(m, "dram__bytes.sum.peak_sustained")
    dram_clock = first(m, "dram__cycles_elapsed.avg.per_second", "DRAM Frequency", units=HZ_UNITS)
    dram_peak = peak * dram_clock if peak and dram_clock else (dram_bw / (dram_pct / 100) if dram_bw and dram_pct
                                                                else None)
    tensor = {name: value for name in m if name.startswith("sm__pipe_tensor") and "pct_of_peak" in name
              for value in [first(m, name, units=pct)] if value is not None}
    static = first(m, "launch__shared_mem_per_block_static", "Static Shared Memory Per Block", units=BYTE_UNITS)
    dynamic = first(m, "launch__shared_mem_per_block_dynamic", "Dynamic Shared Memory Per Block", units=BYTE_UNITS)
    reasons = stall_reasons(m)
    stalled = {r: v for r, v in reasons.items() if r != "selected"}
    total = sum(stalled.values())
    top = sorted(stalled.items(), key=lambda kv: -kv[1])[:3]
    l2_bytes = first(m, "lts__t_bytes.sum", units=BYTE_UNITS)
    l1_from_l2 = first(m, "lts__t_sectors_srcunit_tex_op_read.sum")
    return {
        "kernel": launch["kernel"], "block": launch["block"], "grid": launch["grid"],
        "duration_ms": duration * 1e3 if duration is not None else None,
        "sm_clock_hz": first(m, "sm__cycles_elapsed.avg.per_second", "SM Frequency", units=HZ_UNITS),
        "sm_count": first(m, "device__attribute_multiprocessor_count", "# SMs"),
        "sm_active_pct": (lambda a, e: 100 * a / e if a is not None and e else None)(
            first(m, "sm__cycles_active.avg", "SM Active Cycles"), first(m, "sm__cycles_elapsed.avg", "Elapsed Cycles")),
        "dram_bytes": dram, "dram_gbps": dram_bw / 1e9 if dram_bw else None,
        "dram_pct_of_peak": dram_pct, "dram_peak_gbps": dram_peak / 1e9 if dram_peak else None,
        "l2_bytes": l2_bytes, "l2_read_bytes_for_l1": l1_from_l2 * 32 if l1_from_l2 is not None else None,
        "l1_hit_pct": first(m, "l1tex__t_sector_hit_rate.pct", "L1/TEX Hit Rate", units=pct),
        "l2_hit_pct": first(m, "lts__t_sector_hit_rate.pct", "L2 Hit Rate", units=pct),
        "l1_throughput_pct": first(m, "l1tex__throughput.avg.pct_of_peak_sustained_active",
                                   "L1/TEX Cache Throughput", units=pct),
        "l2_throughput_pct": first(m, "lts__throughput.avg.pct_of_peak_sustained_elapsed",
                                   "L2 Cache Throughput", units=pct),
        "sm_throughput_pct": first(m, "sm__throughput.avg.pct_of_peak_sustained_elapsed",
                                   "Compute (SM) Throughput", units=pct),
        "tensor_pipe_pct": max(tensor.values()) if tensor else None,
        "tensor_pipe_metric": max(tensor, key=tensor.get) if tensor else None,
        "achieved_occupancy_pct": first(m, "sm__warps_active.avg.pct_of_peak_sustained_active",
                                        "Achieved Occupancy", units=pct),
        "theoretical_occupancy_pct": first(m, "sm__maximum_warps_per_active_cycle_pct", "Theoretical Occupancy",
                                           units=pct),
        "registers_per_thread": first(m, "launch__registers_per_thread", "Registers Per Thread"),
        "shared_bytes_per_block": (static or 0) + (dynamic or 0) if static is not None or dynamic is not None
        else None,
        "block_limit_registers": first(m, "launch__occupancy_limit_registers", "Block Limit Registers"),
        "waves_per_sm": first(m, "launch__waves_per_multiprocessor", "Waves Per SM"),
        "instructions": first(m, "smsp__inst_executed.sum", "Executed Instructions"),
        "warp_cycles_per_issued": first(m, "smsp__average_warp_latency_per_inst_issued.ratio",
                                        "Warp Cycles Per Issued Instruction"),
        "top_stalls": [{"reason": r, "value": v, "share": v / total} for r, v in top] if total else [],
    }


def summarize(folder):
    """folder/ncu_details.csv (+ folder/kernels.json) -> the summary dict, one row per profiled case."""
    folder = Path(folder)
    launches = parse_details_csv((folder / DETAILS).read_text(errors="replace"))
    if (folder / RAW).exists():  # the raw page adds the metrics the details page leaves out
        raw = parse_raw_csv((folder / RAW).read_text(errors="replace"))
        for launch in launches:
            for name, entry in raw.get(launch["id"], {}).items():
                launch["metrics"].setdefault(name, entry)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    rows = []
    if manifest is None:  # no manifest: one row per launch, named by its kernel
        for launch in launches:
            rows.append({"label": launch["kernel"], "kernels": [summarize_launch(launch)]})
        return {"env": {}, "meta": {"source": DETAILS}, "rows": rows}
    expected = [name for case in manifest["rows"] for name in case["kernels"]]
    got = [launch["kernel"] for launch in launches]
    if len(got) != len(expected) or any(e not in g for e, g in zip(expected, got)):
        raise SystemExit(f"{folder / DETAILS}: ncu profiled {got}, expected {expected} (in this order): "
                         "not summarizing launches that do not match the workload")
    it = iter(launches)
    for case in manifest["rows"]:
        kernels = [summarize_launch(next(it)) for _ in case["kernels"]]
        row = {k: case.get(k) for k in ("label", "step", "head_dim", "causal", "mode", "n", "flops", "min_bytes",
                                        "do_bench_ms", "loop_iterations")}
        ms = [k["duration_ms"] for k in kernels]
        row["duration_ms"] = sum(ms) if None not in ms else None
        dram = [k["dram_bytes"] for k in kernels]
        row["dram_bytes"] = sum(dram) if None not in dram else None
        l2 = [k["l2_bytes"] for k in kernels]
        row["l2_bytes"] = sum(l2) if None not in l2 else None
        row["tflops"] = case["flops"] / row["duration_ms"] / 1e9 if row["duration_ms"] else None
        row["kernels"] = kernels
        rows.append(row)
    meta = {**manifest["meta"], "source": DETAILS}
    log = folder / "profile.log"
    if log.exists():
        version = re.search(r"Version ([\d.]+ \(build \d+\))", log.read_text(errors="replace"))
        clock = re.search(r"clock control: (\w+)", log.read_text(errors="replace"))
        meta["ncu"] = version.group(1) if version else None
        meta["clock_control"] = clock.group(1) if clock else None
    return {"env": manifest["env"], "meta": meta, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where {MANIFEST} goes (default: $OUT, else scratch/profile_ncu)")
    parser.add_argument("--under-ncu", action="store_true",
                        help="only check and launch (no timing, no ceilings, no kernels.json): the pass ncu watches")
    parser.add_argument("--summarize", type=Path, metavar="DIR",
                        help=f"no GPU: parse DIR/{DETAILS} (and DIR/{MANIFEST}) into DIR/{SUMMARY}")
    args = parser.parse_args(argv)
    if args.summarize:
        summary = summarize(args.summarize)
        path = args.summarize / SUMMARY
        path.write_text(json.dumps(summary, indent=1) + "\n")
        for row in summary["rows"]:
            print(f"{row['label']:<28} " + "; ".join(
                f"{k['kernel'][:30]}: {k['duration_ms'] or float('nan'):.3f} ms, DRAM {k['dram_gbps'] or float('nan'):.0f} GB/s"
                for k in row["kernels"]))
        print(f"wrote {path}")
        return 0
    import shared

    if not shared.HAS_GPU:
        print("profile_kernels.py launches the kernels on a GPU (for ncu): nothing to do here.")
        return 0
    out = args.out or Path(os.environ.get("OUT") or ROOT / "scratch" / "profile_ncu")
    return workload(out, measure=not args.under_ncu)


if __name__ == "__main__":
    sys.exit(main())
