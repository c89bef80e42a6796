"""Sweep the tile sizes of step 03's backward kernels on the GPU (the tool behind BWD_CONFIGS).

    python tune_backward.py            # GPU only: ~2 minutes; writes results/backward_sweep.json
    python tune_backward.py --out-dir /tmp/sweep --max-seconds 60

Times the backward alone (no autograd) at (4, 32, 4096, D), fp16, causal and not,
for each candidate config of the dK/dV kernel and of the dQ kernel, plus the
fused atomic-dQ variant for comparison, and prints the best per head dim.
Copy a better choice into ``BWD_CONFIGS`` in flash_attention.py by hand.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent


# (BLOCK_M1, BLOCK_N1, warps1, stages1) of the dK/dV kernel and (BLOCK_M2,
# BLOCK_N2, warps2, stages2) of the dQ kernel, tried one kernel at a time.
BWD_SWEEP_DKDV = {
    64: [(32, 128, 4, 3), (32, 128, 4, 4), (32, 128, 4, 5), (32, 128, 8, 3), (64, 128, 4, 3),
         (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 4, 3), (16, 128, 4, 3), (16, 64, 4, 3)],
    128: [(32, 128, 8, 2), (32, 128, 4, 2), (32, 128, 8, 3), (64, 128, 8, 2), (64, 128, 8, 3),
          (32, 64, 4, 2), (32, 64, 4, 3), (64, 64, 4, 2), (16, 128, 8, 2), (16, 64, 4, 3)],
}
BWD_SWEEP_DQ = {
    64: [(128, 32, 4, 3), (128, 32, 4, 4), (128, 32, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3),
         (64, 32, 4, 3), (64, 64, 4, 3), (128, 16, 4, 3)],
    128: [(128, 32, 8, 2), (128, 32, 4, 2), (128, 32, 8, 3), (128, 64, 8, 2), (64, 32, 4, 3),
          (64, 64, 4, 2), (64, 32, 4, 2), (128, 16, 4, 2)],
}


def sweep_backward(out_dir, n=4096, head_dims=(64, 128), dtype=torch.float16, max_seconds=120):
    """Time the backward alone (no autograd) for each candidate config of each kernel.

    Stops trying new configs after ``max_seconds``. Returns the rows and, per
    head dim, the best full config: the dK/dV choice and the dQ choice with the
    least time summed over causal and not.
    """
    import time

    import triton.testing

    step03 = shared.load_step("03")
    rows = []
    started = time.time()
    for d in head_dims:
        for causal in (False, True):
            q, k, v = shared.make_qkv(4, 32, n, d, dtype=dtype)
            o, lse = step03.flash_attention_forward(q, k, v, causal=causal)
            do = torch.randn_like(o)
            flops = shared.attention_flops(4, 32, n, n, d, causal, "bwd")
            base = step03.backward_config(d, torch.float16)
            trials = [("dkdv", c + base[4:], False) for c in BWD_SWEEP_DKDV[d]]
            trials += [("dq", base[:4] + c, False) for c in BWD_SWEEP_DQ[d]]
            trials += [("atomic dq", base, True)]
            for kernel, config, atomic in trials:
                if time.time() - started > max_seconds * (head_dims.index(d) * 2 + causal + 1) / (2 * len(head_dims)):
                    continue  # this (D, causal)'s share of the time is spent
                row = {"head_dim": d, "causal": causal, "n": n, "kernel": kernel, "config": list(config),
                       "dq_atomic": atomic, "ms": None, "tflops": None, "status": "ok"}
                try:
                    fn = lambda: step03.flash_attention_backward(do, q, k, v, o, lse, causal=causal, config=config, dq_atomic=atomic)  # noqa: E731
                    fn()
                    row["ms"] = triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")
                    row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
                except Exception as exc:  # out of shared memory / registers: record and go on
                    row["status"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
                rows.append(row)
                print(f"  sweep D={d} causal={causal!s:<5} {kernel:<9} {str(config):<40} "
                      + (f"{row['ms']:.3f} ms {row['tflops']:.0f} TFLOP/s" if row["ms"] else row["status"]),
                      flush=True)
            del q, k, v, o, lse, do
    best = {}
    for d in head_dims:
        base = step03.backward_config(d, torch.float16)
        choice = list(base)
        for kernel, part in (("dkdv", slice(0, 4)), ("dq", slice(4, 8))):
            totals = {}
            for r in rows:
                if r["head_dim"] == d and r["kernel"] == kernel and r["ms"]:
                    totals.setdefault(tuple(r["config"][part]), []).append(r["ms"])
            complete = {c: sum(t) for c, t in totals.items() if len(t) == 2}  # timed causal and not
            if complete:
                choice[part] = min(complete, key=complete.get)
        best[d] = tuple(choice)
        print(f"  best config for D={d}: {best[d]} (was {base})")
    path = shared.save_results(out_dir / "backward_sweep.json", rows, step="03_backward_sweep",
                               command=" ".join(["python tune_backward.py", *sys.argv[1:]]),
                               shape=f"(4, 32, {n}, D)", dtype=str(dtype),
                               best={str(d): list(c) for d, c in best.items()})
    print(f"wrote {path}")
    return rows, best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where backward_sweep.json goes (default: results/ beside this script)")
    parser.add_argument("--max-seconds", type=float, default=120,
                        help="stop trying new configs after this long (default 120)")
    args = parser.parse_args(argv)
    shared.require_gpu("tune_backward.py")
    sweep_backward(shared.output_dir(args.out_dir, HERE / "results", official=True),
                   max_seconds=args.max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
