"""Tuning runs for step 03's forward kernel (GPU only): check every variant, then time them.

Three stages, each the run behind a part of the post's section 7 ("Hopper: what was tried,
what was kept"):

    python tune_forward.py                  # stage 3 (default): today's autotuned kernel against
                                            #   SDPA flash and cuDNN, the whole grid; results/confirm3.json
    python tune_forward.py --stage 1        # stage 1's tile configurations (committed run: results/tune1.*)
    python tune_forward.py --stage 2        # stage 2's, 256-row tiles included (committed: results/tune2.*)
    python tune_forward.py --out-dir /tmp/tune --stage 2 --workers 8

Stages 1 and 2 compared variants of the kernel that lost and were removed from it: TMA tensor
descriptors (stage 1, at commit 519035d), lazy rescaling and a hand-pipelined loop (stage 2, at
commit 1008836). From today's code these stages time the plain pointer path over the same
configurations, write to scratch/03_advanced_optimizations/ (or --out-dir) so the committed
tune1/tune2 files stay as measured, and print the commands that re-run the removed variants
at their commits. Every variant and config is checked against a reference on the GPU before it
is timed (batch > 1, GQA, odd lengths, non-contiguous inputs), then timed with do_bench medians
beside SDPA's flash and cuDNN backends in the same process. Compilation is warmed in parallel
worker processes first (Triton's disk cache), so the timing phase stays short.
"""
import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shared  # noqa: E402
import torch  # noqa: E402
import triton.testing  # noqa: E402

HERE = Path(__file__).resolve().parent
# Today's kernel has one path, plain pointer loads. The variants it was compared with were removed
# after the measurements (results/tune1.log, tune2.log); their code is at these commits:
VARIANTS = {"ptr": {}}
REMOVED = {
    1: ("519035d", "tma (TMA tensor descriptors, use_tma=; warp_specialize= was checked offline only)"),
    2: ("1008836", "lazy (lazy_rescale=) and pipe (pipeline_qk=, a hand-pipelined loop)"),
}
# The configurations (BLOCK_M, BLOCK_N, num_warps, num_stages) each stage timed, per head dim.
STAGE_CONFIGS = {
    1: {64: [(64, 64, 4, 3), (128, 64, 4, 3), (128, 64, 4, 4), (128, 64, 8, 3),
             (128, 128, 8, 3), (128, 128, 4, 3), (128, 32, 4, 3), (128, 128, 8, 2)],
        128: [(128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (128, 128, 8, 2),
              (64, 64, 4, 3), (128, 32, 4, 3), (128, 64, 8, 4), (128, 64, 8, 2)]},
    2: {64: [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (256, 64, 16, 3),
             (128, 128, 4, 3), (128, 64, 8, 2)],
        128: [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 8, 4),
              (256, 64, 16, 3), (256, 128, 16, 2)]},
}
B, H = 4, 32


def load_fa():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fa03", HERE / "flash_attention.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def removed_variants_note(stage):
    """How to re-run the variants of a stage that today's kernel no longer has."""
    commit, what = REMOVED[stage]
    return (f"stage {stage} also timed {what}; they were removed from the kernel. To re-run them:\n"
            f"    git worktree add /tmp/stage{stage} {commit}\n"
            f"    cd /tmp/stage{stage}/03_advanced_optimizations && python tune_forward.py "
            f"--out-dir /tmp/tune{stage} --stage {stage}")


def plan(stage):
    """(variant, config, D, causal, dtype) tuples to time, and the lengths."""
    if stage not in STAGE_CONFIGS:
        raise SystemExit(f"unknown stage {stage}")
    cfgs, jobs = STAGE_CONFIGS[stage], []
    for d in (64, 128):
        for causal in (False, True):
            jobs += [("ptr", c, d, causal, "float16") for c in cfgs[d]]
            if stage == 2:  # stage 2 also took two configurations in bf16
                jobs += [("ptr", c, d, causal, "bfloat16") for c in ((128, 64, 8, 3), (128, 128, 8, 3))]
    return jobs, (1024, 4096, 16384)


