"""Issue 11: step 03 against cuDNN and FlexAttention on Hopper, with each candidate variant side by side.

    python benchmarks/hopper_experiments.py                      # GPU only: checks, then times (<= ~8 min)
    python benchmarks/hopper_experiments.py --part bwd --budget-s 300 --out-dir /tmp/hop
    python benchmarks/hopper_experiments.py --list               # the variants, no work

What runs, in order:
  1. every variant against the float64 reference at awkward shapes (N = 1, 97, 1025; D = 64, 128,
     96 for the backward variants that take any D; causal and not; GQA); a variant that fails is
     dropped and not timed (its failure is in the JSON);
  2. the short-length point (1, 16, 128, 64) causal, forward and backward, every variant;
  3. the grid (batch 4, 32 heads, D = 64/128, N = 4096/16384, then 2048; causal and not; bf16,
     --dtype float16 adds fp16), most important points first, forward and backward timed
     separately with shared.measure (do_bench medians; "bwd" = torch.autograd.grad after one
     forward, as step 03's own benchmark times it), until --budget-s is spent: no new point
     starts after that.
Prints, per point, each implementation's time, TFLOP/s, and its ratio to cuDNN and to
FlexAttention (> 1: faster); writes hopper_experiments.json (rows, check results, env stamp,
the configs) into --out-dir (default scratch/hopper_experiments/; never the committed results).

Variants (see --list): the TMA forward and the one-launch backward live in
03_advanced_optimizations/flash_attention_tma.py; backward tile configs and dq_atomic go
through step 03's own ``flash_attention_backward(config=..., dq_atomic=...)``; forward configs
through ``flash_attention_forward(config=...)``. Nothing here changes step 03's defaults.
Compiles dominate the first run: set TRITON_CACHE_DIR to a folder kept between runs (e.g.
scratch/triton_cache) so a second run spends its time timing.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402

# ----------------------------------------------------------------------------- the variants
# Forward configs (BLOCK_M, BLOCK_N, warps, stages) by head dim.
STEP03_FWD_CONFIGS = {64: [(128, 128, 8, 2)], 128: [(128, 128, 8, 2), (128, 64, 8, 2)]}
# Explicit, so that the checks (small shapes) run the tiles the grid times; the first of each is the
# module's table (TMA_FORWARD_CONFIGS). "tma fwd auto" (the module's own choice: 64-row tiles in 4
# warps for small problems) is timed at the short-length point only.
TMA_FWD_CONFIGS = {64: [(128, 64, 8, 3), (128, 128, 8, 2)], 128: [(128, 128, 8, 2), (128, 64, 8, 3)]}
SHORT_POINT = (1, 16, 128, 64)  # (B, H, N, D), causal: a model-path call
SHORT_ONLY = ("tma fwd auto",)
# Backward configs of step 03's two kernels: (M1, N1, w1, s1, M2, N2, w2, s2). Offline compile
# (Triton 3.6, sm_90, bf16): "nospill" has no spills in either kernel; "flex" is FlexAttention's
# Hopper tiling (64 x 128 dK/dV, 128 x 64 dQ, 8 warps, 3 stages).
STEP03_BWD_CONFIGS = {
    64: {"nospill": (64, 128, 8, 3, 128, 64, 8, 3), "nospill32": (32, 128, 8, 3, 128, 64, 8, 3)},
    128: {"nospill": (32, 128, 8, 2, 128, 64, 8, 2), "flex": (64, 128, 8, 3, 128, 64, 8, 3),
          "nospill64": (64, 64, 8, 2, 128, 32, 8, 2)},
}
ATOMIC_CONFIGS = {64: (64, 128, 8, 3, 128, 64, 8, 3), 128: (32, 128, 8, 2, 128, 64, 8, 2)}
# One-launch backward: (M1, N1, M2, N2, warps, stages); None: the module's table
FUSED_CONFIGS = {64: {"": None}, 128: {"": None, " flex": (64, 128, 128, 64, 8, 3)}}
# dq_atomic at step 03's default tiles spills (480 B at D=128): timed only with --more
WS = False  # warp_specialize: Triton 3.6 leaves the Hopper loop as it is (8 warps) or fails (4 warps)


# name -> (config, kernel); config None: the module's table. fa3order: FA-3's wait order (not yet run on a GPU)
GLUON_CONFIGS = {"gluon fwd": (None, "pipelined"), "gluon fwd 128x64": ((128, 64, 3, 8), "pipelined"),
                 "gluon fwd fa3order": (None, "fa3order"), "gluon fwd fa3order 128x64": ((128, 64, 3, 8), "fa3order")}


def build_variants(step03, tma, gluon=None):
    """({mode: {name: (callable(q, k, v, causal=False), head dims, new kernel?)}}, the same for --more).

    A "new kernel" (not step 03's kernel at another config) is also checked at N = 1 and, for the
    backward, which takes any head dim, at D = 96.
    """
    def with_backward(backward):
        """Step 03's forward, the given backward, as one differentiable callable."""
        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v, causal):
                o, lse = step03.flash_attention_forward(q, k, v, causal=causal)
                ctx.save_for_backward(q, k, v, o, lse)
                ctx.causal = causal
                return o

            @staticmethod
            def backward(ctx, do):
                q, k, v, o, lse = ctx.saved_tensors
                return (*backward(do, q, k, v, o, lse, ctx.causal), None)

        def fn(q, k, v, causal=False, scale=None):
            return Fn.apply(q, k, v, causal)
        return fn

    # Step 03 at another config: its plan and launchers made once per shape and config, as the
    # default path keeps them (flash_attention_forward/backward(config=...) rebuild them on every
    # call, a host cost that would show at the short-length point and not in the kernel).
    plans = {}

    def plan_key(q, k, v, causal):
        return (q.shape, q.stride(), k.shape, k.stride(), v.stride(), q.dtype, q.device, causal)

    def fwd_config(config):
        def fn(q, k, v, causal=False, scale=None):
            key = ("fwd", config, *plan_key(q, k, v, causal))
            if key not in plans:
                plans[key] = step03.AttentionPlan(q, k, v, causal, None, None, config=config)
            return plans[key].forward(q, k, v)[0]
        return fn

    def tma_fwd(config):
        return lambda q, k, v, causal=False, scale=None: tma.tma_attention(
            q, k, v, causal, config=config, warp_specialize=WS)

    def bwd_config(config, atomic=False):
        def backward(do, q, k, v, o, lse, causal):
            if config is None:
                return step03.flash_attention_backward(do, q, k, v, o, lse, causal=causal, dq_atomic=atomic)
            key = ("bwd", config, *plan_key(q, k, v, causal))
            if key not in plans:
                plan = step03.attention_plan(q, k, v, causal, None, None)
                plans[key] = (plan, plan._plan_backward(config))
            plan, launch = plans[key]
            return plan._run_backward(launch, do, q, k, v, o, lse, None, None, atomic)
        return with_backward(backward)

    def fused(config):
        return with_backward(lambda do, q, k, v, o, lse, causal: tma.fused_attention_backward(
            do, q, k, v, o, lse, causal=causal, config=config))

    fwd, bwd = {}, {}

    def add(table, name, fn, d, new_kernel):
        """One entry per name; a name used at both head dims runs at both."""
        table[name] = (fn, (table[name][1] if name in table else ()) + (d,), new_kernel)

    for d in (64, 128):
        for c in STEP03_FWD_CONFIGS[d]:
            add(fwd, f"03 fwd {c}", fwd_config(c), d, False)
        for c in TMA_FWD_CONFIGS[d]:
            add(fwd, f"tma fwd {c}", tma_fwd(c), d, True)
        for label, c in STEP03_BWD_CONFIGS[d].items():
            add(bwd, f"03 bwd {label} D{d}", bwd_config(c), d, False)
        add(bwd, f"03 atomic dq D{d}", bwd_config(ATOMIC_CONFIGS[d], atomic=True), d, False)
        for label, c in FUSED_CONFIGS[d].items():
            add(bwd, f"fused bwd{label}", fused(c), d, True)
    add(fwd, "tma fwd auto", tma_fwd(None), SHORT_POINT[3], True)
    if gluon is not None:  # Hopper only, MHA only (Nq == Nk): checked on such shapes (check_shapes)
        for name, (c, kernel) in GLUON_CONFIGS.items():
            fn = (lambda c, kernel: lambda q, k, v, causal=False, scale=None: gluon.flash_attention_gluon_forward(
                q, k, v, causal=causal, config=c, kernel=kernel)[0])(c, kernel)
            for d in (64, 128):
                add(fwd, name, fn, d, True)
    bwd_extra = {f"03 atomic dq default D{d}": (bwd_config(None, atomic=True), (d,), False)
                 for d in (64, 128)}
    return {"fwd": fwd, "bwd": bwd}, {"fwd": {}, "bwd": bwd_extra}


