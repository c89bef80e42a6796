"""Ring attention (step 03) against PyTorch's context parallelism and one GPU, on W GPUs of one host.

    torchrun --standalone --nproc-per-node=2 benchmarks/ring_attention_bench.py   # -> results/ring_w2.json
    torchrun --standalone --nproc-per-node=4 benchmarks/ring_attention_bench.py   # -> results/ring_w4.json
    bash benchmarks/run_ring_attention.sh          # both, where the GPUs exist, then the post's table
  (results/ is 03_advanced_optimizations/results; --out PATH writes elsewhere)
    python benchmarks/ring_attention_bench.py --cpu-smoke     # 2 CPU processes, gloo, tiny sizes:
                                                              # the logic, not the speed
    python benchmarks/ring_attention_bench.py --table A.json [B.json ...]   # rewrite the post's table

What one run does, on every rank together:
  1. checks the ring against one-GPU flash_attention (forward and gradients) at a small length and
     exits 1 if it is wrong; records how far PyTorch's context parallelism's output is from the
     ring's on the same shards (forward), and which backend SDPA picks by itself;
  2. for each whole-sequence length N, causal and not, modes "fwd" and "fwd+bwd", times
       "03 ring"                    ring_attention.py on the W GPUs (zigzag shards when causal),
       "torch cp <rotate> <sdpa>"   torch.distributed.tensor.experimental.context_parallel over
                                    SDPA (its own backend choice, or cuDNN forced), K/V rotated by
                                    all-gather (its default) or all-to-all,
                                    head-tail (= zigzag) load balancing when causal,
       "03 flash (1 GPU)"           step 03's flash_attention on the whole sequence, on rank 0 alone;
  3. writes one row per (impl, W, N, causal, mode) and a summary: ring vs context parallelism as
     shipped and vs its fastest variant, and the scaling efficiency one-GPU time / (W x ring time).

Timing: a fixed number of repetitions, agreed by all ranks, each started right after a barrier and
timed with CUDA events on every rank; a rank's figure is its median, a row's figure the slowest
rank's (every rank waits for the slowest at the next step of a ring). FLOPs count the whole
sequence (shared.attention_flops), so TFLOP/s compare across W. Rows are written as they finish,
so a run cut short keeps what it measured. Shapes: B=1, H=32, Hkv=32 (MHA, which SDPA's fused
kernels under context parallelism surely take; --kv-heads 8 for GQA), D=128, bf16 by default.
"""
import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POST = ROOT / "03_advanced_optimizations" / "ring_attention.md"
RING_IMPL, SINGLE_IMPL = "03 ring", "03 flash (1 GPU)"
CP_PREFIX = "torch cp"
DEFAULT_LENGTHS = (16384, 32768, 65536, 131072)
MODES = ("fwd", "fwd+bwd")
CP_DEFAULT = ("allgather:default", "alltoall:default", "allgather:cudnn", "alltoall:cudnn")
CP_AS_SHIPPED = f"{CP_PREFIX} allgather default"  # what context_parallel does without any setting


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: 03_advanced_optimizations/results/ring_w<W>.json)")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=list(DEFAULT_LENGTHS),
                        help="whole-sequence lengths (each divisible by 2 x W; default 16k..128k)")
    parser.add_argument("--single-max", type=int, default=131072,
                        help="longest N timed on one GPU (it takes about W times the ring's time)")
    parser.add_argument("--causal", choices=["no", "yes", "both"], default="both")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=32, help="GQA if below --heads (context parallelism "
                        "over SDPA may refuse it; its rows then record the error)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--cp", nargs="*", default=None,
                        help="context-parallel variants rotate:backend (rotate: allgather, the default, or "
                             "alltoall; backend: default = SDPA's own choice, or flash, cudnn, efficient); "
                             "default: " + " ".join(CP_DEFAULT) + " on GPUs, none with --cpu-smoke "
                             "(DTensor's CPU path takes ~1 min a call there); --cp alone: none")
    parser.add_argument("--target-ms", type=float, default=1500,
                        help="timed repetitions per point add up to about this (3 to 20 repetitions)")
    parser.add_argument("--budget-s", type=float, default=540,
                        help="stop starting new lengths after this many seconds (rows so far are kept)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="no GPU needed: gloo on CPU processes, the interpreter, N=16, "
                             "one timed call per point")
    parser.add_argument("--table", type=Path, nargs="*", default=None,
                        help="only rewrite the table in ring_attention.md from these results files")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- the post's table
