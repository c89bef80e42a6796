"""Timing, FLOP/byte models, result files and README tables.

    from shared import quick_benchmark, naive_torch
    rows = quick_benchmark({"mine": my_attention, "naive torch": naive_torch},
                           shapes=[(4, 32, 1024, 64)], causal=(False, True))

Each row is a plain dict (implementation, shape, dtype, mode, median time,
TFLOP/s, GB/s, peak memory, status). Timing uses ``triton.testing.do_bench``
medians with warm-up excluded; without a GPU nothing is timed.
"""
from __future__ import annotations

import datetime
import json
import math
import numbers
import platform
import re
from pathlib import Path

import torch

from .progress import Progress
from .runtime import DEVICE, INTERPRETER
from .test_utils import make_qkv

# Backward does 2.5x the forward's matrix work: dV, dP, dS->dQ and dS->dK are
# four products against the forward's two, plus recomputing Q K^T (5 vs 2).
BACKWARD_FLOP_FACTOR = 2.5
MODES = ("fwd", "bwd", "fwd+bwd")

# (batch, heads, seq_len, head_dim): large enough to fill an H100's 132 SMs.
DEFAULT_SHAPES = [(4, 32, n, d) for d in (64, 128) for n in (1024, 2048, 4096, 8192)]
SHAPE_KEYS = ("batch", "heads", "n_q", "head_dim")  # required in a shape dict; n_k, kv_heads optional


def shape_dict(shape) -> dict:
    """(B, H, N, D) or a dict with batch/heads/n_q/head_dim (+ n_k, kv_heads) -> a full dict.

    Raises ValueError for anything else: sizes must be positive ints, heads a
    multiple of kv_heads.
    """
    if isinstance(shape, dict):
        unknown = set(shape) - {*SHAPE_KEYS, "n_k", "kv_heads"}
        missing = set(SHAPE_KEYS) - set(shape)
        if unknown or missing:
            raise ValueError(f"shape {shape!r}: needs keys {SHAPE_KEYS} (n_k, kv_heads optional); "
                             f"missing {sorted(missing)}, unknown {sorted(unknown)}")
        s = dict(shape)
    elif isinstance(shape, (tuple, list)) and len(shape) == 4:
        s = dict(zip(SHAPE_KEYS, shape))
    else:
        raise ValueError(f"shape {shape!r} must be a (batch, heads, seq_len, head_dim) tuple or a dict "
                         f"with keys {SHAPE_KEYS}")
    s.setdefault("n_k", s["n_q"])
    s.setdefault("kv_heads", s["heads"])
    for key, size in s.items():
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"shape {shape!r}: {key} must be a positive int, got {size!r}")
    if s["heads"] % s["kv_heads"]:
        raise ValueError(f"shape {shape!r}: heads must be a multiple of kv_heads")
    return s


def visible_pairs(n_q: int, n_k: int, causal: bool) -> int:
    """How many (query, key) pairs attention computes: all, or j <= i when causal."""
    if not causal:
        return n_q * n_k
    full_rows = max(0, n_q - n_k)  # queries past the last key see every key
    partial = min(n_q, n_k)  # query i < Nk sees i + 1 keys
    return partial * (partial + 1) // 2 + full_rows * n_k


def attention_flops(batch, heads, n_q, n_k, head_dim, causal=False, mode="fwd") -> float:
    """Matrix FLOPs: 2 products (Q K^T, P V) of 2*D flops per visible pair, per head.

    That is 4*B*H*Nq*Nk*D, about halved when causal. Backward counts 2.5x.
    """
    fwd = 4.0 * batch * heads * visible_pairs(n_q, n_k, causal) * head_dim
    return {"fwd": fwd, "bwd": BACKWARD_FLOP_FACTOR * fwd, "fwd+bwd": (1 + BACKWARD_FLOP_FACTOR) * fwd}[mode]


def attention_min_bytes(batch, heads, kv_heads, n_q, n_k, head_dim, element_size, mode="fwd") -> float:
    """The fewest bytes attention must move through device memory.

    Forward reads Q, K, V once and writes O once. Backward reads Q, K, V, O, dO
    and writes dQ, dK, dV. Anything an implementation moves beyond this is
    re-reading, which the steps of the series work to remove.
    """
    q_elems = batch * heads * n_q * head_dim
    kv_elems = batch * kv_heads * n_k * head_dim
    fwd = 2 * q_elems + 2 * kv_elems
    bwd = 3 * q_elems + 2 * kv_elems + q_elems + 2 * kv_elems
    return element_size * {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def environment() -> dict:
    """GPU, library versions and date: the stamp every results file carries."""
    import triton

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "interpreter": INTERPRETER,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, sms=props.multi_processor_count, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    else:
        env["gpu"] = "none (CPU, Triton interpreter)"
    return env


def _timed_callable(fn, q, k, v, causal, mode):
    """What do_bench should call for this mode, with the forward done outside for "bwd"."""
    kwargs = {"causal": True} if causal else {}
    if mode == "fwd":
        return lambda: fn(q, k, v, **kwargs)
    for t in (q, k, v):
        t.requires_grad_(True)
    if mode == "fwd+bwd":
        def fwd_bwd():
            out = fn(q, k, v, **kwargs)
            torch.autograd.grad(out, (q, k, v), dout)

        out = fn(q, k, v, **kwargs)
        dout = torch.randn_like(out)
        return fwd_bwd
    out = fn(q, k, v, **kwargs)
    dout = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)


