"""Step 02: vectorized attention - one query row per program, a whole tile of keys per load.

Since step 01: the grid is the same (one program per query row, per (batch,
head)), but the loop over keys now takes BLOCK_N keys per step instead of one.
Each step loads a BLOCK_N x D tile of K and one of V with a single `tl.load`
each, computes all BLOCK_N scores at once by broadcasting, and folds the block
into the same online softmax as step 01. Fewer, wider, coalesced loads; the
bytes each program requests are the same as in step 01.

You will learn:
  * 2-D blocks of pointers: `offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd`;
  * dot products and weighted sums by broadcasting and `tl.sum` over an axis, no `tl.dot`;
  * the online softmax over blocks of keys: one max, one rescale per block, not per key;
  * masks on two axes (past the last key, past the head dim), and causal block skipping;
  * choosing a block size from a register budget, and `num_warps` to hold the tile;
  * counting load instructions as well as bytes: same bytes as step 01, BLOCK_N times fewer loads.

Run it (from this folder or the repo root):
    python vectorized_attention.py                # check several shapes, then benchmark (GPU) and plot
    python vectorized_attention.py --quick        # fewer shapes, a short benchmark
    python vectorized_attention.py --figure-only  # only redraw load_timeline.png (no GPU needed)
Without a GPU it runs in Triton's CPU interpreter on small shapes and skips timing.
"""
import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- motivation
# Step 01 walked the keys one at a time: per key, one `tl.load` of D elements
# of K, one dot product, one softmax update, one `tl.load` of D elements of V.
# With D = 64 in fp16 that is 128 bytes per load, spread over a single warp:
# each thread moves about 4 bytes per load, and there are 2 * Nk such loads in
# a loop of Nk small steps per program. The GPU spends its time issuing tiny
# requests and waiting on their latency, not moving bytes.
#
# Step 02 keeps the grid and the maths, and widens the step. Per block of
# BLOCK_N keys:
#
#     m, l, acc = -inf, 0, zeros(D)
#     for start in 0, BLOCK_N, 2*BLOCK_N, ... (only blocks with visible keys):
#         K_blk = K[start : start+BLOCK_N, :]              # ONE load: BLOCK_N x D
#         s     = scale * (K_blk @ q_i)                     # BLOCK_N scores, by broadcasting
#         s[j]  = -inf where key j is past Nk (or j > i when causal)
#         m_new = max(m, max(s))
#         alpha = exp(m - m_new)                            # one rescale per block, not per key
#         p     = exp(s - m_new)                            # BLOCK_N probabilities
#         l     = l * alpha + sum(p)
#         V_blk = V[start : start+BLOCK_N, :]               # ONE load: BLOCK_N x D
#         acc   = acc * alpha + sum_j p[j] * V_blk[j, :]
#         m     = m_new
#     o_i = acc / l
#
# Why a loop over blocks with an online softmax, and not "one block holds all
# keys, plain softmax"? A single block must be sized to the longest sequence:
# BLOCK_N = next_power_of_2(Nk) keys x D lanes in registers, which for Nk = 4096,
# D = 128 is 512K elements per program: it spills or fails to compile, and
# every length needs its own compiled kernel. With a fixed BLOCK_N the tile
# stays in registers for any length, the same kernel serves Nk = 1 and
# Nk = 1,000,000, and the loop body is the step 01 recurrence applied to a
# block instead of a key. Short sequences simply run one iteration.
#
# What does NOT change: every program still reads all of K and V (up to its
# causal limit) for its single query row. The bytes requested are the same as
# in step 01; only the number and width of the loads changes. Sharing K/V
# tiles between query rows is step 03's job.

# How big a tile, and how many warps? Measured, not guessed (notes/gpu_log.md,
# results/sweep02.json): the first version used 4 warps and 8192-element tiles
# (BLOCK_N = 128 at D = 64) and was SLOWER than step 01 at D = 128. Both kernels
# are limited by how fast the L2 cache can feed every program its own copy of
# K and V, so what matters is keeping many loads in flight per SM. Both
# versions compile to about 96 registers per thread (no spills), so the 4-warp
# version fits 5 programs (20 warps) on an SM, while the one-warp version fits
# 21 (65536 registers / (96 x 32)), each with its own tile loads outstanding. The sweep over BLOCK_N in 16..256 and
# 1..8 warps at N = 2048 put one warp and 2048-element tiles on top
# (BLOCK_N = 32 at D = 64, 16 at D = 128): 64 elements per thread per tile,
# loaded as 16-byte vectors.
TILE_ELEMENTS = 2048
NUM_WARPS = 1  # one warp per program, as in step 01: the reductions stay inside the warp (shuffles only)
MIN_BLOCK_N = 8  # D = 256: 2048 / 256
MAX_BLOCK_N = 128  # tiny head dims stop here: bigger blocks waste masked keys on short and causal rows


