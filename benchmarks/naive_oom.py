"""Does naive PyTorch attention fit at N = 8192 and 16384? Its peak memory beside step 03's.

    python benchmarks/naive_oom.py [--out-dir DIR]     # GPU only, about a minute

Naive attention materialises two (N x N) score matrices per (batch, head): at B=4, H=32,
N=16384 in fp16 that is 128 GiB, more than an H100 holds, while step 03 stays near the size of
its inputs. Writes naive_oom.json to 03_advanced_optimizations/results/ (or --out-dir).
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import shared  # noqa: E402
import torch  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where naive_oom.json goes (default: 03_advanced_optimizations/results/)")
    args = parser.parse_args(argv)
    shared.require_gpu("benchmarks/naive_oom.py")
    out_dir = shared.output_dir(args.out_dir, ROOT / "03_advanced_optimizations" / "results", official=True)
    flash = shared.load_step("03").flash_attention
    rows = shared.quick_benchmark({"naive torch": shared.naive_torch, "03 flash": flash},
                                  shapes=[(4, 32, n, d) for d in (64, 128) for n in (8192, 16384)],
                                  causal=False, dtype=torch.float16, warmup=5, rep=20)
    path = shared.save_results(out_dir / "naive_oom.json", rows, command="python benchmarks/naive_oom.py")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
