"""Thousands of random calls of each step: no crash, no NaN, no memory growth (GPU only).

    python benchmarks/stress_step_inputs.py --out stress.json                # 2000 calls per step
    python benchmarks/stress_step_inputs.py --steps 02 --calls 500 --seed 1 --out stress.json
    python benchmarks/stress_step_inputs.py --workers 8 --max-seconds 120 --out stress.json
    python benchmarks/stress_step_inputs.py --steps 03 --head-dims 64 80 128 --workers 12 --out s.json

Each call draws batch, heads, Nq and Nk (log-uniform, 1 to --max-len), a head dim,
a dtype, a memory layout per tensor (shared.LAYOUTS: transposed, sliced, stride-0
expanded views), a causal flag and a scale; runs the step; and compares it with the
float64 reference under the series' error rule (shared.compare_with_reference).
Failures are counted by kind: an exception, NaN/Inf where the reference is finite,
or an output out of tolerance; the first few are kept with everything needed to
rebuild them (shared.make_qkv arguments and the call's keyword arguments).
torch.cuda.memory_allocated is read after every call past a warm-up once its tensors
are freed: it must stay flat. Warm-up calls are checked and counted like the others
(in device calls 9 and 10 they were run but neither checked nor counted). The summary goes to --out (JSON, one row per
step, stamped with the GPU and versions); the exit status is 1 if anything failed.

Compiling dominates at first: each new head dim, dtype, mask kind and stride pattern compiles
new kernels (seconds each), and step 03 has hundreds of such variants. --workers N runs N
processes on the one GPU, each with its own draws (seed, worker) and its own memory check; they
share Triton's on-disk cache, so a kernel one compiles the others load. Their rows are summed.

A step is one entry in TARGETS: its function, whether it takes grouped-query
K/V heads, its head-dim range, the causal values it accepts, and any extra keyword
arguments to draw (also passed to the reference, which must understand them).
"""
import argparse
import math
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`
import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402


def no_extra_kwargs(rng):
    return {}


@dataclass
class Target:
    """One step under stress, and what to draw for it."""

    step: str  # "01", "02", ...: loaded with shared.load_step
    function: str  # the launcher's name in the step's script
    gqa: bool = False  # draw kv_heads among the divisors of heads
    min_head_dim: int = 1
    max_head_dim: int = 256
    causal_values: tuple = (False, True, "top_left")
    extra_kwargs: Callable = no_extra_kwargs  # rng -> dict of further keyword arguments
    reference: Callable = None  # (q, k, v, **kwargs) -> float64 output; default shared.reference_attention
    max_pairs: int = 2**24  # cap on B*H*Nq*Nk (the float64 reference holds every score)
    head_dims: tuple = None  # draw only these (each new head dim compiles new kernels), or any in range


def draw_window(rng):
    """Step 03's sliding window: none, or (left, right) sides from -1 (unbounded) to a few hundred."""
    if rng.random() < 0.5:
        return {}
    return {"window": (rng.choice([-1, 0, 1, 7, 64, 300]), rng.choice([-1, 0, 3, 50]))}


TARGETS = {
    "01": Target("01", "basic_attention"),
    "02": Target("02", "vectorized_attention"),
    "03": Target("03", "flash_attention", gqa=True, min_head_dim=16,
                 causal_values=(False, True, "top_left", "lower_right"), extra_kwargs=draw_window,
                 head_dims=(16, 40, 64, 80, 96, 111, 128, 256)),
}
KEEP_FAILURES = 10  # per step, in the JSON


def log_uniform_int(rng, high):
    """An int in 1..high, as likely to be in 1..10 as in 100..1000: short and long lengths both."""
    return min(high, int(math.exp(rng.uniform(0.0, math.log(high + 1)))))


def draw_case(rng, target, max_len, dtypes, layouts):
    """The shared.make_qkv arguments and the call's keyword arguments of one random call."""
    heads = rng.randint(1, 8)
    kv_heads = rng.choice([d for d in range(1, heads + 1) if heads % d == 0]) if target.gqa else heads
    batch, n_q, n_k = rng.randint(1, 4), log_uniform_int(rng, max_len), log_uniform_int(rng, max_len)
    while batch * heads * n_q * n_k > target.max_pairs:  # shrink the longer side until it fits
        n_q, n_k = (n_q // 2 or 1, n_k) if n_q >= n_k else (n_q, n_k // 2 or 1)
    head_dim = rng.choice([rng.randint(target.min_head_dim, target.max_head_dim),
                           rng.choice([d for d in (16, 40, 64, 80, 96, 111, 128, 256)
                                       if target.min_head_dim <= d <= target.max_head_dim])])
    if target.head_dims:
        head_dim = rng.choice(target.head_dims)
    qkv = dict(batch=batch, heads=heads, kv_heads=kv_heads, n_q=n_q, n_k=n_k, head_dim=head_dim,
               dtype=rng.choice(dtypes), layout=tuple(rng.choice(layouts) for _ in range(3)),
               seed=rng.randrange(2**32))
    kwargs = dict(causal=rng.choice(target.causal_values),
                  scale=rng.choice([None, rng.uniform(-2.0, 2.0)]), **target.extra_kwargs(rng))
    return qkv, kwargs


def run_one(fn, target, qkv, kwargs):
    """None if the call passed, else (kind, detail): "exception", "nan_or_inf" or "mismatch"."""
    q, k, v = shared.make_qkv(**qkv)
    try:
        out = fn(q, k, v, **kwargs)
        if out.is_cuda:
            torch.cuda.synchronize()  # an asynchronous fault surfaces here, in this call
    except Exception as exc:  # noqa: BLE001  (any exception on valid input is a finding)
        return "exception", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    ref = (target.reference or shared.reference_attention)(q, k, v, **kwargs)
    result = shared.compare_with_reference(out, ref, q.dtype)
    if result.passed:
        return None
    if out.shape == ref.shape and (~torch.isfinite(out) & torch.isfinite(ref)).any():
        return "nan_or_inf", result.message
    return "mismatch", str(result).splitlines()[0]


def stress(target, calls, warmup, max_len, rng, deadline):
    """Run one target; its summary row (counts, first failures, memory)."""
    fn = getattr(shared.load_step(target.step), target.function)
    dtypes = (torch.float16, torch.bfloat16, torch.float32)
    layouts = tuple(shared.LAYOUTS)
    counts = {"exception": 0, "nan_or_inf": 0, "mismatch": 0}
    failures, memory, started, done = [], [], time.time(), 0
    for i in range(calls + warmup):
        if time.time() > deadline:
            break
        qkv, kwargs = draw_case(rng, target, max_len, dtypes, layouts)
        finding = run_one(fn, target, qkv, kwargs)
        done += 1
        if finding:
            counts[finding[0]] += 1
            if len(failures) < KEEP_FAILURES:
                make_qkv_args = {**qkv, "dtype": str(qkv["dtype"]).replace("torch.", "")}
                failures.append({"kind": finding[0], "detail": finding[1], "make_qkv": make_qkv_args,
                                 "kwargs": kwargs})
        if i >= warmup:  # warm-up calls compile kernels and let the allocator settle: checked, not in the memory series
            memory.append(torch.cuda.memory_allocated())  # this call's tensors are freed by now
    baseline, peak, last = (memory[0], max(memory), memory[-1]) if memory else (None, None, None)
    growth = peak - baseline if memory else 0
    return {"impl": f"{target.step} {target.function}", "calls": done, "warmup_calls": warmup,
            "seconds": round(time.time() - started, 1), **counts,
            "memory_baseline_bytes": baseline, "memory_max_bytes": peak, "memory_last_bytes": last,
            "memory_growth_bytes": growth, "memory_flat": growth == 0, "failures": failures}


def target_for(step, head_dims):
    """TARGETS[step], drawing only `head_dims` if given (fewer kernel variants to compile)."""
    return replace(TARGETS[step], head_dims=tuple(head_dims)) if head_dims else TARGETS[step]


def stress_worker(step, calls, warmup, max_len, seed, worker, deadline, head_dims=None):
    """One worker process's row (its own random draws; memory checked in its own process)."""
    return stress(target_for(step, head_dims), calls, warmup, max_len, random.Random(seed * 1000 + worker),
                  deadline)


def combine(rows):
    """The rows of one step's workers as one: counts summed, memory flat only if flat in each."""
    first = rows[0]
    total = {**first, "workers": len(rows), "failures": [f for r in rows for f in r["failures"]][:KEEP_FAILURES],
             "seconds": max(r["seconds"] for r in rows), "memory_flat": all(r["memory_flat"] for r in rows),
             "memory_growth_bytes": max(r["memory_growth_bytes"] for r in rows)}
    for key in ("calls", "warmup_calls", "exception", "nan_or_inf", "mismatch"):
        total[key] = sum(r[key] for r in rows)
    for key in ("memory_baseline_bytes", "memory_max_bytes", "memory_last_bytes"):
        total[key] = [r[key] for r in rows]
    return total


def run_step(step, args):
    deadline = time.time() + args.max_seconds
    if args.workers == 1:
        return stress(target_for(step, args.head_dims), args.calls, args.warmup, args.max_len,
                      random.Random(f"{args.seed}-{step}"), deadline)
    import multiprocessing

    calls = math.ceil(args.calls / args.workers)
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        rows = pool.starmap(stress_worker, [(step, calls, args.warmup, args.max_len, args.seed, w, deadline,
                                             args.head_dims) for w in range(args.workers)])
    return combine(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", default=list(TARGETS), choices=list(TARGETS),
                        help="steps to stress (default: all in TARGETS)")
    parser.add_argument("--calls", type=int, default=2000, help="random calls per step (default 2000)")
    parser.add_argument("--warmup", type=int, default=50,
                        help="calls run first and not counted, before the memory baseline (default 50)")
    parser.add_argument("--max-len", type=int, default=4096, help="longest Nq or Nk drawn (default 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--max-seconds", type=float, default=480,
                        help="stop starting calls of a step after this long (default 480: "
                             "one 10-minute device call for one step)")
    parser.add_argument("--head-dims", type=int, nargs="+", default=None,
                        help="draw only these head dims (default: each step's own range); fewer head dims "
                             "compile fewer kernel variants, so more calls fit in --max-seconds")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes sharing the GPU, each with its own draws (default 1)")
    parser.add_argument("--out", type=Path, help="write the JSON summary here")
    args = parser.parse_args(argv)
    if not shared.HAS_GPU:
        print("stress_step_inputs: no GPU, nothing run (thousands of calls need a GPU, not the interpreter)")
        return 0
    rows = []
    for step in args.steps:
        row = run_step(step, args)
        rows.append(row)
        print(f"{row['impl']:<26} {row['calls']} calls in {row['seconds']} s: {row['exception']} exceptions, "
              f"{row['nan_or_inf']} NaN/Inf, {row['mismatch']} out of tolerance; memory growth "
              f"{row['memory_growth_bytes']} B", flush=True)
        for failure in row["failures"][:3]:
            print(f"    {failure['kind']}: {failure['detail']}\n      make_qkv({failure['make_qkv']}), "
                  f"{failure['kwargs']}")
    if args.out:
        given = sys.argv[1:] if argv is None else argv
        command = " ".join(["python benchmarks/stress_step_inputs.py", *given])
        print(f"wrote {shared.save_results(args.out, rows, command=command, seed=args.seed, workers=args.workers, head_dims=args.head_dims)}")
    failed = any(r["exception"] or r["nan_or_inf"] or r["mismatch"] or not r["memory_flat"] for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