def summarize(rows, world_size):
    """Per (N, causal, mode): ring ms, best context-parallel variant, one-GPU ms, scaling efficiency."""
    out = []
    keys = sorted({(r["n"], r["causal"], r["mode"]) for r in rows if r["world_size"] == world_size})
    for n, causal, mode in keys:
        sel = [r for r in rows
               if (r["n"], r["causal"], r["mode"], r["world_size"]) == (n, causal, mode, world_size)]
        ok = {r["impl"]: r for r in sel if r["status"] == "ok" and r["ms"]}
        ring = ok.get(RING_IMPL)
        cps = [r for name, r in ok.items() if name.startswith(CP_PREFIX)]
        best_cp = min(cps, key=lambda r: r["ms"]) if cps else None
        shipped = ok.get(CP_AS_SHIPPED)
        single = ok.get(SINGLE_IMPL)
        out.append({
            "world_size": world_size, "n": n, "causal": causal, "mode": mode,
            "ring_ms": ring and ring["ms"], "ring_tflops_per_gpu": ring and ring["tflops_per_gpu"],
            "best_cp": best_cp and best_cp["impl"], "best_cp_ms": best_cp and best_cp["ms"],
            "ring_vs_best_cp": (best_cp["ms"] / ring["ms"]) if ring and best_cp else None,
            "cp_default_ms": shipped and shipped["ms"],
            "ring_vs_cp_default": (shipped["ms"] / ring["ms"]) if ring and shipped else None,
            "single_ms": single and single["ms"],
            "scaling_efficiency": (single["ms"] / (world_size * ring["ms"])) if ring and single else None,
            "cp_errors": sorted({r["status"] for r in sel
                                 if r["impl"].startswith(CP_PREFIX) and r["status"] != "ok"}),
        })
    return out


def _choice(choice):
    if isinstance(choice, dict):
        return ", ".join(f"{v} ({'causal' if k == 'True' else 'not causal'})" for k, v in choice.items())
    return str(choice)


def table_markdown(results):
    """The post's table from loaded results files (one per W); "not yet measured" without any."""
    if not results:
        return "*Not yet measured: no GPU results yet (run `bash benchmarks/run_ring_attention.sh`).*"

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    def ratio(x):
        return "–" if x is None else f"{x:.2f}x"

    lines = []
    for data in results:
        env, meta = data["env"], data["meta"]
        lines.append(f"- W = {meta.get('world_size')}: {env.get('gpu', '?')}, torch {env.get('torch')}, "
                     f"triton {env.get('triton')}, NCCL {meta.get('nccl')}, {meta.get('dtype')}, "
                     f"B={meta.get('batch')} H={meta.get('heads')} Hkv={meta.get('kv_heads')} "
                     f"D={meta.get('head_dim')}, SDPA's own backend choice: "
                     f"{_choice(meta.get('check', {}).get('sdpa_default_backend'))} "
                     f"({env.get('date', '?')}).")
    lines += ["", "| GPUs | N | causal | mode | ring ms | ring TFLOP/s per GPU | torch CP ms "
              "| ring vs torch CP | best CP variant | ring vs best | 1 GPU ms | scaling efficiency |",
              "|" + "---|" * 12]
    for data in results:
        for s in data["meta"].get("summary", []):
            lines.append("| " + " | ".join([
                str(s["world_size"]), str(s["n"]), "yes" if s["causal"] else "no", s["mode"],
                fmt(s["ring_ms"], ".2f"), fmt(s["ring_tflops_per_gpu"], ".0f"),
                fmt(s.get("cp_default_ms"), ".2f"), ratio(s.get("ring_vs_cp_default")),
                (s["best_cp"] or "–").replace(CP_PREFIX + " ", ""), ratio(s["ring_vs_best_cp"]),
                fmt(s["single_ms"], ".2f"),
                "–" if s["scaling_efficiency"] is None else f"{100 * s['scaling_efficiency']:.0f}%",
            ]) + " |")
    lines += ["", "*torch CP*: `context_parallel` as shipped (K/V all-gathered, SDPA's own backend); "
              "*best CP variant*: the fastest of all-gather/all-to-all x SDPA default/cuDNN at that point. "
              "Ratios are "
              "time ratios, above 1x the ring is faster. Scaling efficiency: one-GPU time / (GPUs x ring "
              "time). Errors of any variant are in the results files (`meta.summary[].cp_errors`)."]
    return "\n".join(lines)


