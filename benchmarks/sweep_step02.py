"""Sweep step 02's block size, warps and pipelining depth on the GPU, step 01 as the anchor.

    python benchmarks/sweep_step02.py                   # GPU only, about 2 minutes on an H100
    python benchmarks/sweep_step02.py --out-dir /tmp/s  # elsewhere

Prints a line per configuration and the best per (head dim, causal), and writes sweep02.json
to 02_vectorized_attention/results/ (the file the step 02 post reads) or to --out-dir.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import shared  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.testing  # noqa: E402

BLOCK_N = (16, 32, 64, 128, 256)
WARPS = (1, 2, 4, 8)
STAGES = (1, 3)


def run02(step02, q, k, v, o, causal, block_n, warps, stages):
    batch, heads, n_q, d = q.shape
    step02.vectorized_attention_kernel[(n_q, batch * heads)](
        q, k, v, o, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        heads, k.shape[2], d, d ** -0.5, n_q, CAUSAL=causal, BLOCK_N=block_n,
        BLOCK_D=triton.next_power_of_2(d), num_warps=warps, num_stages=stages)
    return o


def sweep(n=2048):
    step01, step02 = shared.load_step("01"), shared.load_step("02")
    rows = []
    parts = [(d, causal) for d in (64, 128) for causal in (False, True)]
    progress = shared.Progress(total=len(parts), label="(head dim, causal) parts")
    for d, causal in parts:
        q, k, v = shared.make_qkv(4, 32, n, d, dtype=torch.float16)
        o = torch.empty_like(q)
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        flops = shared.attention_flops(4, 32, n, n, d, causal)
        ms01 = triton.testing.do_bench(lambda: step01.basic_attention(q, k, v, causal), warmup=10, rep=40,
                                       return_mode="median")
        print(f"D={d} causal={causal} step01 {ms01:.3f} ms {flops / ms01 / 1e9:.1f} TFLOP/s", flush=True)
        for block_n in BLOCK_N:
            for warps in WARPS:
                for stages in STAGES:
                    if block_n * d > 16384 or block_n * d < 32 * warps * 4:
                        continue
                    try:
                        run02(step02, q, k, v, o, causal, block_n, warps, stages)
                        err = (o.float() - ref.float()).abs().max().item()
                        ms = triton.testing.do_bench(
                            lambda: run02(step02, q, k, v, o, causal, block_n, warps, stages),
                            warmup=10, rep=40, return_mode="median")
                    except Exception as exc:  # a config that fails to compile is a data point too
                        print(f"  BLOCK_N={block_n} warps={warps} stages={stages}: {type(exc).__name__}")
                        continue
                    row = {"head_dim": d, "causal": causal, "n": n, "block_n": block_n, "warps": warps,
                           "stages": stages, "ms": ms, "tflops": flops / ms / 1e9, "ms01": ms01,
                           "speedup_vs_01": ms01 / ms, "max_err": err}
                    rows.append(row)
                    print(f"  BLOCK_N={block_n:<4} warps={warps} stages={stages} {ms:8.3f} ms "
                          f"{row['tflops']:5.1f} TFLOP/s  x{row['speedup_vs_01']:.2f} vs 01  err {err:.1e}",
                          flush=True)
        print(progress.advance(), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where sweep02.json goes (default: 02_vectorized_attention/results/)")
    args = parser.parse_args(argv)
    shared.require_gpu("benchmarks/sweep_step02.py")
    out_dir = shared.output_dir(args.out_dir, ROOT / "02_vectorized_attention" / "results", official=True)
    rows = sweep()
    path = out_dir / "sweep02.json"
    path.write_text(json.dumps({"env": shared.environment(), "rows": rows}, indent=1))
    print(f"wrote {path}")
    best = {}
    for r in rows:
        key = (r["head_dim"], r["causal"])
        if r["max_err"] < 1e-2 and (key not in best or r["ms"] < best[key]["ms"]):
            best[key] = r
    for key, r in best.items():
        print("best", key, {k: r[k] for k in ("block_n", "warps", "stages", "tflops", "speedup_vs_01")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
