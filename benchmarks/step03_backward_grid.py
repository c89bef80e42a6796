"""Step 03's backward grid beside SDPA flash / cuDNN and FlexAttention, saved part by part.

    python benchmarks/step03_backward_grid.py [--out-dir DIR] [--seconds S]   # GPU only

Modes "bwd" (backward alone, forward outside the timed region) and "fwd+bwd"; fp16, B=4,
H=32, N 1024..16384, one part per (head dim, causal), each saved as backward_<part>.json as
soon as it finishes. Stops starting new parts after S seconds (default 500). The parts go to
scratch/03_advanced_optimizations/ unless --out-dir is given; join them into the file the post
reads with benchmarks/merge_results.py. (`flash_attention.py --backward` runs the same grid
in one go.)
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import shared  # noqa: E402
import torch  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where the part files go (default: scratch/03_advanced_optimizations/)")
    parser.add_argument("--seconds", type=float, default=500, help="start no new part after this long")
    args = parser.parse_args(argv)
    shared.require_gpu("benchmarks/step03_backward_grid.py")
    out_dir = shared.output_dir(args.out_dir, ROOT / "03_advanced_optimizations" / "results", official=False,
                                why="parts of a grid: join them with benchmarks/merge_results.py")
    from shared.baselines import flex_attention_compiled

    flash = shared.load_step("03").flash_attention  # differentiable: custom op with the Triton backward
    fns = {"03 flash": flash, "sdpa flash": shared.sdpa_backend("flash"),
           "sdpa cudnn": shared.sdpa_backend("cudnn"), "flex attention": flex_attention_compiled()}
    start = time.time()
    parts = [(d, causal) for d in (128, 64) for causal in (False, True)]
    progress = shared.Progress(total=len(parts), label="parts")
    for d, causal in parts:
        if time.time() - start > args.seconds:
            print(f"SKIPPED D={d} causal={causal}: out of time")
            continue
        shapes = [(4, 32, n, d) for n in (1024, 2048, 4096, 8192, 16384)]
        rows = shared.quick_benchmark(fns, shapes=shapes, causal=causal, dtype=torch.float16,
                                      modes=("bwd", "fwd+bwd"), warmup=10, rep=50)
        tag = f"d{d}_{'causal' if causal else 'full'}"
        path = shared.save_results(out_dir / f"backward_{tag}.json", rows, step="03_backward",
                                   command=f"python benchmarks/step03_backward_grid.py ({tag})")
        print(f"wrote {path}")
        print(progress.advance(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