def write_table(paths, post=POST):
    sys.path.insert(0, str(ROOT))
    import shared

    results = [shared.load_results(p) for p in paths if Path(p).exists()]
    shared.write_between_markers(post, "ring", table_markdown(results))
    print(f"wrote the table in {post} from {len(results)} results file(s)")


# ----------------------------------------------------------------------------- setup
def _load_ring():
    import shared

    return shared.load_step("03", "ring_attention.py")


class Bench:
    """Everything one rank needs: the group, the device, the timer, the rows."""

    def __init__(self, args):
        import torch
        import torch.distributed as dist

        self.args, self.torch, self.dist = args, torch, dist
        self.started = time.time()
        self.cpu = args.cpu_smoke
        if self.cpu:
            self.device = torch.device("cpu")
            backend, device_id = "gloo", None
        else:
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
            backend, device_id = "nccl", self.device
        import datetime

        init_file = os.environ.get("RING_BENCH_INIT_FILE")  # --cpu-smoke's rendezvous: a file, not a port
        rendezvous = dict(init_method=f"file://{init_file}", rank=int(os.environ["RANK"]),
                          world_size=int(os.environ["WORLD_SIZE"])) if init_file else {}
        dist.init_process_group(backend, device_id=device_id, timeout=datetime.timedelta(minutes=5),
                                **rendezvous)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.gpus = [] if self.cpu else self.gather(torch.cuda.get_device_name(self.device))
        self.dtype = getattr(torch, args.dtype)
        self.rows = []
        self.mesh = None
        self.save = lambda status="ok": None  # run() points it at the results file

    def say(self, *text):
        if self.rank == 0:
            print(f"[{time.time() - self.started:5.0f} s]", *text, flush=True)

    def sync(self):
        if not self.cpu:
            self.torch.cuda.synchronize()

    def agree_max(self, value):
        """The largest of every rank's value (float), known to every rank."""
        t = self.torch.tensor([float(value)], dtype=self.torch.float64,
                              device="cpu" if self.cpu else self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return t.item()

    def gather(self, obj):
        everyone = [None] * self.world_size
        self.dist.all_gather_object(everyone, obj)
        return everyone

    def _solo(self, call):
        """Milliseconds of one call on this rank (CUDA events; the host clock on CPU)."""
        self.sync()
        if self.cpu:
            start = time.perf_counter()
            call()
            return 1e3 * (time.perf_counter() - start)
        begin, end = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
        begin.record()
        call()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end)

    def _together(self, call):
        """Milliseconds of one call, started right after a barrier with the other ranks."""
        self.dist.barrier()
        return self._solo(call)

    def time_collective(self, call, alone=False):
        """(median ms on this rank, reps, extra GiB): warm up, agree on reps, time. ``alone``: rank 0 only."""
        torch = self.torch
        timer = self._solo if alone else self._together
        if not self.cpu:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        call()  # compiles / autotunes / creates communicators
        estimate = timer(call)
        if self.cpu:  # the smoke run: the logic, not the speed
            return estimate, 1, None
        mem = (torch.cuda.max_memory_allocated() - base) / 2**30
        estimate = estimate if alone else self.agree_max(estimate)
        reps = max(3, min(20, math.ceil(self.args.target_ms / max(estimate, 1e-3))))
        times = [timer(call) for _ in range(reps)]
        return statistics.median(times), reps, mem

    def make_inputs(self, n, seed=0):
        """Whole-sequence q, k, v, dO, identical on every rank (same seed, same generator)."""
        torch, a = self.torch, self.args
        gen = torch.Generator(device=self.device).manual_seed(seed)

        def one(h):
            return torch.randn(a.batch, h, n, a.head_dim, generator=gen, device=self.device, dtype=self.dtype)

        return one(a.heads), one(a.kv_heads), one(a.kv_heads), one(a.heads)

    def row(self, impl, n, causal, mode, ms_ranks=None, reps=None, mem=None, status="ok"):
        sys.path.insert(0, str(ROOT))
        import shared

        a = self.args
        ms = max(ms_ranks) if ms_ranks and status == "ok" else None
        world = 1 if impl == SINGLE_IMPL else self.world_size
        flops = shared.attention_flops(a.batch, a.heads, n, n, a.head_dim, causal, mode)
        r = {"impl": impl, "world_size": self.world_size, "gpus_used": world, "n": n, "n_q": n, "n_k": n,
             "n_local": n // world, "batch": a.batch, "heads": a.heads, "kv_heads": a.kv_heads,
             "head_dim": a.head_dim, "dtype": a.dtype, "causal": causal, "mode": mode, "ms": ms,
             "ms_per_rank": ms_ranks, "reps": reps,
             "tflops": flops / (ms * 1e-3) / 1e12 if ms else None,
             "tflops_per_gpu": flops / (ms * 1e-3) / 1e12 / world if ms else None,
             "extra_mem_gib": mem, "status": status}
        self.rows.append(r)
        self.save()  # a run cut short keeps every row it finished
        if self.rank == 0:
            shown = (f"{ms:9.2f} ms {r['tflops_per_gpu']:6.0f} TFLOP/s/GPU"
                     + (f" {mem:6.2f} GiB" if mem is not None else "")) if ms else status
            print(f"[{time.time() - self.started:5.0f} s]   {impl:<28} W={self.world_size} N={n:<7} "
                  f"causal={causal!s:<5} {mode:<7} {shown}", flush=True)
        return r


