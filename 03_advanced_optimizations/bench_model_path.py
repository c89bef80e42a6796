"""Step 03 where a model calls it: the whole call, host time included, against SDPA.

A model calls attention on (B, N, H, D) projections viewed as (B, H, N, D), with gradients
on, thousands of times, often on short sequences. There the host-side cost of a call (Python,
dispatch, checks, launches) can exceed the kernels' own time. This script measures what the
user experiences, side by side in one run:

  * ``fwd_bwd_ms``: triton.testing.do_bench median of forward + backward (autograd.grad on
    the (B, N, H, D) leaves), host gaps included;
  * ``nograd_ms``: the same for the forward alone under torch.no_grad;
  * ``wall_fwd_bwd_ms``: wall clock over 100 back-to-back forward + backward calls, one
    synchronize at the end, the median of five such trials (what a training loop sees when the
    host is the bottleneck; do_bench's own per-call events, with its L2 flush between calls,
    scatter for calls that take longer on the host than on the GPU);

and, with ``--profile``, a torch.profiler table of 20 forward + backward calls (host time per
op, device time per kernel). ``--before PATH`` adds an earlier flash_attention.py (its custom
ops renamed) so that before and after come from one run. ``--grid`` times the large benchmark
grid (B=4, H=32, N 4096/16384) for before/after, forward and backward.

    bash ../benchmarks/make_baseline.sh     # the previous version (commit bb99857), in .baseline/
    python bench_model_path.py --before ../.baseline/flash_attention_before.py --profile --grid
GPU only; results go to results/model_path.json (+ model_path_profile.json, grid_before_after.json).
"""
import argparse
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
# (B, H, N, D) of the model-path issue: short sequences, the training demo's shape, longer ones
MODEL_SHAPES = [(1, 16, 128, 64), (4, 32, 512, 64), (32, 6, 512, 64), (8, 12, 1024, 64),
                (4, 32, 1024, 128), (4, 32, 2048, 128)]
PROFILE_SHAPE = (32, 6, 512, 64)


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def implementations(before=None):
    step03 = shared.load_step("03")
    impls = {"03 flash": step03.flash_attention,
             "sdpa flash": shared.sdpa_backend("flash"),
             "sdpa cudnn": shared.sdpa_backend("cudnn")}
    if before:
        impls["03 flash (before)"] = load_module(before, "step03_before").flash_attention
    return impls


class TritonLaunch:
    """Step 03 with its direct launches switched off (every launch through kernel[grid]):
    measures what the direct launch saves."""

    def __init__(self):
        self.step03 = shared.load_step("03")

    def __enter__(self):
        self.step03.FAST_LAUNCH = False

    def __exit__(self, *exc):
        self.step03.FAST_LAUNCH = not shared.INTERPRETER


def model_inputs(shape, dtype, requires_grad):
    """(B, N, H, D) leaves, as a model's projections are, and their (B, H, N, D) views."""
    b, h, n, d = shape
    leaves = [torch.randn(b, n, h, d, device=shared.DEVICE, dtype=dtype).requires_grad_(requires_grad)
              for _ in range(3)]
    return leaves