# ----------------------------------------------------------------------------- correctness
def check_shapes(mode, d, new_kernel, mha_only=False):
    """(B, H, Hkv, Nq, Nk, D, causal): awkward lengths, GQA, causal and not.

    Few shapes on purpose: each new length class (1; not a multiple of 16) is a compile, and
    compiles are most of this script's time. Step 03's kernel at another tile config keeps its
    masking code, which step 03's tests cover at every shape; new kernels get N = 1 and D = 96 too.
    """
    shapes = [(1, 4, 2, 97, 97, d, True), (1, 4, 1, 1025, 1025, d, False)]
    if mha_only:  # the Gluon kernel takes no GQA: the same lengths with Hkv = H
        shapes = [(b, h, h, n_q, n_k, dd, c) for b, h, _, n_q, n_k, dd, c in shapes]
    if new_kernel:
        shapes.append((2, 2, 2, 1, 1, d, False))
        if mode == "bwd" and d == 128:
            shapes.append((1, 4, 2, 97, 130, 96, True))
    return shapes


def check_variant(mode, fn, head_dims, new_kernel, dtypes, step03, mha_only=False):
    """(passed, lines): the variant against the float64 reference (forward) or float64 autograd."""
    lines, passed = [], True
    for dtype in dtypes:
        for d in head_dims:
            for b, h, hkv, n_q, n_k, dd, causal in check_shapes(mode, d, new_kernel, mha_only):
                q, k, v = shared.make_qkv(b, h, n_q, dd, n_k=n_k, kv_heads=hkv, dtype=dtype)
                try:
                    if mode == "fwd":
                        out = fn(q, k, v, causal=causal)
                        ref = shared.reference_attention(q, k, v, causal=causal)
                        atol, rtol = shared.tolerance(dtype)
                        err = (out.double() - ref).abs()
                        ok = bool((err <= atol + rtol * ref.abs()).all())
                        detail = f"max err {err.max().item():.2e}"
                    else:
                        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
                        out = fn(q, k, v, causal=causal)
                        do = torch.randn_like(out)
                        grads = torch.autograd.grad(out, (q, k, v), do)
                        errs = shared.compare_gradients(grads, *(t.detach() for t in (q, k, v)), do,
                                                        causal=causal)
                        ok = all(e["ok"] for e in errs)
                        detail = "dq/dk/dv err " + " ".join(f"{e['ours']:.1e}<={e['bound']:.1e}"
                                                            for e in errs)
                except Exception as exc:  # noqa: BLE001  (a compile failure is a failed check)
                    first = str(exc).splitlines()[0][:160] if str(exc) else ""
                    ok, detail = False, f"{type(exc).__name__}: {first}"
                passed &= ok
                lines.append(f"B={b} H={h} Hkv={hkv} Nq={n_q} Nk={n_k} D={dd} causal={causal!s:<5} "
                             f"{str(dtype)[6:]:<8} {'PASS' if ok else 'FAIL'} {detail}")
    return passed, lines