# ----------------------------------------------------------------------------- the three contenders
def ring_call(b, q, k, v, do, causal, mode):
    ring = _load_ring()
    local = [ring.shard_sequence(t, b.rank, b.world_size, zigzag=causal) for t in (q, k, v, do)]
    ql, kl, vl, dol = local
    if mode == "fwd":
        return lambda: ring.ring_attention(ql, kl, vl, causal=causal)
    leaves = [t.requires_grad_(True) for t in (ql, kl, vl)]

    def fwd_bwd():
        out = ring.ring_attention(*leaves, causal=causal)
        b.torch.autograd.grad(out, leaves, dol)
    return fwd_bwd


def single_call(b, q, k, v, do, causal, mode):
    import shared

    step03 = shared.load_step("03")
    if mode == "fwd":
        return lambda: step03.flash_attention(q, k, v, causal=causal)
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]

    def fwd_bwd():
        out = step03.flash_attention(*leaves, causal=causal)
        b.torch.autograd.grad(out, leaves, do)
    return fwd_bwd


@contextlib.contextmanager
def context_parallel_sdpa(b, buffers, causal, rotate, backend):
    """PyTorch's context parallelism around SDPA: shards `buffers` (dim 2) in place, yields the local sdpa.

    torch.distributed.tensor.experimental.context_parallel (a prototype API): on entry it
    shards the buffers (head-tail = zigzag when load balancing is on, which it needs for
    causal and refuses for non-causal) and patches F.scaled_dot_product_attention to run its
    ring over DTensors; on exit it restores both.
    """
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.experimental import context_parallel
    from torch.distributed.tensor.experimental import _attention as cp_attention
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if b.mesh is None:
        b.mesh = init_device_mesh("cpu" if b.cpu else "cuda", (b.world_size,), mesh_dim_names=("cp",))
    cp_attention.set_rotate_method(rotate)
    options = cp_attention._cp_options
    old_balance = options.enable_load_balance
    options.enable_load_balance = causal
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    only = contextlib.nullcontext() if backend == "default" else sdpa_kernel(backends[backend])
    try:
        with only, context_parallel(b.mesh, buffers=list(buffers),
                                                         buffer_seq_dims=[2] * len(buffers),
                                                         no_restore_buffers=set(buffers)):
            yield lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    finally:
        options.enable_load_balance = old_balance


