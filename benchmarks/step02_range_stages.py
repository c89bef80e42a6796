"""Does software pipelining help step 02? Its key loop as `tl.range(..., num_stages=k)`, k = 1..4.

    python benchmarks/step02_range_stages.py                 # GPU only, well under 90 s on an H100
    python benchmarks/step02_range_stages.py --out FILE.json # default: 02_vectorized_attention/results/range_stages.json

Triton's launch-level `num_stages` pipelines only the loads that feed a `tl.dot`
(the `tl.range` docstring says so), and step 02 has no `tl.dot`: its sweep
(results/sweep02.json) saw 1 or 3 launch-level stages change no time by more
than 1.7%. `tl.range(start, end, step, num_stages=k)` asks for the loop itself to
be pipelined, plain loads included: compiled for sm_90, k >= 2 turns the K and V
tile loads into `cp.async` copies into shared memory, k - 1 blocks ahead.

This script times step 02's kernel with LOOP_STAGES = 0 (the plain loop, the
kernel as the post measures it) and 1, 2, 3, 4, beside each other in one run,
at B=4, H=32, N = 2048 and 4096, D = 64 and 128, causal and not, fp16. Every
variant is first checked against the float64 reference on awkward shapes and,
at each benchmark shape, against the plain loop's output. The compiled
kernels' registers, spills and shared memory go into the results file too.
The plain loop is timed a second time at the end of each shape, as a noise check.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOP_STAGES = (0, 1, 2, 3, 4)
BATCH, HEADS = 4, 32
LENGTHS = (2048, 4096)
HEAD_DIMS = (64, 128)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "02_vectorized_attention" / "results" / "range_stages.json",
                        help="where the results JSON goes")
    return parser.parse_args(argv)


def impl_name(loop_stages):
    return "02 plain loop" if loop_stages == 0 else f"02 tl.range stages={loop_stages}"


def main(argv=None):
    args = parse_args(argv)  # --help stops here, before torch or a GPU is touched
    sys.path.insert(0, str(ROOT))
    import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)

    if not shared.HAS_GPU:
        print("step02_range_stages.py: no CUDA GPU here; this experiment only times kernels. Nothing done.")
        return 0
    import torch

    step02 = shared.load_step("02")
    dtype = torch.float16

    def variant(loop_stages):
        def attention(q, k, v, causal=False, scale=None, out=None):
            scale = shared.check_attention_inputs(q, k, v, scale, max_head_dim=256)
            out = shared.check_out(out, q, v)
            step02.launch(q, k, v, out, scale, causal, loop_stages=loop_stages)
            return out
        return attention

    fns = {s: variant(s) for s in LOOP_STAGES}
    started = time.time()

    # 1. correctness of every variant on shapes that break things, before any timing
    ok = True
    for s, fn in fns.items():
        for d in HEAD_DIMS:
            bn = step02.block_n_for(d)
            shapes = [(1, 2, 97, 97, d, True), (1, 1, 5, 2 * bn + 1, d, False), (2, 1, 3, 1025, d, False)]
            ok &= shared.run_checks(fn, shapes, (torch.float16,), label=impl_name(s))
    if not ok:
        print("FAILED: a pipelined variant does not match the reference; not timing.")
        return 1

    # 2. timing, every variant beside the plain loop, per shape
    rows, resources = [], []
    for causal in (False, True):
        for d in HEAD_DIMS:
            for n in LENGTHS:
                shape = (BATCH, HEADS, n, d)
                q, k, v = shared.make_qkv(BATCH, HEADS, n, d, dtype=dtype)
                plain = fns[0](q, k, v, causal=causal)
                for s in LOOP_STAGES:
                    out = torch.empty_like(q)
                    compiled = step02.launch(q, k, v, out, d ** -0.5, causal, loop_stages=s)
                    torch.cuda.synchronize()
                    if n == LENGTHS[0]:
                        resources.append({"loop_stages": s, "head_dim": d, "causal": causal,
                                          "n_regs": getattr(compiled, "n_regs", None),
                                          "n_spills": getattr(compiled, "n_spills", None),
                                          "shared_bytes": getattr(getattr(compiled, "metadata", None), "shared", None)})
                    diff = (out.float() - plain.float()).abs().max().item()
                    row = {"impl": impl_name(s), "loop_stages": s,
                           **shared.measure(fns[s], shape, causal, dtype, "fwd", warmup=10, rep=200),
                           "max_abs_diff_vs_plain": diff}
                    rows.append(row)
                    print(shared.benchmark_utils.format_row(row) + f"  diff vs plain {diff:.1e}", flush=True)
                again = {"impl": "02 plain loop (again)", "loop_stages": 0,
                         **shared.measure(fns[0], shape, causal, dtype, "fwd", warmup=10, rep=200)}
                rows.append(again)
                print(shared.benchmark_utils.format_row(again), flush=True)
                q = k = v = plain = out = None
                torch.cuda.empty_cache()
    for r in resources:
        print(f"compiled: {r}")
    path = shared.save_results(args.out, rows, step="02_vectorized_attention", experiment="range_stages",
                               command="python benchmarks/step02_range_stages.py",
                               loop_stages=list(LOOP_STAGES), kernel_resources=resources,
                               block_n={d: step02.block_n_for(d) for d in HEAD_DIMS},
                               num_warps=step02.NUM_WARPS, seconds=round(time.time() - started, 1))
    print(f"wrote {path} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