# ----------------------------------------------------------------------------- timing
def point_order(head_dims, lengths, causals, dtypes):
    """The grid's points, most important first: D=128 at 4096 and 16384, then D=64, then the rest."""
    points = [(dt, d, n, c) for dt in dtypes for n in lengths for d in sorted(head_dims, reverse=True)
              for c in causals]
    return points


def summarize(rows, mode, shape, causal, dtype):
    """Printable lines: each impl's ms, TFLOP/s, and ratios to cuDNN and Flex (time ratio, > 1 = faster)."""
    sel = [r for r in rows if r["mode"] == mode and (r["batch"], r["heads"], r["n_q"], r["head_dim"]) == shape
           and r["causal"] == causal and r["dtype"] == dtype]
    base = {r["impl"]: r for r in sel}
    ref = {name: base.get(name, {}).get("ms") for name in ("sdpa cudnn", "flex attention")}
    out = [f"--- {mode} B={shape[0]} H={shape[1]} N={shape[2]} D={shape[3]} causal={causal} {dtype}"]
    for r in sel:
        if not r.get("ms"):
            out.append(f"    {r['impl']:<28} {r['status']}")
            continue
        ratios = "  ".join(f"{ref[k] / r['ms']:.2f}x vs {'cudnn' if k == 'sdpa cudnn' else 'flex'}"
                           for k in ref if ref[k])
        r["vs_cudnn"] = ref["sdpa cudnn"] / r["ms"] if ref["sdpa cudnn"] else None
        r["vs_flex"] = ref["flex attention"] / r["ms"] if ref["flex attention"] else None
        out.append(f"    {r['impl']:<28} {r['ms']:8.3f} ms {r['tflops']:7.1f} TFLOP/s  {ratios}")
    return out