def cp_calls(sdpa, q, k, v, do, mode, torch):
    if mode == "fwd":
        return lambda: sdpa(q, k, v)
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]

    def fwd_bwd():
        out = sdpa(*leaves)
        torch.autograd.grad(out, leaves, do)
    return fwd_bwd


# ----------------------------------------------------------------------------- runs
def short_error(exc):
    text = str(exc).strip().splitlines()
    return f"error: {type(exc).__name__}: {(text[0] if text else '')[:160]}"


def measure(b, impl, n, causal, mode, make_call, alone=False):
    """Time one contender at one point; a failure becomes the row's status (all ranks alike)."""
    torch = b.torch
    status, ms, reps, mem = "ok", None, None, None
    if not alone or b.rank == 0:
        try:
            call = make_call()
            ms, reps, mem = b.time_collective(call, alone=alone)
        except torch.cuda.OutOfMemoryError:
            status = "oom"
        except Exception as exc:  # noqa: BLE001  (recorded, the sweep goes on)
            status = "oom" if "out of memory" in str(exc).lower() else short_error(exc)
        finally:
            call = None
            if not b.cpu:
                torch.cuda.empty_cache()
    if alone:
        b.dist.barrier()
        status, ms, reps, mem = b.gather((status, ms, reps, mem))[0]
        return b.row(impl, n, causal, mode, [ms] if ms else None, reps, mem, status)
    everyone = b.gather((status, ms, reps, mem))
    statuses = [s for s, *_ in everyone if s != "ok"]
    status = statuses[0] if statuses else "ok"
    return b.row(impl, n, causal, mode, [m for _, m, _, _ in everyone] if status == "ok" else None,
                 reps, max((m for *_, m in everyone if m is not None), default=None), status)