def make_inputs(d, n, dtype, seed=0):
    return shared.make_qkv(B, H, n, d, dtype=getattr(torch, dtype), device=shared.DEVICE, seed=seed)


def warm(job):
    """Worker: compile one (variant, config) on the timing shape, so Triton's disk cache has it."""
    fa = load_fa()
    var, cfg, d, causal, dtype = job
    t0 = time.time()
    try:
        q, k, v = make_inputs(d, 1024, dtype)
        fa.flash_attention_forward(q, k, v, causal=causal, config=cfg, **VARIANTS[var])
        torch.cuda.synchronize()
        return job, "ok", time.time() - t0
    except Exception as exc:
        return job, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}", \
            time.time() - t0


def feature_checks(fa, var, log):
    """Feature shapes for one variant, default config per shape: returns True if all pass."""
    cases = [  # (B, H, Hkv, Nq, Nk, D, causal, dtype, noncontig)
        (2, 4, 4, 1025, 1025, 64, True, torch.float16, False),
        (3, 4, 4, 333, 257, 128, False, torch.bfloat16, False),
        (2, 8, 2, 300, 1025, 64, True, torch.float16, False),  # GQA
        (2, 4, 1, 513, 513, 128, False, torch.bfloat16, False),  # MQA
        (2, 3, 3, 777, 777, 64, True, torch.float16, True),  # (B,N,H,D).transpose(1,2)
        (2, 4, 4, 1, 1025, 128, False, torch.float16, False),  # decoding
        (2, 3, 3, 1000, 1000, 96, True, torch.float16, False),
        (2, 2, 2, 257, 513, 40, False, torch.bfloat16, False),
        (2, 2, 2, 400, 400, 256, True, torch.float16, False),
        (1, 2, 2, 97, 97, 111, True, torch.float16, False),
        (2, 4, 4, 1025, 1025, 64, False, torch.float16, False),
    ]
    ok_all = True
    for b, h, hkv, nq, nk, d, causal, dtype, noncontig in cases:
        if noncontig:
            q, k, v = (torch.randn(b, n, hh, d, device=shared.DEVICE, dtype=dtype).transpose(1, 2)
                       for n, hh in ((nq, h), (nk, hkv), (nk, hkv)))
        else:
            q, k, v = shared.make_qkv(b, h, nq, d, n_k=nk, kv_heads=hkv, dtype=dtype, device=shared.DEVICE)
        cfg = None  # the configuration the launcher picks for this shape

        def fn(q, k, v, causal=False, scale=None):
            return fa.flash_attention_forward(q, k, v, causal=causal, scale=scale, config=cfg, **VARIANTS[var])[0]
        try:
            res = shared.test_correctness(fn, q, k, v, causal=causal)
            ok, text = res.passed, str(res).splitlines()[0]
        except Exception as exc:
            ok, text = False, f"ERROR {type(exc).__name__}: {str(exc)[:200]}"
        ok_all &= ok
        log(f"  check {var:<7} B={b} H={h} Hkv={hkv} Nq={nq} Nk={nk} D={d} "
            f"causal={causal!s:<5} {str(dtype)[6:]:<8} nc={noncontig!s:<5} {text}")
    return ok_all