def best_lines(rows):
    """One line per timed point: step 03's ratios, and the fastest variant's."""
    baselines = ("sdpa cudnn", "flex attention")
    points = {}
    for r in rows:
        if r.get("ms"):
            key = (r["mode"], r["dtype"], r["batch"], r["heads"], r["n_q"], r["head_dim"], r["causal"])
            points.setdefault(key, []).append(r)
    lines = []
    for (mode, dtype, b, h, n, d, causal), sel in points.items():
        ours = [r for r in sel if r["impl"] not in baselines]
        now = next((r for r in ours if r["impl"] == "03 flash"), None)
        best = min(ours, key=lambda r: r["ms"]) if ours else None

        def ratios(r):
            return " ".join(f"{r.get(k) or float('nan'):.2f}x {k[3:]}" for k in ("vs_cudnn", "vs_flex"))
        head = f"{mode:<4} {dtype} B={b} H={h} N={n:<5} D={d:<3} causal={causal!s:<5}"
        lines.append(f"{head} | 03 now: {ratios(now) if now else '-'}"
                     + (f" | best {best['impl']}: {ratios(best)}" if best else ""))
    return lines


def warm_jobs(args, variants, parts, head_dims, causals, dtypes, default):
    """The calls that compile what the timed run will launch: each variant once per (mode, D, causal,
    dtype) at the grid's shortest length (kernels compile per tile config and mask, not per length:
    the lengths here all divide by 16) and at the short point; FlexAttention, which compiles per
    shape, at every grid shape."""
    jobs = []
    for mode in parts:
        jobs.append((mode, "03 flash", default, SHORT_POINT, True, dtypes[0]))
        jobs += [(mode, "03 flash", default, (4, 32, min(args.lengths), d), causal, dtype)
                 for dtype in dtypes for d in head_dims for causal in causals]
        for name, (fn, dims, _) in variants[mode].items():
            if SHORT_POINT[3] in dims:
                jobs.append((mode, name, fn, SHORT_POINT, True, dtypes[0]))
            if name in SHORT_ONLY:
                continue
            jobs += [(mode, name, fn, (4, 32, min(args.lengths), d), causal, dtype)
                     for dtype in dtypes for d in dims for causal in causals]
        if not args.no_flex:
            from shared.baselines import flex_attention_compiled
            flex = flex_attention_compiled()
            jobs.append((mode, "flex attention", flex, SHORT_POINT, True, dtypes[0]))
            jobs += [(mode, "flex attention", flex, (4, 32, n, d), causal, dtype)
                     for dtype in dtypes for d in head_dims for n in args.lengths for causal in causals]
    return jobs


def warm_call(fn, shape, causal, dtype, mode):
    b, h, n, d = shape
    q, k, v = shared.make_qkv(b, h, n, d, dtype=dtype)
    if mode == "bwd":
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
        out = fn(q, k, v, causal=causal)
        torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    else:
        with torch.no_grad():
            fn(q, k, v, causal=causal)
    torch.cuda.synchronize()


def parse_shard(text):
    index, count = (int(x) for x in text.split("/"))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: want i/k with 0 <= i < k")
    return index, count