def check(b):
    """The ring against one GPU (forward + gradients) and context parallelism (forward), small N."""
    ring = _load_ring()
    a, torch = b.args, b.torch
    n = 16 * b.world_size if b.cpu else 1024 * b.world_size
    heads, kv_heads = (2, 2) if b.cpu else (8, max(1, 8 * a.kv_heads // a.heads))
    errors, passed = ring.check(n, heads, kv_heads, 16 if b.cpu else a.head_dim, b.dtype)
    passed = b.gather(passed)
    b.say(f"check: ring vs one GPU at N={n} H={heads} Hkv={kv_heads}, out/dq/dk/dv within the "
          f"rule on every rank: {all(passed)}")
    agreement = {}
    for causal in (False, True) if a.cp else ():
        q, k, v, _ = b.make_inputs(n, seed=1)
        want = ring.ring_attention(*(ring.shard_sequence(t, b.rank, b.world_size, causal) for t in (q, k, v)),
                                   causal=causal)
        try:
            with context_parallel_sdpa(b, (q, k, v), causal, "allgather", "flash") as sdpa:
                got = sdpa(q, k, v)
            agreement[str(causal)] = b.agree_max((got.float() - want.float()).abs().max().item())
        except Exception as exc:  # noqa: BLE001
            agreement[str(causal)] = short_error(exc)
    b.say(f"check: |torch cp - ring| max over ranks (same shards): {agreement}")
    return all(passed), {"ring_vs_one_gpu": {f"{c}/{k}": e for (c, k), e in errors.items()},
                         "cp_vs_ring": agreement, "sdpa_default_backend": sdpa_default_backend(b)}


def sdpa_default_backend(b):
    """The backend SDPA picks by itself for the benchmark's local shapes (what 'default' CP runs)."""
    torch = b.torch
    try:
        from torch.nn.attention import SDPBackend

        n = 8 if b.cpu else 2048
        q, k, v, _ = b.make_inputs(n)
        return {str(c): SDPBackend(torch._fused_sdp_choice(q, k, v, is_causal=c)).name for c in (False, True)}
    except Exception as exc:  # noqa: BLE001  (a private helper: may move)
        return short_error(exc)


def run(b):
    a, torch = b.args, b.torch
    out = a.out or (ROOT / "scratch" / f"ring_smoke_w{b.world_size}.json" if b.cpu else
                    ROOT / "03_advanced_optimizations" / "results" / f"ring_w{b.world_size}.json")
    ok, check_info = check(b)
    b.save = lambda status="ok": save(b, out, check_info, status)  # after every row from here on
    if not ok:
        b.say("FAILED: the ring does not match one GPU; not benchmarking.")
        b.save("check failed")
        return 1
    causals = {"no": (False,), "yes": (True,), "both": (False, True)}[a.causal]
    lengths = [n for n in a.seq_lens if n % (2 * b.world_size) == 0]
    skipped = sorted(set(a.seq_lens) - set(lengths))
    if skipped:
        b.say(f"skipping lengths not divisible by 2 x W = {2 * b.world_size}: {skipped}")
    for n in lengths:
        if b.agree_max(time.time() - b.started) > a.budget_s:
            b.say(f"out of time (--budget-s {a.budget_s:.0f}): not starting N={n}")
            break
        for causal in causals:
            q, k, v, do = b.make_inputs(n)
            for mode in a.modes:
                measure(b, RING_IMPL, n, causal, mode, lambda: ring_call(b, q, k, v, do, causal, mode))
            for variant in a.cp:
                rotate, backend = variant.split(":")
                impl = f"{CP_PREFIX} {rotate} {backend}"
                cq, ck, cv, cdo = (t.clone() for t in (q, k, v, do))  # sharded in place by the API
                try:
                    with context_parallel_sdpa(b, (cq, ck, cv, cdo), causal, rotate, backend) as sdpa:
                        for mode in a.modes:
                            measure(b, impl, n, causal, mode,
                                    lambda: cp_calls(sdpa, cq, ck, cv, cdo, mode, torch))
                except Exception as exc:  # noqa: BLE001  (entering or leaving the API failed)
                    done = {r["mode"] for r in b.rows
                            if (r["impl"], r["n"], r["causal"]) == (impl, n, causal)}
                    for mode in a.modes:
                        if mode not in done:
                            b.row(impl, n, causal, mode, status=short_error(exc))
                del cq, ck, cv, cdo
            if n <= a.single_max:
                for mode in a.modes:
                    measure(b, SINGLE_IMPL, n, causal, mode,
                            lambda: single_call(b, q, k, v, do, causal, mode), alone=True)
            del q, k, v, do
            if not b.cpu:
                torch.cuda.empty_cache()
    summary = b.save()
    if b.rank == 0:
        print(f"wrote {out}")
        for s in summary:
            eff = "–" if s["scaling_efficiency"] is None else f"{100 * s['scaling_efficiency']:.0f}%"
            shipped = "–" if s["ring_vs_cp_default"] is None else f"{s['ring_vs_cp_default']:.2f}x"
            best = "–" if s["ring_vs_best_cp"] is None else f"{s['ring_vs_best_cp']:.2f}x ({s['best_cp']})"
            print(f"  W={s['world_size']} N={s['n']:<7} causal={s['causal']!s:<5} {s['mode']:<7} "
                  f"ring vs torch CP {shipped}, vs best CP variant {best}, scaling efficiency {eff}")
    return 0


def save(b, path, check_info, status="ok"):
    sys.path.insert(0, str(ROOT))
    import shared

    summary = summarize(b.rows, b.world_size)
    if b.rank == 0:
        a = b.args
        shared.save_results(path, b.rows, step="03_advanced_optimizations/ring_attention",
                            command=" ".join(["ring_attention_bench.py", *sys.argv[1:]]),
                            world_size=b.world_size, backend=b.dist.get_backend(), dtype=a.dtype,
                            batch=a.batch, heads=a.heads, kv_heads=a.kv_heads, head_dim=a.head_dim,
                            gpus=b.gpus, nccl=nccl_version(b),
                            env_flags={k: os.environ.get(k)
                                       for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST")},
                            check=check_info, status=status, summary=summary)
    return summary


def nccl_version(b):
    if b.cpu:
        return None
    try:
        version = b.torch.cuda.nccl.version()  # a tuple in recent torch, an int (21805) in older ones
        return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    except Exception:  # noqa: BLE001
        return None


# ----------------------------------------------------------------------------- entry points
def _worker(local_rank, world_size, init_file, argv):
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      RING_BENCH_INIT_FILE=init_file)
    code = main(argv)
    if code:
        sys.exit(code)


def main_distributed(args):
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off (see the post)
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    sys.path.insert(0, str(ROOT))
    import shared  # noqa: F401  (first: sets TRITON_INTERPRET=1 without a GPU)

    b = Bench(args)
    b.say(shared.describe_runtime())
    b.say(f"ring attention benchmark: W={b.world_size} ({b.dist.get_backend()}), B={args.batch} "
          f"H={args.heads} Hkv={args.kv_heads} D={args.head_dim} {args.dtype}, N={args.seq_lens}, "
          f"cp variants {args.cp}")
    try:
        return run(b)
    finally:
        b.dist.destroy_process_group()


def main(argv=None):
    args = parse_args(argv)
    if args.table is not None:
        default = sorted((ROOT / "03_advanced_optimizations" / "results").glob("ring_w*.json"))
        write_table(args.table or default)
        return 0
    if args.cpu_smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes and the interpreter, even on a GPU host
        args.seq_lens = [n for n in args.seq_lens if n <= 64] or [16]
        args.heads = args.kv_heads = 2
        args.head_dim, args.dtype = 16, "float16"
        args.cp = [] if args.cp is None else args.cp
        if "RANK" in os.environ:
            return main_distributed(args)
        import tempfile

        import torch.multiprocessing as mp

        init_file = Path(tempfile.mkdtemp()) / "init"
        argv = list(sys.argv[1:] if argv is None else argv)
        mp.start_processes(_worker, args=(2, str(init_file), argv), nprocs=2, start_method="fork")
        return 0
    if args.cp is None:
        args.cp = list(CP_DEFAULT)
    import torch
    import torch.distributed as dist

    if not torch.cuda.is_available() or not dist.is_nccl_available():
        print("ring_attention_bench: no CUDA GPU or no NCCL here, nothing to time "
              "(--cpu-smoke runs the logic on CPU processes)")
        return 0
    if "RANK" not in os.environ:  # plain python: a world of one GPU
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    return main_distributed(args)


if __name__ == "__main__":
    sys.exit(main())
