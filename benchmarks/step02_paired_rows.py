"""Does balancing step 02's causal programs pay? Query rows i and N - 1 - i in one program.

    python benchmarks/step02_paired_rows.py                # GPU only: about 3 min on an H100 (estimated)
    python benchmarks/step02_paired_rows.py --quick        # N = 1024 and 4096 only, into scratch/
    python benchmarks/step02_paired_rows.py --out-dir DIR  # default: 02_vectorized_attention/results/
                                                           # for the full run (file paired_rows.json)

04_profiling/README.md (section 6) found step 02 issue-bound without the mask and latency-bound
with it (at D = 128, N = 2048: long_scoreboard stalls 22% -> 54%), so its causal time is about 0.8
of its full time where the work halves. One untested reading: without the mask the programs an SM
holds all make the same number of key-block trips and cover one another's waits; with it, row i
makes about i / BLOCK_N trips, and they do not. Step 02's `pair_rows=True` (the kernel's PAIR_ROWS
switch) gives program i rows i and N - 1 - i, so every causal program makes about N / BLOCK_N trips,
on half the programs. Without the mask the same switch only halves the grid: two full rows per
program, the control.

One run times step 01, step 02 and step 02 with paired rows beside each other, with and without
the causal mask, at D = 64 and 128, N = 256 to 8192, fp16, B = 4, H = 32 (the grid of step 02's
results.json and of its causal-cost table in 04_profiling/README.md). Step 02 is timed a second time
at the end of each shape, as a noise check. Before any timing each implementation is checked against
the float64 reference on awkward shapes, and at every benchmark shape the paired output is compared
with step 02's (the same operations per row: expected bit for bit). The compiled kernels' registers
and spills go into the results file: the paired kernel holds two copies of the key loop. Compiled
offline for sm_90a with Triton 3.6 (`benchmarks/compile_offline.py --only "^02-paired "`), it needs
96 registers with the mask, as the default kernel does (20 one-warp programs per SM), but 103
without it (16 per SM): the unmasked control also runs at lower occupancy.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH, HEADS = 4, 32
LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
QUICK_LENGTHS = (1024, 4096)
HEAD_DIMS = (64, 128)
MIN_CALLS = 7  # timed calls per point at least: step 01 at N = 8192 takes 0.6 s a call on an H100
IMPLS = ("02 vectorized", "02 paired rows", "01 basic", "02 vectorized (again)")  # timing order per shape


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only N = {' and '.join(map(str, QUICK_LENGTHS))}, into scratch/")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where paired_rows.json goes (default: 02_vectorized_attention/results/ for the "
                             "full GPU run, scratch/02_vectorized_attention/ for --quick)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)  # --help stops here, before torch or a GPU is touched
    sys.path.insert(0, str(ROOT))
    import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)

    if not shared.HAS_GPU:
        print("step02_paired_rows.py: no CUDA GPU here; this experiment only times kernels. Nothing done.")
        return 0
    import functools

    import torch
    import triton.testing

    step01, step02 = shared.load_step("01"), shared.load_step("02")
    paired = functools.partial(step02.vectorized_attention, pair_rows=True)
    fns = {"02 vectorized": step02.vectorized_attention, "02 paired rows": paired,
           "01 basic": step01.basic_attention}
    dtype = torch.float16
    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    started = time.time()
    print(shared.describe_runtime())
    out_dir = shared.output_dir(args.out_dir, ROOT / "02_vectorized_attention" / "results",
                                official=not args.quick)

    # 1. every implementation against the float64 reference, on shapes that break things, before any timing
    ok = True
    for name, fn in fns.items():
        for d in HEAD_DIMS:
            bn = step02.block_n_for(d)
            shapes = [(1, 2, 97, 97, d, True), (2, 1, 2 * bn + 1, 2 * bn + 1, d, True), (1, 1, 1, 1, d, True),
                      (1, 1, 5, 2 * bn + 1, d, False), (2, 1, 3, 1025, d, False)]
            ok &= shared.run_checks(fn, shapes, (torch.float16, torch.bfloat16), label=name)
    if not ok:
        print("FAILED: an implementation does not match the reference; not timing.")
        return 1

    # 2. the compiled kernels: registers and spills, default and paired
    resources = []
    for d in HEAD_DIMS:
        for causal in (False, True):
            q, k, v = shared.make_qkv(1, 1, 2048, d, dtype=dtype)  # Nq, Nk divisible by 16, as benchmarked
            for pair_rows in (False, True):
                compiled = step02.launch(q, k, v, torch.empty_like(q), d ** -0.5, causal, pair_rows=pair_rows)
                torch.cuda.synchronize()
                resources.append({"pair_rows": pair_rows, "head_dim": d, "causal": causal,
                                  "block_n": step02.block_n_for(d),
                                  "n_regs": getattr(compiled, "n_regs", None),
                                  "n_spills": getattr(compiled, "n_spills", None)})
                print(f"compiled 02 kernel: {resources[-1]}")

    # 3. timing: per shape, step 02, paired, step 01 and step 02 again, in that order
    def timer(call):
        """do_bench's median over at least 100 ms of calls, and at least MIN_CALLS calls of a slow kernel."""
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        call()
        end.record()
        torch.cuda.synchronize()
        rep = max(100.0, MIN_CALLS * begin.elapsed_time(end))
        return triton.testing.do_bench(call, warmup=10, rep=rep, return_mode="median")

    rows = []
    for causal in (False, True):
        for d in HEAD_DIMS:
            for n in lengths:
                shape = (BATCH, HEADS, n, d)
                q, k, v = shared.make_qkv(BATCH, HEADS, n, d, dtype=dtype)
                plain = step02.vectorized_attention(q, k, v, causal=causal)
                diff = (paired(q, k, v, causal=causal).float() - plain.float()).abs().max().item()
                plain = None
                q = k = v = None
                torch.cuda.empty_cache()
                for name in IMPLS:
                    fn = fns[name.replace(" (again)", "")]
                    row = {"impl": name, **shared.measure(fn, shape, causal, dtype, "fwd", timer=timer)}
                    if name == "02 paired rows":
                        row["max_abs_diff_vs_02"] = diff
                    rows.append(row)
                    line = shared.benchmark_utils.format_row(row)
                    print(line + (f"  diff vs 02 {diff:.1e}" if name == "02 paired rows" else ""), flush=True)
    seconds = time.time() - started

    # 4. a summary: paired over plain, and what the causal mask saves each
    def ms(impl, d, n, causal):
        hit = shared.select(rows, impl=impl, head_dim=d, n_q=n, causal=causal)
        return hit[0]["ms"] if hit else None

    print("\nD     N   02 full  paired full  02 causal  paired causal  02 causal/full  paired causal/full  "
          "02 / paired causal")
    for d in HEAD_DIMS:
        for n in lengths:
            t = {(impl, c): ms(impl, d, n, c) for impl in ("02 vectorized", "02 paired rows")
                 for c in (False, True)}
            if None in t.values():
                continue
            print(f"{d:<4}{n:>6} {t['02 vectorized', False]:9.3f} {t['02 paired rows', False]:12.3f} "
                  f"{t['02 vectorized', True]:10.3f} {t['02 paired rows', True]:14.3f} "
                  f"{t['02 vectorized', True] / t['02 vectorized', False]:15.2f} "
                  f"{t['02 paired rows', True] / t['02 paired rows', False]:19.2f} "
                  f"{t['02 vectorized', True] / t['02 paired rows', True]:18.2f}x")
    command = "python benchmarks/step02_paired_rows.py" + (" --quick" if args.quick else "")
    path = shared.save_results(out_dir / "paired_rows.json", rows, step="02_vectorized_attention",
                               experiment="paired_rows", command=command, kernel_resources=resources,
                               block_n={d: step02.block_n_for(d) for d in HEAD_DIMS},
                               num_warps=step02.NUM_WARPS, seconds=round(seconds, 1))
    print(f"wrote {path} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