def block_n_for(head_dim):
    """Keys per block for a head dim: the largest power of two with BLOCK_N * BLOCK_D <= 2048.

    BLOCK_D is the head dim rounded up to a power of two; BLOCK_N is kept
    between 8 and 128. D = 1..16 -> 128, 17..32 -> 64, 33..64 -> 32, 65..128 -> 16, 129..256 -> 8.
    """
    block_d = triton.next_power_of_2(head_dim)
    return max(MIN_BLOCK_N, min(MAX_BLOCK_N, TILE_ELEMENTS // block_d))


# ----------------------------------------------------------------------------- kernel
@triton.jit
def vectorized_attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,  # (B, H, Nq, D) queries, (B, H, Nk, D) keys and values, output like q
    stride_qb, stride_qh, stride_qn, stride_qd,  # element strides of q (any layout works)
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    n_heads,  # H: to split program_id(1) into (batch, head)
    n_k,  # Nk: number of keys
    head_dim,  # D: the real head dim; BLOCK_D is D rounded up to a power of two
    scale,  # softmax scale, usually 1/sqrt(D)
    n_q,  # Nq: number of query rows, read only with PAIR_ROWS (last: the others keep their places)
    CAUSAL: tl.constexpr,  # mask keys j > i (compiled as a separate kernel)
    BLOCK_N: tl.constexpr,  # keys per block: rows of the K and V tiles (see block_n_for)
    BLOCK_D: tl.constexpr,  # lanes per row: tl.arange needs a power of two
    LOOP_STAGES: tl.constexpr = 0,  # 0: plain loop (the default); k > 0: tl.range(..., num_stages=k)
    PAIR_ROWS: tl.constexpr = False,  # False: one row per program (the default); True: rows i and Nq-1-i
):
    row = tl.program_id(0)  # which query row i
    bh = tl.program_id(1)  # which (batch, head) pair
    batch = bh // n_heads
    head = bh % n_heads

    attention_row(row, batch, head, q_ptr, k_ptr, v_ptr, o_ptr,
                  stride_qb, stride_qh, stride_qn, stride_qd,
                  stride_kb, stride_kh, stride_kn, stride_kd,
                  stride_vb, stride_vh, stride_vn, stride_vd,
                  stride_ob, stride_oh, stride_on, stride_od,
                  n_k, head_dim, scale, CAUSAL, BLOCK_N, BLOCK_D, LOOP_STAGES)
    # An experiment, off by default (benchmarks/step02_paired_rows.py): with the causal mask, row i
    # makes about i / BLOCK_N trips through the key loop, so programs finish at very different
    # times. With PAIR_ROWS the grid has ceil(Nq / 2) programs on this axis, and program i also
    # computes row Nq - 1 - i: every program makes about Nq / BLOCK_N trips in all. The middle row
    # of an odd Nq is its own partner and is computed once. Without the mask it only halves the
    # grid, two full rows per program: a control for "two rows per program" without the balance.
    if PAIR_ROWS:
        partner = n_q - 1 - row
        if partner > row:
            attention_row(partner, batch, head, q_ptr, k_ptr, v_ptr, o_ptr,
                          stride_qb, stride_qh, stride_qn, stride_qd,
                          stride_kb, stride_kh, stride_kn, stride_kd,
                          stride_vb, stride_vh, stride_vn, stride_vd,
                          stride_ob, stride_oh, stride_on, stride_od,
                          n_k, head_dim, scale, CAUSAL, BLOCK_N, BLOCK_D, LOOP_STAGES)


@triton.jit
def attention_row(
    row, batch, head,  # the query row i this call computes, of this batch and head
    q_ptr, k_ptr, v_ptr, o_ptr,  # as in the kernel
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    n_k, head_dim, scale,  # as in the kernel
    CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, LOOP_STAGES: tl.constexpr,
):
    """One query row: o_i = softmax(scale * K q_i) V over the keys row i sees (inlined into the kernel)."""
    offs_d = tl.arange(0, BLOCK_D)  # [0, 1, ..., BLOCK_D-1]: the head-dim axis
    offs_n = tl.arange(0, BLOCK_N)  # [0, 1, ..., BLOCK_N-1]: the key axis, within a block
    d_mask = offs_d < head_dim  # lanes past D read nothing and write nothing

    q_row_ptr = q_ptr + batch * stride_qb + head * stride_qh + row * stride_qn
    k_base = k_ptr + batch * stride_kb + head * stride_kh
    v_base = v_ptr + batch * stride_vb + head * stride_vh
    # A (BLOCK_N, BLOCK_D) grid of pointers to the first block: row j, lane d.
    # Moving to the next block only adds start * stride_kn.
    k_tile_ptrs = k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_tile_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd

    # read D elements of q, once per row; fold the scale in now, not per key
    q = tl.load(q_row_ptr + offs_d * stride_qd, mask=d_mask, other=0.0).to(tl.float32) * scale

    m = tl.full((), float("-inf"), tl.float32)  # running max of the scores
    l = tl.full((), 0.0, tl.float32)  # running sum of exp(score - m)
    acc = tl.zeros((BLOCK_D,), tl.float32)  # running sum of exp(score - m) * v_j

    # Causal: key j is visible to row i iff j <= i (top-left alignment), so the
    # visible keys are 0 .. end-1. Looping only up to `end` skips every block
    # that lies wholly past the diagonal; the `keys < end` mask below then
    # trims the one block the diagonal cuts through (and, causal or not, the
    # tail past Nk). Every block the loop visits holds at least one visible key,
    # so its max score is finite and the softmax update never sees -inf - -inf.
    end = n_k
    if CAUSAL:
        end = tl.minimum(row + 1, n_k)
    # The launch-level num_stages pipelines only loads that feed a tl.dot, so by
    # default this loop is not pipelined: each block's loads are issued, waited
    # for and used in turn. LOOP_STAGES = k > 0 asks Triton to pipeline this loop
    # k deep (tl.range's num_stages applies to plain loads too); the experiment is
    # benchmarks/step02_range_stages.py. With LOOP_STAGES = 0 the loop compiles
    # exactly as a plain `range` would.
    for start in tl.range(0, end, BLOCK_N, num_stages=LOOP_STAGES if LOOP_STAGES > 0 else None):
        keys = start + offs_n  # the key indices of this block
        n_mask = keys < end  # visible keys: False past Nk and past the diagonal
        tile_mask = n_mask[:, None] & d_mask[None, :]
        # read BLOCK_N x D elements of K, and of V, in ONE load each (masked lanes
        # read nothing). Both are issued before either is used, so the two
        # memory round trips overlap instead of following each other.
        k = tl.load(k_tile_ptrs + start * stride_kn, mask=tile_mask, other=0.0)
        v = tl.load(v_tile_ptrs + start * stride_vn, mask=tile_mask, other=0.0)
        # BLOCK_N dot products at once: q broadcast over the rows, summed over D
        s = tl.sum(q[None, :] * k.to(tl.float32), axis=1)
        s = tl.where(n_mask, s, float("-inf"))  # hidden keys get probability exp(-inf) = 0
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp(m - m_new)  # exp(-inf) = 0 on the first block
        p = tl.exp(s - m_new)  # BLOCK_N probabilities, unnormalised
        l = l * alpha + tl.sum(p, axis=0)
        # weighted sum of BLOCK_N value rows: p broadcast over D, summed over the keys
        acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
        m = m_new

    out = acc / l  # l >= 1: the maximum's own term is exp(0)
    o_row_ptr = o_ptr + batch * stride_ob + head * stride_oh + row * stride_on
    tl.store(o_row_ptr + offs_d * stride_od, out.to(o_ptr.dtype.element_ty), mask=d_mask)  # write D elements


# ----------------------------------------------------------------------------- launcher
def vectorized_attention(q, k, v, causal=False, scale=None, out=None, pair_rows=False):
    """Attention of q (B, H, Nq, D) over k, v (B, H, Nk, D); returns (B, H, Nq, D) like q.

    Same semantics as ``F.scaled_dot_product_attention(q, k, v, is_causal=causal,
    scale=scale)``: ``causal`` is a bool or "top_left" (top-left alignment when
    Nq != Nk). fp16, bf16 and fp32; any lengths (empty inputs give SDPA's empty
    or zero result); head dims 1 to 256; any strides. Math in fp32. Forward only:
    inputs that require grad are refused (step 03 is differentiable).

    ``pair_rows=True`` is an experiment (benchmarks/step02_paired_rows.py): each
    program computes rows i and Nq - 1 - i, so that with the causal mask every
    program makes about the same number of key-block trips. Same result, bit for bit.
    """
    causal = shared.check_causal(causal) == "top_left"  # the only alignment this kernel has
    scale = shared.check_attention_inputs(q, k, v, scale, max_head_dim=256, differentiable=False)
    if shared.is_empty_attention(q, k):
        return shared.empty_attention_result(q, v, out)  # nothing to launch
    out = shared.check_out(out, q, v)
    launch(q, k, v, out, scale, causal, pair_rows=pair_rows)
    return out


def launch(q, k, v, out, scale, causal, loop_stages=0, pair_rows=False):
    """Launch the kernel on checked, non-empty tensors (``causal`` a bool); returns what Triton
    returns (on a GPU, the compiled kernel).

    Two experiments, both off by default: ``loop_stages`` > 0 pipelines the key loop that many
    stages deep; ``pair_rows`` gives each program rows i and Nq - 1 - i (half the programs).
    """
    batch, heads, n_q, head_dim = q.shape
    shared.check_grid_rows(batch, heads)
    rows = (n_q + 1) // 2 if pair_rows else n_q  # paired: ceil(Nq / 2) programs, the middle row alone
    grid = (rows, batch * heads)  # one program per query row (or pair), per (batch, head), as in step 01
    return vectorized_attention_kernel[grid](
        q, k, v, out,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        heads, k.shape[2], head_dim, scale, n_q,
        CAUSAL=bool(causal),
        BLOCK_N=block_n_for(head_dim),
        BLOCK_D=triton.next_power_of_2(head_dim),
        LOOP_STAGES=loop_stages,
        PAIR_ROWS=bool(pair_rows),
        num_warps=NUM_WARPS,  # 32 threads share a tile of <= 2048 elements (see TILE_ELEMENTS)
    )


def kernel_resources(head_dim, causal, dtype=torch.float16):
    """Registers per thread and register spills of the compiled kernel (GPU only).

    The check on the register budget behind ``block_n_for``: spills mean the
    tile did not fit, and the kernel pays local-memory traffic for it.
    """
    q, k, v = shared.make_qkv(1, 1, 2, head_dim, n_k=300, dtype=dtype)
    out = torch.empty_like(q)
    compiled = launch(q, k, v, out, 1.0 / math.sqrt(head_dim), causal)
    torch.cuda.synchronize()
    return {"head_dim": head_dim, "causal": causal, "block_n": block_n_for(head_dim), "num_warps": NUM_WARPS,
            "n_regs": getattr(compiled, "n_regs", None), "n_spills": getattr(compiled, "n_spills", None)}


# ----------------------------------------------------------------------------- memory traffic
def traffic_per_row(n_k, head_dim, element_size, block_n=None, causal_row=None):
    """Bytes and load instructions one program issues, counted from the kernel above.

    Per key block: one K tile load and one V tile load (2 loads, BLOCK_N x D
    elements each, masked lanes excluded); once per program: the q row (1 load)
    and the output row (1 store). Step 01 issues 2 loads per key instead. The
    bytes are the same as step 01's: every query row still re-reads all of the
    K and V it can see.
    """
    block_n = block_n_for(head_dim) if block_n is None else block_n
    keys = n_k if causal_row is None else min(causal_row + 1, n_k)
    blocks = math.ceil(keys / block_n)
    return {"bytes": (2 * keys + 2) * head_dim * element_size, "loads": 2 * blocks + 1, "stores": 1,
            "blocks": blocks, "bytes_per_tile_load": block_n * head_dim * element_size}


def requested_bytes(traffic_fn, batch, heads, n_q, n_k, head_dim, element_size, causal, **kwargs):
    """Total bytes all programs of one call request, summing ``traffic_fn`` over the query rows."""
    if not causal:
        per_row = traffic_fn(n_k, head_dim, element_size, **kwargs)["bytes"]
        return batch * heads * n_q * per_row
    total = sum(traffic_fn(n_k, head_dim, element_size, causal_row=i, **kwargs)["bytes"] for i in range(n_q))
    return batch * heads * total


# ----------------------------------------------------------------------------- correctness
def block_edge_shapes(head_dim=64):
    """Key lengths at and around one block and two, where a masking bug would show."""
    bn = block_n_for(head_dim)
    return [
        (1, 1, 3, bn - 1, head_dim, False),
        (1, 2, 2, bn, head_dim, False),
        (1, 1, 5, bn + 1, head_dim, False),
        (1, 1, 4, 2 * bn + 1, head_dim, False),
        (1, 1, bn + 1, bn + 1, head_dim, True),  # causal: rows that end inside block 0 and block 1
    ]


def check(quick):
    shapes = shared.CHECK_SHAPES_QUICK if quick or shared.INTERPRETER else shared.CHECK_SHAPES_FULL
    shapes = list(shapes) + block_edge_shapes(64) + ([] if quick else block_edge_shapes(256))
    dtypes = (torch.float16, torch.bfloat16) if quick else (torch.float16, torch.bfloat16, torch.float32)
    print("Correctness against the float64 reference:")
    return shared.run_checks(vectorized_attention, shapes, dtypes, label="02 vectorized")


# ----------------------------------------------------------------------------- benchmark
SLOW_CALL_S = 0.25  # a call slower than this is timed with a few plain calls, not do_bench's >= 8
MAX_CALL_S = 5.0  # a call predicted slower than this is left out (step 01 at long lengths)


def _empty_row(name, shape, causal, dtype, status):
    return {"impl": name, **shared.benchmark_utils.shape_dict(shape), "causal": causal,
            "dtype": str(dtype).replace("torch.", ""), "mode": "fwd", "ms": None, "tflops": None,
            "gbps": None, "peak_mem_gib": None, "status": status}


def _measure_few(name, fn, shape, causal, dtype, calls=3):
    """One result row like ``shared.measure``'s, timed by CUDA events over a few calls.

    For kernels that take seconds: do_bench would call them at least 8 times.
    """
    row = _empty_row(name, shape, causal, dtype, "ok")
    try:
        q, k, v = shared.make_qkv(row["batch"], row["heads"], row["n_q"], row["head_dim"], n_k=row["n_k"],
                                  dtype=dtype)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn(q, k, v, causal=causal)  # warm-up: compiles
        torch.cuda.synchronize()
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        times = []
        for _ in range(calls):
            begin, finish = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn(q, k, v, causal=causal)
            finish.record()
            torch.cuda.synchronize()
            times.append(begin.elapsed_time(finish))
    except torch.cuda.OutOfMemoryError:
        return _empty_row(name, shape, causal, dtype, "oom")
    finally:
        q = k = v = None
        torch.cuda.empty_cache()
    row["ms"] = sorted(times)[len(times) // 2]
    flops = shared.attention_flops(row["batch"], row["heads"], row["n_q"], row["n_k"], row["head_dim"],
                                   causal)
    nbytes = shared.attention_min_bytes(row["batch"], row["heads"], row["kv_heads"], row["n_q"], row["n_k"],
                                        row["head_dim"], dtype.itemsize)
    row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
    row["gbps"] = nbytes / (row["ms"] * 1e-3) / 1e9
    row["timing"] = f"median of {calls} calls (slow kernel)"
    return row


def benchmark(quick, out_dir):
    from shared.plotting import plot_all, plot_speedup

    step01 = shared.load_step("01")  # 01_basic_attention/basic_attention.py, loaded by path
    lengths = (256, 1024, 4096) if quick else (256, 512, 1024, 2048, 4096, 8192)
    head_dims = (64, 128)
    dtype = torch.float16
    fns = {"02 vectorized": vectorized_attention, "01 basic": step01.basic_attention,
           **shared.standard_baselines()}
    traffic = {"02 vectorized": traffic_per_row, "01 basic": step01.traffic_per_row}
    ceilings = shared.measure_ceilings(dtype)
    print(f"ceilings: {ceilings}")
    resources = [kernel_resources(d, c, dtype) for d in head_dims for c in (False, True)]
    for r in resources:
        print(f"compiled 02 kernel: {r}")
    rows, started = [], time.time()
    progress = shared.Progress(weights=[shared.attention_flops(4, 32, n, n, d, c) for c in (False, True)
                                        for d in head_dims for n in lengths], label="shapes")
    for causal in (False, True):
        for d in head_dims:
            last = {}  # impl -> (N, seconds per call) at the last length it was timed
            for n in lengths:
                shape = (4, 32, n, d)
                for name, fn in fns.items():
                    # time grows as N^2: predict this call from the last length, skip what would crawl
                    predicted = last[name][1] * (n / last[name][0]) ** 2 if name in last else 0.0
                    if predicted > MAX_CALL_S:
                        status = f"skipped: predicted {predicted:.0f} s per call (N^2 from N={last[name][0]})"
                        row = _empty_row(name, shape, causal, dtype, status)
                    elif predicted > SLOW_CALL_S:
                        row = _measure_few(name, fn, shape, causal, dtype)
                    else:
                        timed = shared.measure(fn, shape, causal, dtype, "fwd", warmup=10, rep=50)
                        row = {"impl": name, **timed}
                    if row.get("ms"):
                        last[name] = (n, row["ms"] / 1e3)
                        if name in traffic:  # the bytes this kernel really asks for, re-reads included
                            total = requested_bytes(traffic[name], 4, 32, n, n, d, dtype.itemsize, causal)
                            row["requested_bytes"] = total
                            row["requested_gbps"] = total / (row["ms"] * 1e-3) / 1e9
                    rows.append(row)
                    line = shared.benchmark_utils.format_row(row)
                    if row.get("requested_gbps"):
                        line += f" requested {row['requested_gbps']:8.0f} GB/s"
                    print(line, flush=True)
                print(progress.advance(), flush=True)
    print(f"benchmark took {time.time() - started:.0f} s")
    path = shared.save_results(out_dir / "results.json", rows, step="02_vectorized_attention",
                               command="python vectorized_attention.py" + (" --quick" if quick else ""),
                               ceilings=ceilings, kernel_resources=resources, num_warps=NUM_WARPS,
                               block_n={d: block_n_for(d) for d in head_dims})
    print(f"wrote {path}")
    for d in head_dims:
        for causal in (False, True):
            tag = f"d{d}_{'causal' if causal else 'full'}"
            title = f"step 02, fp16, B=4 H=32 D={d}{' causal' if causal else ''}"
            sel = shared.select(rows, head_dim=d, causal=causal)
            plot_all(sel, out_dir, tag, title)
            plot_speedup(sel, out_dir / f"speedup_vs_01_{tag}.png", baseline="01 basic", title=title)
            plot_requested_bandwidth(sel, out_dir / f"bandwidth_{tag}.png", ceilings["copy_gbps"], title)
    return rows


def plot_requested_bandwidth(rows, path, copy_gbps, title=""):
    """Requested GB/s (bytes the kernel asks for / time) of steps 01 and 02, against the copy ceiling.

    Above the line means L2 serves most re-reads: the request rate beats DRAM.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for impl in ("01 basic", "02 vectorized"):
        pts = sorted((r["n_q"], r["requested_gbps"]) for r in rows
                     if r["impl"] == impl and r.get("requested_gbps"))
        if pts:
            ax.plot(*zip(*pts), marker="o", label=impl, color=shared.COLORS.get(impl))
    ax.axhline(copy_gbps, color="k", linestyle="--", label=f"device copy {copy_gbps:.0f} GB/s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("requested GB/s (K and V re-reads counted)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_figure():
    """Redraw load_timeline.png: when one program of steps 01 and 02 loads, waits and computes."""
    spec = importlib.util.spec_from_file_location("load_timeline", HERE / "load_timeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.draw_load_timeline(HERE / "load_timeline.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and sizes")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where results.json and the plots go (default: results/ beside this script "
                             "for a full GPU run, scratch/02_vectorized_attention/ for --quick)")
    parser.add_argument("--figure-only", action="store_true",
                        help="only redraw load_timeline.png beside this script (no GPU needed)")
    args = parser.parse_args(argv)
    if args.figure_only:
        print(f"wrote {draw_figure()}")
        return 0
    print(shared.describe_runtime())
    if not check(args.quick):
        print("FAILED: vectorized_attention does not match the reference; not benchmarking.")
        return 1
    step01 = shared.load_step("01")  # 01_basic_attention/basic_attention.py, loaded by path
    for d in (64, 128):
        for n in (1024, 4096):
            t01, t02 = step01.traffic_per_row(n, d, 2), traffic_per_row(n, d, 2)
            print(f"traffic per row, fp16 D={d} N={n}: 01 {t01['bytes']} B in {t01['loads']} loads, "
                  f"02 {t02['bytes']} B in {t02['loads']} loads (BLOCK_N={block_n_for(d)})")
    if shared.INTERPRETER:
        print("Skipping the benchmark: there is no GPU to time on.")
        return 0
    benchmark(args.quick, shared.output_dir(args.out_dir, HERE / "results", official=not args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