def measure_model_path(fn, shape, causal, dtype, timer=None, wall_calls=100):
    """One row: fwd_bwd_ms, nograd_ms, wall_fwd_bwd_ms for ``fn`` on model-style inputs."""
    import triton.testing

    timer = timer or (lambda call: triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median"))
    b, h, n, d = shape
    row = {"batch": b, "heads": h, "n_q": n, "n_k": n, "head_dim": d, "kv_heads": h, "causal": causal,
           "dtype": str(dtype).replace("torch.", ""), "status": "ok"}
    leaves = model_inputs(shape, dtype, requires_grad=True)
    dout = torch.randn(b, h, n, d, device=shared.DEVICE, dtype=dtype)

    def fwd_bwd():
        q, k, v = (t.transpose(1, 2) for t in leaves)
        out = fn(q, k, v, causal=causal)
        return torch.autograd.grad(out, leaves, dout)

    def forward_only():
        with torch.no_grad():
            q, k, v = (t.transpose(1, 2) for t in leaves)
            return fn(q, k, v, causal=causal)

    try:
        fwd_bwd()  # compile, plan, allocate before timing
        forward_only()
        row["fwd_bwd_ms"] = timer(fwd_bwd)
        row["nograd_ms"] = timer(forward_only)
        trials = []
        for _ in range(5):  # the median of five trials: one trial can catch the host busy elsewhere
            if shared.HAS_GPU:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(wall_calls):
                fwd_bwd()
            if shared.HAS_GPU:
                torch.cuda.synchronize()
            trials.append((time.perf_counter() - start) * 1e3 / wall_calls)
        row["wall_fwd_bwd_ms"] = sorted(trials)[2]
    except (RuntimeError, ValueError, TypeError) as exc:
        row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return row


def model_path_grid(impls, shapes, dtypes, causals, timer=None, wall_calls=100):
    """Every impl on every (dtype, causal, shape), after checking step 03 on that shape."""
    rows = []
    for dtype in dtypes:
        for causal in causals:
            for shape in shapes:
                q, k, v = (t.transpose(1, 2) for t in model_inputs(shape, dtype, requires_grad=False))
                check = shared.test_correctness(impls["03 flash"], q, k, v, causal=causal)
                if not check.passed:
                    raise SystemExit(f"03 flash is wrong at {shape} causal={causal} {dtype}: {check}")
                for name, fn in impls.items():
                    if name == "03 flash (Triton launch)":
                        with TritonLaunch():
                            row = measure_model_path(fn, shape, causal, dtype, timer, wall_calls)
                    else:
                        row = measure_model_path(fn, shape, causal, dtype, timer, wall_calls)
                    rows.append({"impl": name, **row})
                    print(format_row(rows[-1]), flush=True)
    return rows


def format_row(r):
    head = (f"{r['impl']:<26} B={r['batch']:<3} H={r['heads']:<3} N={r['n_q']:<5} D={r['head_dim']:<4} "
            f"causal={r['causal']!s:<5} {r['dtype']:<8}")
    if r["status"] != "ok":
        return f"{head} {r['status']}"
    return (f"{head} fwd+bwd {r['fwd_bwd_ms']:7.3f} ms  no-grad {r['nograd_ms']:7.3f} ms  "
            f"wall fwd+bwd {r['wall_fwd_bwd_ms']:7.3f} ms")


def profile(impls, shape=PROFILE_SHAPE, causal=True, dtype=torch.bfloat16, calls=20):
    """torch.profiler over `calls` forward + backward calls: per op, host and device time per call."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    results = {}
    for name, fn in impls.items():
        leaves = model_inputs(shape, dtype, requires_grad=True)
        dout = torch.randn(shape, device=shared.DEVICE, dtype=dtype)

        def fwd_bwd():
            q, k, v = (t.transpose(1, 2) for t in leaves)
            return torch.autograd.grad(fn(q, k, v, causal=causal), leaves, dout)

        for _ in range(5):
            fwd_bwd()
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            for _ in range(calls):
                fwd_bwd()
            host_ms = (time.perf_counter() - start) * 1e3 / calls
            torch.cuda.synchronize()
        ops = []
        for e in prof.key_averages():
            device_us = getattr(e, "device_time_total", None)
            if device_us is None:
                device_us = getattr(e, "cuda_time_total", 0.0)
            self_device_us = getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
            ops.append({"name": e.key, "calls_per_call": e.count / calls,
                        "cpu_total_us": e.cpu_time_total / calls, "self_cpu_us": e.self_cpu_time_total / calls,
                        "device_us": device_us / calls, "self_device_us": self_device_us / calls})
        ops.sort(key=lambda o: -o["cpu_total_us"])
        kernels_us = sum(o["self_device_us"] for o in ops)
        results[name] = {"host_ms_per_call": host_ms, "device_ms_per_call": kernels_us / 1e3, "ops": ops[:25]}
        print(f"{name:<26} host {host_ms:.3f} ms/call (no sync), device {kernels_us / 1e3:.3f} ms/call")
        for o in ops[:12]:
            print(f"    {o['name'][:60]:<60} x{o['calls_per_call']:<4.1f} cpu {o['cpu_total_us']:8.1f} us "
                  f"self {o['self_cpu_us']:7.1f} us  device {o['self_device_us']:7.1f} us")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="an earlier flash_attention.py to time beside this one")
    parser.add_argument("--profile", action="store_true", help="also write the torch.profiler tables")
    parser.add_argument("--grid", action="store_true", help="also time the large grid, before and after")
    parser.add_argument("--no-model", action="store_true", help="skip the model-path grid")
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float16"], choices=["bfloat16", "float16"])
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if not shared.HAS_GPU:
        print("bench_model_path.py times the GPU path: it needs a CUDA GPU (nothing to do here).")
        return 0
    print(shared.describe_runtime())
    impls = implementations(args.before)
    dtypes = [getattr(torch, d) for d in args.dtype]
    command = " ".join(["python bench_model_path.py", *(argv if argv is not None else sys.argv[1:])])
    if not args.no_model:
        timed = dict(impls)
        timed["03 flash (Triton launch)"] = impls["03 flash"]
        rows = model_path_grid(timed, MODEL_SHAPES, dtypes, (False, True))
        path = shared.save_results(args.out_dir / "model_path.json", rows, step="03_advanced_optimizations",
                                   command=command, inputs="(B, N, H, D) leaves with requires_grad, viewed as "
                                   "(B, H, N, D); fwd_bwd = forward + torch.autograd.grad")
        print(f"wrote {path}")
    if args.profile:
        results = profile(impls)
        path = shared.save_results(args.out_dir / "model_path_profile.json", [], step="03_advanced_optimizations",
                                   command=command, shape=PROFILE_SHAPE, causal=True, dtype="bfloat16",
                                   calls=20, profiles=results)
        print(f"wrote {path}")
    if args.grid:
        grid_impls = {k: v for k, v in impls.items() if k in ("03 flash", "03 flash (before)", "sdpa cudnn")}
        shapes = [(4, 32, n, d) for d in (64, 128) for n in (4096, 16384)]
        rows = shared.quick_benchmark(grid_impls, shapes=shapes, causal=(False, True), dtype=torch.float16,
                                      modes=("fwd", "bwd"))
        path = shared.save_results(args.out_dir / "grid_before_after.json", rows, step="03_advanced_optimizations",
                                   command=command)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
