"""What one call of step 03 costs on the host, before and around the GPU's work.

At short sequences a forward + backward call is bound by the host: Python, PyTorch's
dispatcher and autograd engine, and the kernel launches take longer than the kernels. This
script times, wall clock over back-to-back calls at a tiny shape (the GPU idles between
kernels, so the time per call is host time):

  * ``03 flash``: step 03 as a model calls it ((B, N, H, D) views, gradients on);
  * ``python floor``: an empty torch.autograd.Function with the same inputs, outputs and
    allocations: what any Python-defined differentiable op costs here, kernels excluded;
  * ``sdpa flash`` / ``sdpa cudnn``: PyTorch's C++ path, for comparison;

and profiles ``03 flash`` with cProfile (Python functions by own time). GPU only.

    python host_cost.py                        # writes results/host_cost.json
"""
import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
SHAPE = (1, 16, 128, 64)  # (B, H, N, D): small enough that the GPU waits on the host


class EmptyAttention(torch.autograd.Function):
    """The floor: saves what step 03 saves, allocates what it allocates, launches nothing."""

    @staticmethod
    def forward(ctx, q, k, v):
        o = torch.empty_like(q)
        lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, o, lse)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        torch.empty_like(lse)
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def per_call_us(fn, calls=2000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    args = parser.parse_args(argv)
    if not shared.HAS_GPU:
        print("host_cost.py measures the host side of GPU calls: it needs a CUDA GPU (nothing to do here).")
        return 0
    step03 = shared.load_step("03")
    dtype = getattr(torch, args.dtype)
    b, h, n, d = SHAPE
    leaves = [torch.randn(b, n, h, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3)]
    dout = torch.randn(b, h, n, d, device="cuda", dtype=dtype)
    sdpa_flash, sdpa_cudnn = shared.sdpa_backend("flash"), shared.sdpa_backend("cudnn")

    def call(attention):
        def fwd_bwd():
            q, k, v = (t.transpose(1, 2) for t in leaves)
            return torch.autograd.grad(attention(q, k, v), leaves, dout)
        return fwd_bwd

    impls = {
        "03 flash": call(lambda q, k, v: step03.flash_attention(q, k, v, causal=True)),
        "python floor": call(EmptyAttention.apply),
        "sdpa flash": call(lambda q, k, v: sdpa_flash(q, k, v, causal=True)),
        "sdpa cudnn": call(lambda q, k, v: sdpa_cudnn(q, k, v, causal=True)),
    }
    with torch.no_grad():
        q, k, v = (t.transpose(1, 2) for t in leaves)
        nograd = {"03 flash": lambda: step03.flash_attention(q, k, v, causal=True),
                  "sdpa flash": lambda: sdpa_flash(q, k, v, causal=True),
                  "sdpa cudnn": lambda: sdpa_cudnn(q, k, v, causal=True)}
        rows = [{"impl": name, "mode": "forward, no grad", "us_per_call": per_call_us(fn)}
                for name, fn in nograd.items()]
    rows += [{"impl": name, "mode": "forward + backward", "us_per_call": per_call_us(fn)}
             for name, fn in impls.items()]
    # where step 03's own time goes: the forward under autograd (no backward), the backward
    # without autograd, and the plan's launches alone (arguments prepared once)
    q, k, v = (t.transpose(1, 2) for t in leaves)
    plan = step03.attention_plan(q, k, v, True)
    o, lse = plan.forward(q.detach(), k.detach(), v.detach())
    do = dout
    plan.backward(do, q.detach(), k.detach(), v.detach(), o, lse)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    delta, dq, dk, dv = torch.empty_like(lse), torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    launch = plan._backward

    def launches_only():
        plan.forward_launch(True, qd, kd, vd, o, lse, lse, lse, *plan.o_strides, *plan.forward_tail)
        variant = (do.stride(), o.stride(), True)
        launch["dq"](variant, qd, kd, vd, o, do, lse, delta, dq, lse, lse, *o.stride(), *do.stride(),
                     *launch["dq_tail"])
        launch["dkdv"](variant, qd, kd, vd, do, lse, delta, dk, dv, delta, lse, lse, *do.stride(),
                       *launch["dkdv_tail"])

    rows += [
        {"impl": "03 flash", "mode": "forward under autograd", "us_per_call": per_call_us(
            lambda: step03.flash_attention(*(t.transpose(1, 2) for t in leaves), causal=True))},
        {"impl": "03 flash", "mode": "backward, no autograd", "us_per_call": per_call_us(
            lambda: plan.backward(do, qd, kd, vd, o, lse))},
        {"impl": "03 flash", "mode": "3 launches only", "us_per_call": per_call_us(launches_only)},
    ]
    step03.FAST_LAUNCH = False  # the same with every launch through Triton's kernel[grid](...)
    rows.append({"impl": "03 flash (Triton launch)", "mode": "forward + backward",
                 "us_per_call": per_call_us(impls["03 flash"])})
    rows.append({"impl": "03 flash (Triton launch)", "mode": "3 launches only", "us_per_call": per_call_us(launches_only)})
    step03.FAST_LAUNCH = True
    for r in rows:
        print(f"{r['impl']:<26} {r['mode']:<24} {r['us_per_call']:8.1f} us per call")
    plan = next(iter(step03._PLANS.values()))
    direct = {name: len(launcher.binaries) for name, launcher in
              [("forward", plan.forward_launch), ("dq", plan._backward["dq"]), ("dkdv", plan._backward["dkdv"])]}
    print(f"direct launches cached (binaries per launcher): {direct}")

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(500):
        impls["03 flash"]()
    torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    top = [line for line in text.getvalue().splitlines() if line.strip()][:40]
    print("\n".join(top))
    path = shared.save_results(args.out_dir / "host_cost.json", rows, step="03_advanced_optimizations",
                               command="python host_cost.py", shape=SHAPE, causal=True, dtype=args.dtype,
                               direct_launches_cached=direct, cprofile_top=top)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