def measure(fn, shape, causal=False, dtype=torch.float16, mode="fwd", warmup=25, rep=100, timer=None) -> dict:
    """Time one implementation on one shape; returns one result row (never raises for OOM).

    ``timer(call) -> ms`` defaults to the ``do_bench`` median; without a GPU
    there is no default and the row says "skipped".
    """
    s = shape_dict(shape)
    row = {**s, "causal": causal, "dtype": str(dtype).replace("torch.", ""), "mode": mode,
           "ms": None, "tflops": None, "gbps": None, "peak_mem_gib": None, "status": "ok"}
    if timer is None:
        if INTERPRETER:
            row["status"] = "skipped: interpreter"
            return row
        import triton.testing

        def timer(call):
            return triton.testing.do_bench(call, warmup=warmup, rep=rep, return_mode="median")
    on_gpu = DEVICE == "cuda"
    call = None
    try:
        q, k, v = make_qkv(s["batch"], s["heads"], s["n_q"], s["head_dim"], n_k=s["n_k"],
                           kv_heads=s["kv_heads"], dtype=dtype)
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        call = _timed_callable(fn, q, k, v, causal, mode)
        call()  # also compiles/autotunes before anything is timed
        if on_gpu:
            torch.cuda.synchronize()
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["ms"] = timer(call)
    except torch.cuda.OutOfMemoryError:
        row["status"] = "oom"
    except (ValueError, TypeError, NotImplementedError, RuntimeError) as exc:
        if "out of memory" in str(exc).lower():
            row["status"] = "oom"
        else:
            row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    finally:
        q = k = v = call = None
        if on_gpu:
            torch.cuda.empty_cache()
    if row["ms"]:
        flops = attention_flops(s["batch"], s["heads"], s["n_q"], s["n_k"], s["head_dim"], causal, mode)
        nbytes = attention_min_bytes(s["batch"], s["heads"], s["kv_heads"], s["n_q"], s["n_k"],
                                     s["head_dim"], dtype.itemsize, mode)
        row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
        row["gbps"] = nbytes / (row["ms"] * 1e-3) / 1e9
    return row


def format_row(row: dict) -> str:
    shape = f"B={row['batch']} H={row['heads']} Nq={row['n_q']} Nk={row['n_k']} D={row['head_dim']}"
    head = f"{row['impl']:<16} {row['mode']:<7} {shape:<36} causal={row['causal']!s:<5} {row['dtype']:<8}"
    if row["status"] != "ok":
        return f"{head} {row['status']}"
    memory = "" if row["peak_mem_gib"] is None else f" {row['peak_mem_gib']:6.2f} GiB"
    return f"{head} {row['ms']:9.3f} ms {row['tflops']:7.1f} TFLOP/s {row['gbps']:8.1f} GB/s{memory}"


def quick_benchmark(fns: dict, shapes=None, causal=False, dtype=torch.float16, modes=("fwd",),
                    warmup=25, rep=100, verbose=True, timer=None) -> list[dict]:
    """Time every function on every shape; print each row as it finishes; return the rows.

    ``causal``, ``dtype`` and ``modes`` take one value or a sequence to sweep.
    A function that runs out of memory, or refuses a shape with ValueError,
    gets a row saying so and the sweep moves on.
    """
    shapes = DEFAULT_SHAPES if shapes is None else shapes
    causals = causal if isinstance(causal, (list, tuple)) else (causal,)
    dtypes = dtype if isinstance(dtype, (list, tuple)) else (dtype,)
    modes = (modes,) if isinstance(modes, str) else modes
    _check_benchmark_args(fns, shapes, causals, dtypes, modes)
    timed = not (INTERPRETER and timer is None)
    if verbose and not timed:
        print("quick_benchmark: no GPU, so nothing is timed (interpreter timings mean nothing).")
    # A progress line after each shape: done/total, time so far, time left weighed by FLOPs.
    groups = [(dt, c, shape_dict(s), m) for dt in dtypes for c in causals for s in shapes for m in modes]
    weights = [attention_flops(s["batch"], s["heads"], s["n_q"], s["n_k"], s["head_dim"], c, m)
               for _, c, s, m in groups]
    progress = Progress(weights=weights, label="shapes")
    rows = []
    for dt, is_causal, shape, mode in groups:
        for name, fn in fns.items():
            row = {"impl": name, **measure(fn, shape, is_causal, dt, mode, warmup, rep, timer)}
            rows.append(row)
            if verbose:
                print(format_row(row), flush=True)
        if verbose and timed and len(groups) > 1:
            print(progress.advance(), flush=True)
    return rows