def have_gpu():
    """A CUDA GPU that Triton compiles for (not the interpreter)."""
    return torch.cuda.is_available() and not shared.INTERPRETER


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where hopper_experiments.json goes (default scratch/hopper_experiments/)")
    parser.add_argument("--budget-s", type=float, default=400,
                        help="no new grid point starts after this many seconds from the start (default 400)")
    parser.add_argument("--part", choices=["fwd", "bwd", "all"], default="all",
                        help="forward, backward or both")
    parser.add_argument("--head-dim", type=int, nargs="+", default=[64, 128], choices=[64, 128])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 2048])
    parser.add_argument("--dtype", nargs="+", default=["bfloat16"], choices=["bfloat16", "float16"])
    parser.add_argument("--causal", choices=["no", "yes", "both"], default="both")
    parser.add_argument("--only", nargs="+", default=None,
                        help="time only variants whose name contains one of these")
    parser.add_argument("--no-flex", action="store_true", help="leave FlexAttention out (compiles per shape)")
    parser.add_argument("--skip-check", action="store_true",
                        help="time without the correctness checks (not for results)")
    parser.add_argument("--rep", type=int, default=50, help="do_bench rep in ms (warmup: a fifth of it)")
    parser.add_argument("--more", action="store_true",
                        help="also the variants left out by default (dq_atomic at step 03's default tiles)")
    parser.add_argument("--list", action="store_true", help="print the variants and configs, do nothing else")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/K",
                        help="with --warm-only: this process checks and warms every K-th variant and call, "
                             "from the I-th (run K processes, I = 0..K-1)")
    parser.add_argument("--warm-only", action="store_true",
                        help="run the checks and one call per timed kernel variant, time nothing: fills "
                             "Triton's and Inductor's disk caches (run one process per variant in "
                             "parallel with --only, then the timed run compiles nothing)")
    args = parser.parse_args(argv)

    step03 = shared.load_step("03")
    tma = shared.load_step("03", "flash_attention_tma.py")
    gluon = shared.load_step("03", "flash_attention_gluon.py")
    gluon = gluon if have_gpu() and gluon.gluon_unavailable_reason() is None else None
    variants, more = build_variants(step03, tma, gluon)
    if args.more:
        variants = {m: {**variants[m], **more[m]} for m in variants}
    parts = ("fwd", "bwd") if args.part == "all" else (args.part,)
    if args.only:
        variants = {m: {n: v for n, v in vs.items() if any(s in n for s in args.only)}
                    for m, vs in variants.items()}
    if args.list:
        for mode in parts:
            print(f"{mode}:")
            for name, (_, dims, new_kernel) in variants[mode].items():
                print(f"  {name:<32} D {dims}{' (new kernel)' if new_kernel else ''}")
        print(f"TMA forward table: {tma.TMA_FORWARD_CONFIGS}; fused backward table: {tma.FUSED_BWD_CONFIGS}")
        return 0
    if not have_gpu():
        print("hopper_experiments.py times kernels on a CUDA GPU (Hopper), and there is none here: "
              "nothing to do.")
        return 0

    started = time.time()
    out_dir = shared.output_dir(args.out_dir, ROOT / "benchmarks" / "hopper_experiments", official=False,
                                why="an experiment")
    env = shared.environment()
    print(shared.env_line(env), f"| {env.get('sms')} SMs, cuDNN {env.get('cudnn')}", flush=True)
    dtypes = [getattr(torch, d) for d in args.dtype]
    head_dims = tuple(args.head_dim)
    causals = {"no": (False,), "yes": (True,), "both": (True, False)}[args.causal]
    result = {"env": env, "command": " ".join(["python benchmarks/hopper_experiments.py", *sys.argv[1:]]),
              "configs": {"step03_fwd": str(STEP03_FWD_CONFIGS), "tma_fwd": str(TMA_FWD_CONFIGS),
                          "tma_table": str(tma.TMA_FORWARD_CONFIGS), "step03_bwd": str(STEP03_BWD_CONFIGS),
                          "atomic": str(ATOMIC_CONFIGS), "fused": str(FUSED_CONFIGS),
                          "fused_table": str(tma.FUSED_BWD_CONFIGS),
                          "step03_default_fwd": "forward_config()",
                          "step03_default_bwd": str(step03.BWD_CONFIGS)},
              "checks": {}, "rows": []}
    path = out_dir / "hopper_experiments.json"

    def save():
        result["elapsed_s"] = time.time() - started
        path.write_text(json.dumps(result, indent=1, default=str))

    # ---- 1. correctness: a variant that fails here is not timed
    to_check = [(mode, name) for mode in parts for name in variants[mode]]
    if args.warm_only:  # this shard checks (and so compiles the check shapes of) every K-th variant
        to_check = to_check[args.shard[0]::args.shard[1]]
    for mode in parts:
        for name in list(variants[mode]):
            if (mode, name) not in to_check:
                continue
            fn, dims, new_kernel = variants[mode][name]
            dims = tuple(d for d in dims if d in head_dims)
            if not dims:
                del variants[mode][name]
                continue
            variants[mode][name] = (fn, dims, new_kernel)  # timed only where it was checked
            t0 = time.time()
            if args.skip_check:
                passed, lines = True, ["not checked (--skip-check)"]
            else:
                passed, lines = check_variant(mode, fn, dims, new_kernel, dtypes, step03,
                                              mha_only=name.startswith("gluon"))
            result["checks"][f"{mode} {name}"] = {"passed": passed, "lines": lines,
                                                   "seconds": time.time() - t0}
            print(f"check {mode} {name:<28} {'PASS' if passed else 'FAIL: not timed'} "
                  f"({time.time() - t0:.0f} s, "
                  f"compiles included)", flush=True)
            if not passed:
                for line in lines:
                    if "FAIL" in line:
                        print("    " + line)
                del variants[mode][name]
    save()

    if args.warm_only:
        index, count = args.shard
        jobs = warm_jobs(args, variants, parts, head_dims, causals, dtypes,
                         step03.flash_attention)[index::count]
        for mode, name, fn, shape, causal, dtype in jobs:
            try:
                warm_call(fn, shape, causal, dtype, mode)
            except Exception as exc:  # noqa: BLE001  (the timed run's check reports it)
                print(f"warm {mode} {name} {shape} causal={causal}: {type(exc).__name__}: {str(exc)[:200]}")
        print(f"shard {index}/{count}: {len(jobs)} warm calls in {time.time() - started:.0f} s")
        return 0

    baselines = {"sdpa cudnn": shared.sdpa_backend("cudnn")}
    if not args.no_flex:
        from shared.baselines import flex_attention_compiled
        baselines["flex attention"] = flex_attention_compiled()
    defaults = {"fwd": {"03 flash": step03.flash_attention}, "bwd": {"03 flash": step03.flash_attention}}

    def time_point(mode, shape, causal, dtype):
        d = shape[3]
        fns = {**baselines, **defaults[mode],
               **{name: fn for name, (fn, dims, _) in variants[mode].items()
                  if d in dims and (shape == SHORT_POINT or name not in SHORT_ONLY)}}
        rows = []
        for name, fn in fns.items():
            row = {"impl": name, **shared.measure(fn, shape, causal, dtype, mode,
                                                  warmup=max(args.rep // 5, 5),
                                                  rep=args.rep)}
            rows.append(row)
        result["rows"].extend(rows)
        for line in summarize(result["rows"], mode, shape, causal, str(dtype).replace("torch.", "")):
            print(line, flush=True)
        save()

    # ---- 2. short lengths (a model's call): host cost shows here
    for mode in parts:
        time_point(mode, SHORT_POINT, True, dtypes[0])

    # ---- 3. the grid, most important points first, until the budget is spent
    skipped = []
    for dtype, d, n, causal in point_order(head_dims, args.lengths, causals, dtypes):
        for mode in parts:
            if time.time() - started > args.budget_s:
                skipped.append((str(dtype), d, n, causal, mode))
                continue
            time_point(mode, (4, 32, n, d), causal, dtype)
    result["skipped_points"] = skipped
    save()
    if skipped:
        print(f"budget of {args.budget_s:.0f} s spent: {len(skipped)} points not started: {skipped}")
    print("summary (time ratio, > 1 = faster): step 03 now, and the best variant, against cuDNN and Flex")
    for line in best_lines(result["rows"]):
        print("  " + line)
    failed = [k for k, c in result["checks"].items() if not c["passed"]]
    print(f"checks failed (not timed): {failed or 'none'}")
    print(f"wrote {path} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