def confirm(out_dir):
    """Stage 3: the default (autotuned) path against SDPA flash and cuDNN, the whole grid."""
    fa = load_fa()
    fns = {"03 flash": fa.flash_attention, "sdpa flash": shared.sdpa_backend("flash"),
           "sdpa cudnn": shared.sdpa_backend("cudnn")}
    ceilings = {str(dt): shared.measure_ceilings(dtype=dt) for dt in (torch.float16, torch.bfloat16)}
    print("ceilings", ceilings, flush=True)
    rows = []
    lengths = (1024, 2048, 4096, 8192, 16384)
    parts = [(dtype, d, causal) for dtype in (torch.float16, torch.bfloat16) for d in (64, 128)
             for causal in (False, True)]
    progress = shared.Progress(weights=[sum(shared.attention_flops(B, H, n, n, d, c) for n in lengths)
                                        for _, d, c in parts], label="parts of stage 3")
    for dtype, d, causal in parts:
        shapes = [(B, H, n, d) for n in lengths]
        rows += shared.quick_benchmark(fns, shapes=shapes, causal=causal, dtype=dtype)
        shared.save_results(out_dir / "confirm3.json", rows, ceilings=ceilings,
                            command="python tune_forward.py --stage 3")
        print(progress.advance(), flush=True)
    print("03 flash / sdpa flash / sdpa cudnn, TFLOP/s:")
    for r in rows:
        if r["impl"] == "03 flash" and r["tflops"]:
            key = dict(n_q=r["n_q"], head_dim=r["head_dim"], causal=r["causal"], dtype=r["dtype"])
            fl = shared.select(rows, impl="sdpa flash", **key)[0]["tflops"]
            cu = shared.select(rows, impl="sdpa cudnn", **key)[0]["tflops"]
            print(f"  {r['dtype']:<8} D={r['head_dim']:<3} causal={r['causal']!s:<5} N={r['n_q']:<6} "
                  f"{r['tflops']:5.0f}  x{r['tflops'] / fl:.2f} flash  x{r['tflops'] / cu:.2f} cudnn")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=int, choices=(1, 2, 3), default=3,
                        help="3 (default): today's kernel against SDPA, the whole grid; 1 or 2: the tile "
                             "configurations of tuning stage 1 or 2, pointer path (see the docstring)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="default: results/ beside this script for stage 3, "
                             "scratch/03_advanced_optimizations/ for stages 1 and 2")
    parser.add_argument("--workers", type=int, default=12, help="processes that compile in parallel")
    args = parser.parse_args(argv)
    shared.require_gpu("tune_forward.py")
    why = f"stage {args.stage} from today's code, not the committed tune{args.stage} run"
    out_dir = shared.output_dir(args.out_dir, HERE / "results", official=args.stage == 3, why=why)
    if args.stage == 3:
        return confirm(out_dir)
    print(removed_variants_note(args.stage), flush=True)
    logf = open(out_dir / f"tune{args.stage}.log", "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    t_start = time.time()
    fa = load_fa()
    env = shared.environment()
    log(json.dumps(env))
    result = {"env": env, "stage": args.stage, "commit_of_removed_variants": REMOVED[args.stage][0],
              "warm": [], "checks": {}, "config_checks": [], "rows": [], "anchors": [], "ceilings": {}}
    for dt in (torch.float16, torch.bfloat16):
        result["ceilings"][str(dt)] = shared.measure_ceilings(dtype=dt)
    log(f"ceilings {result['ceilings']}")
    jobs, lengths = plan(args.stage)

    # 1. compile everything in parallel processes (fills Triton's disk cache)
    t0 = time.time()
    status = {}
    with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        for job, st, secs in pool.map(warm, jobs):
            status[job] = st
            result["warm"].append({"job": list(job), "status": st, "s": secs})
            if st != "ok":
                log(f"  warm FAILED {job}: {st}")
    log(f"warm: {len(jobs)} kernels in {time.time() - t0:.0f} s, "
        f"{sum(s == 'ok' for s in status.values())} ok")

    # 2. feature checks per variant (default configs)
    for var in VARIANTS:
        try:
            result["checks"][var] = feature_checks(fa, var, log)
        except Exception:
            log(traceback.format_exc())
            result["checks"][var] = False
    log(f"feature checks: {result['checks']}  ({time.time() - t_start:.0f} s)")

    # 3. every timed (variant, config) against the reference on its own timing shape
    refs = {}
    good = []
    for job in jobs:
        var, cfg, d, causal, dtype = job
        if status[job] != "ok":
            continue
        key = (d, causal, dtype)
        if key not in refs:
            q, k, v = make_inputs(d, 1024, dtype, seed=1)
            refs[key] = (q, k, v, shared.reference_attention(q, k, v, causal=causal,
                                                             compute_dtype=torch.float32))
        q, k, v, ref = refs[key]
        out = fa.flash_attention_forward(q, k, v, causal=causal, config=cfg, **VARIANTS[var])[0]
        err = (out.float() - ref).abs().max().item()
        ok = err < 2e-2
        result["config_checks"].append({"job": list(job), "max_abs_err": err, "ok": ok})
        if ok:
            good.append(job)
        else:
            log(f"  WRONG {job}: max abs err {err:.3e}")
    refs.clear()
    log(f"config checks: {len(good)} of {len(jobs)} correct ({time.time() - t_start:.0f} s)")

    # 4. timing: anchors and every good job, per shape
    sdpa_flash, sdpa_cudnn = shared.sdpa_backend("flash"), shared.sdpa_backend("cudnn")
    shapes = sorted({(d, causal, dtype) for _, _, d, causal, dtype in good})
    timed = {key: 3 + sum(job[2:] == key for job in good) for key in shapes}  # 3 anchors + the configs
    progress = shared.Progress(weights=[shared.attention_flops(B, H, n, n, d, c) * timed[(d, c, dt)]
                                        for d, c, dt in shapes for n in lengths], label="shapes")
    for d, causal, dtype in shapes:
        for n in lengths:
            q, k, v = make_inputs(d, n, dtype, seed=2)
            flops = shared.attention_flops(B, H, n, n, d, causal)
            line = {}
            for name, fn in (("sdpa flash", sdpa_flash), ("sdpa cudnn", sdpa_cudnn),
                             ("03 flash (autotuned)", fa.flash_attention)):
                ms = triton.testing.do_bench(lambda: fn(q, k, v, causal=causal), warmup=25, rep=100,
                                             return_mode="median")
                tf = flops / ms / 1e9
                line[name] = tf
                result["anchors"].append({"impl": name, "d": d, "causal": causal, "dtype": dtype,
                                          "n": n, "ms": ms, "tflops": tf})
            log(f"D={d} causal={causal!s:<5} {dtype} N={n:<6} " +
                " ".join(f"{k_}={v_:.0f}" for k_, v_ in line.items()))
            for job in good:
                var, cfg, jd, jc, jdt = job
                if (jd, jc, jdt) != (d, causal, dtype):
                    continue
                ms = triton.testing.do_bench(
                    lambda: fa.flash_attention_forward(q, k, v, causal=causal, config=cfg, **VARIANTS[var]),
                    warmup=25, rep=100, return_mode="median")
                tf = flops / ms / 1e9
                result["rows"].append({"variant": var, "config": list(cfg), "d": d, "causal": causal,
                                       "dtype": dtype, "n": n, "ms": ms, "tflops": tf,
                                       "vs_flash": tf / line["sdpa flash"],
                                       "vs_cudnn": tf / line["sdpa cudnn"]})
                log(f"    {var:<7} {str(cfg):<18} {tf:6.0f} TFLOP/s  x{tf / line['sdpa flash']:.2f} flash "
                    f" x{tf / line['sdpa cudnn']:.2f} cudnn")
            del q, k, v
            torch.cuda.empty_cache()
            log(progress.advance())
            (out_dir / f"tune{args.stage}.json").write_text(json.dumps(result, indent=1))
    # best per shape
    log("best per shape:")
    for d, causal, dtype in shapes:
        for n in lengths:
            rows = [r for r in result["rows"]
                    if (r["d"], r["causal"], r["dtype"], r["n"]) == (d, causal, dtype, n)]
            if rows:
                best = max(rows, key=lambda r: r["tflops"])
                log(f"  D={d} causal={causal!s:<5} N={n:<6} {best['variant']:<7} {best['config']} "
                    f"{best['tflops']:.0f} x{best['vs_flash']:.2f} flash x{best['vs_cudnn']:.2f} cudnn")
    (out_dir / f"tune{args.stage}.json").write_text(json.dumps(result, indent=1))
    log(f"total {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
