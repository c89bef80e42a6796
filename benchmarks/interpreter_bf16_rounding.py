"""Why step 03's bf16 gradients look worse than PyTorch's in the interpreter (issue 9): a rounding mode.

    python benchmarks/interpreter_bf16_rounding.py            # 12 seeds, about a minute per pass
    python benchmarks/interpreter_bf16_rounding.py --seeds 4

Triton's CPU interpreter (3.6, 3.8) converts fp32 to bf16 by truncation (round
toward zero, up to 1 ulp); the GPU and torch round to nearest even (up to half
an ulp). Every bf16 value a kernel stores in the interpreter (steps 01-03's
outputs, step 03's dQ, dK, dV) then carries up to twice the rounding error.

Part 1 shows the cast on its own. Part 2 runs step 03's ``gradient_errors`` at
B=2, H=2, N=77, D=64, causal (the issue's shape) over seeds, as is and with
the interpreter's fp32 -> bf16 cast patched to round to nearest even, and
prints our max error over PyTorch's (autograd in the same dtype), both against
float64. Interpreter only: on a GPU there is nothing to patch.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`
import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def store_as_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n).to(y_ptr.dtype.element_ty), mask=offs < n)


def cast_errors():
    """Max relative error of fp32 -> bf16 by a Triton store, and by torch, on 4096 normal values."""
    x = torch.randn(4096, dtype=torch.float32, device=shared.DEVICE)
    y = torch.empty(4096, dtype=torch.bfloat16, device=shared.DEVICE)
    store_as_kernel[(1,)](x, y, 4096, BLOCK=4096)
    exact = x.double()
    return {"triton": ((y.double() - exact).abs() / exact.abs()).max().item(),
            "torch": ((x.bfloat16().double() - exact).abs() / exact.abs()).max().item(),
            "differ_from_torch": (y != x.bfloat16()).float().mean().item(),
            "toward_zero": bool((y.double().abs() <= exact.abs()).all())}


def round_bf16_to_nearest_even():
    """Patch the interpreter's fp32 -> bf16 cast to torch's rounding (round to nearest even)."""
    from triton.runtime import interpreter

    truncating_cast = interpreter.InterpreterBuilder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.ascontiguousarray(src.data, dtype=np.float32)).to(torch.bfloat16)
            bits = rounded.view(torch.int16).numpy().view(np.uint16)  # the interpreter keeps bf16 as uint16
            return interpreter.TensorHandle(bits, dst_type.scalar)
        return truncating_cast(self, src, dst_type)

    interpreter.InterpreterBuilder.cast_impl = cast_impl


def gradient_ratios(seeds, dtype):
    """Per seed, our max error over PyTorch's for dq, dk, dv (step 03's gradient_errors)."""
    step03 = shared.load_step("03")
    ratios = []
    for seed in range(seeds):
        q, k, v = shared.make_qkv(2, 2, 77, 64, dtype=dtype, seed=seed)
        torch.manual_seed(1000 + seed)  # the same dO in every pass
        ratios.append([e["ours"] / e["torch"] for e in step03.gradient_errors(q, k, v, causal=True)])
    return np.array(ratios)


def print_ratios(label, ratios):
    parts = [f"{name} {r.min():.2f}-{r.max():.2f} (median {np.median(r):.2f})"
             for name, r in zip(("dQ", "dK", "dV"), ratios.T)]
    print(f"  {label:<34} " + ", ".join(parts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12, help="seeds per pass (default 12)")
    args = parser.parse_args(argv)
    if not shared.INTERPRETER:
        print("interpreter_bf16_rounding: on a GPU; this is about the CPU interpreter (TRITON_INTERPRET=1)")
        return 0
    print(f"fp32 -> bf16 in a kernel vs torch: {cast_errors()}")
    print(f"step 03 gradients, B=2 H=2 N=77 D=64 causal, ours/torch max abs error over {args.seeds} seeds:")
    print_ratios("fp16", gradient_ratios(args.seeds, torch.float16))
    print_ratios("bf16, interpreter as is", gradient_ratios(args.seeds, torch.bfloat16))
    round_bf16_to_nearest_even()
    print(f"after the patch: {cast_errors()}")
    print_ratios("bf16, round to nearest even", gradient_ratios(args.seeds, torch.bfloat16))
    return 0


if __name__ == "__main__":
    sys.exit(main())