def _check_benchmark_args(fns, shapes, causals, dtypes, modes):
    """Refuse a malformed sweep before anything runs, rather than a row of errors per call."""
    if not isinstance(fns, dict) or not fns:
        raise TypeError(f"fns must be a non-empty dict of name -> function, got {type(fns).__name__}")
    for name, fn in fns.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"fns must map str names to callables; {name!r} -> {type(fn).__name__}")
    if isinstance(shapes, dict) or not isinstance(shapes, (list, tuple)) or not shapes:
        raise ValueError(f"shapes must be a non-empty list of shapes, got {shapes!r}")
    if all(isinstance(size, numbers.Integral) for size in shapes):
        raise ValueError(f"shapes={shapes!r} is one shape; pass a list: shapes=[{tuple(shapes)}]")
    for shape in shapes:
        shape_dict(shape)
    for is_causal in causals:
        if not isinstance(is_causal, bool):
            raise TypeError(f"causal must be a bool or a list of bools, got {is_causal!r}")
    for dt in dtypes:
        if dt not in (torch.float16, torch.bfloat16, torch.float32):
            raise TypeError(f"dtype must be torch.float16, bfloat16 or float32 (or a list), got {dt!r}")
    if not isinstance(modes, (list, tuple)):
        raise TypeError(f"modes must be a mode name or a list of them, got {type(modes).__name__}")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")


def measure_ceilings(dtype=torch.float16, size=8192, copy_bytes=2**31) -> dict:
    """The machine's two ceilings, measured: dense matmul TFLOP/s and copy GB/s (read + write)."""
    import triton.testing

    a = torch.randn(size, size, device=DEVICE, dtype=dtype)
    b = torch.randn(size, size, device=DEVICE, dtype=dtype)
    ms = triton.testing.do_bench(lambda: a @ b, return_mode="median")
    src = torch.randn(copy_bytes // 4, device=DEVICE)
    dst = torch.empty_like(src)
    copy_ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    return {"matmul_dtype": str(dtype).replace("torch.", ""), "matmul_tflops": 2 * size**3 / ms / 1e9,
            "copy_gbps": 2 * copy_bytes / copy_ms / 1e6}


# ---------------------------------------------------------------- result files

def save_results(path, rows, **meta) -> Path:
    """Write rows to JSON with the environment stamp (GPU, versions) and any metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"env": environment(), "meta": meta, "rows": rows}, indent=1) + "\n")
    return path


def load_results(path) -> dict:
    """The dict ``save_results`` wrote: ``{"env": ..., "meta": ..., "rows": [...]}``."""
    return json.loads(Path(path).read_text())


def select(rows, **where) -> list[dict]:
    """Rows whose fields equal every given value, e.g. ``select(rows, head_dim=64, causal=True)``."""
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


# ---------------------------------------------------------------- README tables

def _fmt(value, fmt):
    return "–" if value is None else fmt.format(value)


def pivot_table(rows, impls, index="n_q", value="tflops", fmt="{:.1f}", ratio_of=None, ratio_to=()):
    """A markdown table: one line per ``index`` value (ascending), one column per impl.

    With ``ratio_of``, adds a column "ratio_of / other" for each name in ``ratio_to``
    (time ratio: how many times faster ``ratio_of`` is). Missing or failed
    measurements show as "–", out-of-memory as "OOM".
    """
    by_key = {(r[index], r["impl"]): r for r in rows}
    keys = sorted({r[index] for r in rows})
    header = [index.replace("n_q", "N")] + list(impls) + [f"{ratio_of} vs {o}" for o in ratio_to]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in keys:
        cells = [str(key)]
        for impl in impls:
            r = by_key.get((key, impl))
            cells.append("OOM" if r and r["status"] == "oom" else _fmt(r and r.get(value), fmt))
        for other in ratio_to:
            a, b = by_key.get((key, ratio_of)), by_key.get((key, other))
            ok = a and b and a.get("ms") and b.get("ms")
            cells.append(f"{b['ms'] / a['ms']:.2f}x" if ok else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def env_line(env: dict) -> str:
    """One line naming where and with what the numbers were measured."""
    parts = [env.get("gpu", "?"), f"torch {env.get('torch')}", f"triton {env.get('triton')}"]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}")
    return "Measured on " + ", ".join(parts) + f" ({env.get('date', '?')})."


def write_between_markers(path, name: str, text: str) -> None:
    """Replace what stands between ``<!-- name:start -->`` and ``<!-- name:end -->`` in a file."""
    path = Path(path)
    source = path.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(source):
        raise ValueError(f"{path} has no {start} ... {end} markers")
    path.write_text(pattern.sub(lambda _: f"{start}\n{text.strip()}\n{end}", source))


def geometric_mean(values) -> float:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")
