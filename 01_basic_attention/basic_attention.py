"""Step 01: basic attention - one query row per program, one key at a time.

The first kernel of the series, written for clarity rather than speed. Each
Triton program owns one query row of one (batch, head) and walks the keys in
order: load one key, take one dot product, update a running softmax, add one
weighted value row. Nothing is shared between programs, nothing is reused.

You will learn:
  * how a Triton program, its grid and `tl.program_id` map onto attention's shapes;
  * pointers, strides and masks: reading row `j` of a (B, H, N, D) tensor with a padded block;
  * the online softmax: one pass over the keys with a running max and sum;
  * where the bytes go: every program reads all of K and V, one row at a time.

Run it (from this folder or the repo root):
    python basic_attention.py           # check several shapes, then benchmark (GPU) and plot
    python basic_attention.py --quick   # fewer shapes, a short benchmark
Without a GPU it runs in Triton's CPU interpreter on small shapes and skips timing.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- motivation
# Attention for one query row q_i (D numbers) against keys K and values V (Nk x D each):
#
#     s_j = scale * (q_i . k_j)          for j = 0 .. Nk-1      (j <= i when causal)
#     p_j = exp(s_j - max_j s_j) / sum_j exp(s_j - max_j s_j)
#     o_i = sum_j p_j * v_j
#
# A textbook implementation stores all scores s_j before the softmax. We do not:
# the online softmax keeps a running maximum m, a running sum l and an
# unnormalised output acc, and rescales them whenever a larger score arrives.
# One pass, O(D) state per row, no (N x N) matrix anywhere. Pseudo-code:
#
#     m, l, acc = -inf, 0, zeros(D)
#     for j in keys visible to row i:
#         s     = scale * dot(q_i, k_j)
#         m_new = max(m, s)
#         alpha = exp(m - m_new)          # how much the old state shrinks
#         p     = exp(s - m_new)
#         l     = l * alpha + p
#         acc   = acc * alpha + p * v_j
#         m     = m_new
#     o_i = acc / l
#
# Why online rather than two passes (max first, then sum)? Two passes would
# read every key twice; the online form reads each key and value once, and it
# is the same recurrence that FlashAttention uses in step 03, so learning it
# here pays twice.


# ----------------------------------------------------------------------------- kernel
@triton.jit
def basic_attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,  # (B, H, Nq, D) queries, (B, H, Nk, D) keys and values, output like q
    stride_qb, stride_qh, stride_qn, stride_qd,  # element strides of q (any layout works)
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    n_heads,  # H: to split program_id(1) into (batch, head)
    n_k,  # Nk: number of keys
    head_dim,  # D: the real head dim; BLOCK_D is D rounded up to a power of two
    scale,  # softmax scale, usually 1/sqrt(D)
    CAUSAL: tl.constexpr,  # mask keys j > i (compiled as a separate kernel)
    BLOCK_D: tl.constexpr,  # lanes per row: tl.arange needs a power of two
):
    row = tl.program_id(0)  # which query row i
    bh = tl.program_id(1)  # which (batch, head) pair
    batch = bh // n_heads
    head = bh % n_heads

    d = tl.arange(0, BLOCK_D)  # [0, 1, ..., BLOCK_D-1]
    d_mask = d < head_dim  # lanes past D read nothing and write nothing

    # Base pointers of this (batch, head): strides make any memory layout work.
    q_row_ptr = q_ptr + batch * stride_qb + head * stride_qh + row * stride_qn
    k_base = k_ptr + batch * stride_kb + head * stride_kh
    v_base = v_ptr + batch * stride_vb + head * stride_vh

    # read D elements of q, once per program; fold the scale in now, not per key
    q = tl.load(q_row_ptr + d * stride_qd, mask=d_mask, other=0.0).to(tl.float32) * scale

    m = tl.full((), float("-inf"), tl.float32)  # running max of the scores
    l = tl.full((), 0.0, tl.float32)  # running sum of exp(score - m)
    acc = tl.zeros((BLOCK_D,), tl.float32)  # running sum of exp(score - m) * v_j

    end = n_k
    if CAUSAL:
        end = tl.minimum(row + 1, n_k)  # top-left alignment: key j is visible iff j <= i
    for j in range(0, end):
        k = tl.load(k_base + j * stride_kn + d * stride_kd, mask=d_mask, other=0.0)  # read D elements
        s = tl.sum(q * k.to(tl.float32), axis=0)  # one dot product -> one score
        m_new = tl.maximum(m, s)
        alpha = tl.exp(m - m_new)  # exp(-inf) = 0 on the first key
        p = tl.exp(s - m_new)
        l = l * alpha + p
        v = tl.load(v_base + j * stride_vn + d * stride_vd, mask=d_mask, other=0.0)  # read D elements
        acc = acc * alpha + p * v.to(tl.float32)
        m = m_new

    out = acc / l  # l >= 1: the maximum's own term is exp(0)
    o_row_ptr = o_ptr + batch * stride_ob + head * stride_oh + row * stride_on
    tl.store(o_row_ptr + d * stride_od, out.to(o_ptr.dtype.element_ty), mask=d_mask)  # write D elements


# ----------------------------------------------------------------------------- launcher
def basic_attention(q, k, v, causal=False, scale=None, out=None):
    """Attention of q (B, H, Nq, D) over k, v (B, H, Nk, D); returns (B, H, Nq, D) like q.

    Same semantics as ``F.scaled_dot_product_attention(q, k, v, is_causal=causal,
    scale=scale)``: ``causal`` is a bool or "top_left" (top-left alignment when
    Nq != Nk). fp16, bf16 and fp32; any lengths (empty inputs give SDPA's empty
    or zero result); head dims 1 to 256; any strides. Math in fp32. Forward only:
    inputs that require grad are refused (step 03 is differentiable).
    """
    causal = shared.check_causal(causal) == "top_left"  # the only alignment this kernel has
    scale = shared.check_attention_inputs(q, k, v, scale, max_head_dim=256, differentiable=False)
    if shared.is_empty_attention(q, k):
        return shared.empty_attention_result(q, v, out)  # nothing to launch
    out = shared.check_out(out, q, v)
    batch, heads, n_q, head_dim = q.shape
    shared.check_grid_rows(batch, heads)
    grid = (n_q, batch * heads)  # one program per query row, per (batch, head)
    basic_attention_kernel[grid](
        q, k, v, out,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        heads, k.shape[2], head_dim, scale,
        CAUSAL=causal,
        BLOCK_D=triton.next_power_of_2(head_dim),
        num_warps=1,  # one row of at most 256 lanes: 32 threads hold it, more would idle
    )
    return out


# ----------------------------------------------------------------------------- memory traffic
def traffic_per_row(n_k, head_dim, element_size, causal_row=None):
    """Bytes and load instructions one program issues, counted from the kernel above.

    Per visible key: one K row and one V row of D elements (2 loads); once per
    program: the q row (1 load) and the output row (1 store). Nothing is reused
    between programs, so every query row re-reads all of K and V.
    """
    keys = n_k if causal_row is None else min(causal_row + 1, n_k)
    return {"bytes": (2 * keys + 2) * head_dim * element_size, "loads": 2 * keys + 1, "stores": 1}


# ----------------------------------------------------------------------------- correctness
def check(quick):
    shapes = shared.CHECK_SHAPES_QUICK if quick or shared.INTERPRETER else shared.CHECK_SHAPES_FULL
    dtypes = (torch.float16, torch.bfloat16) if quick else (torch.float16, torch.bfloat16, torch.float32)
    print("Correctness against the float64 reference:")
    passed = shared.run_checks(basic_attention, shapes, dtypes, label="01 basic")
    passed &= shared.run_checks(shared.naive_torch, shapes[:2], (torch.float16,), label="naive torch")
    return passed


# ----------------------------------------------------------------------------- benchmark
def benchmark(quick, out_dir):
    from shared.plotting import plot_all

    lengths = (256, 1024) if quick else (256, 512, 1024, 2048, 4096)
    head_dims = (64,) if quick else (64, 128)
    shapes = [(4, 32, n, d) for d in head_dims for n in lengths]
    fns = {"01 basic": basic_attention, **shared.standard_baselines()}
    rows = shared.quick_benchmark(fns, shapes=shapes, causal=(False, True), dtype=torch.float16,
                                  warmup=10, rep=50 if quick else 100)
    path = shared.save_results(out_dir / "results.json", rows, step="01_basic_attention",
                               command="python basic_attention.py" + (" --quick" if quick else ""))
    print(f"wrote {path}")
    for d in head_dims:
        for causal in (False, True):
            tag = f"d{d}_{'causal' if causal else 'full'}"
            sel = shared.select(rows, head_dim=d, causal=causal)
            plot_all(sel, out_dir, tag, f"step 01, fp16, B=4 H=32 D={d}{' causal' if causal else ''}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and sizes")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where results.json and the plots go (default: results/ beside this script "
                             "for a full GPU run, scratch/01_basic_attention/ for --quick)")
    args = parser.parse_args(argv)
    print(shared.describe_runtime())
    if not check(args.quick):
        print("FAILED: basic_attention does not match the reference; not benchmarking.")
        return 1
    if shared.INTERPRETER:
        print("Skipping the benchmark: there is no GPU to time on.")
        return 0
    benchmark(args.quick, shared.output_dir(args.out_dir, HERE / "results", official=not args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
