"""Step 03: FlashAttention - a query tile on chip, K/V tiles streaming past, tensor cores.

Since step 02: step 02 still gives each program one query row, loads a tile of
keys per step and does its dot products by broadcasting and `tl.sum`, so every
row re-reads all of K and V and the tensor cores stay idle. This step is a
FlashAttention-2 style forward pass: each program keeps a BLOCK_M x D tile of
queries in registers and streams BLOCK_N x D tiles of keys and values past it;
both products (Q K^T and P V) run on tensor cores through `tl.dot`; the
softmax is computed online in fp32; causal attention skips the
tiles it cannot see and masks only the tiles on the diagonal. It also grows up:
grouped-query attention, unequal and awkward lengths, any head dim from 16 to
256, any strides, and the log-sum-exp the backward pass needs. The backward
(FlashAttention-2 style: a dK/dV kernel and a dQ kernel that recompute P from
that log-sum-exp) makes `flash_attention` differentiable, registered as a
torch.library custom op so that torch.compile keeps a model in one graph.

You will learn:
  * tiling attention: why a query tile on chip turns the K/V traffic from O(N^2 D) row reads
    into O(N^2 D / BLOCK_M) tile reads, and how close that brings attention to the matmul rate;
  * the online softmax on tiles: running max and sum per row, rescaling the accumulator;
  * exp2 with scale * log2(e) folded into one multiply-add per score;
  * causal attention in two loops: full tiles without masks, diagonal tiles with masks;
  * GQA/MQA by index arithmetic (no copies of K/V), strides for any layout, masks for any length;
  * the log-sum-exp (lse) the backward pass recomputes the softmax from;
  * Hopper: autotuning block sizes, warps and pipeline stages; what tensor descriptors (TMA)
    and warp specialisation bought here (nothing, measured: see notes/gpu_log.md);
  * the backward: five tile products, recomputation instead of storing P, why dQ gets its
    own kernel (atomics measured 2.2-2.7x slower), GQA gradients summed in registers;
  * torch.library custom ops: one graph under torch.compile, forward and backward.

Run it (from this folder or the repo root):
    python flash_attention.py                    # check, then benchmark the whole grid (GPU)
    python flash_attention.py --quick            # fewer shapes, a short benchmark
    python flash_attention.py --quick-check --no-plots --head-dim 64 --dtype float16 --causal no
                                                 # one slice of the grid (about 3-4 minutes on an H100)
    python flash_attention.py --backward         # time backward and forward+backward instead
    python flash_attention.py --train            # train train_gpt.py's small GPT, SDPA vs ours
Without a GPU it runs in Triton's CPU interpreter on small shapes and skips timing.
"""
import argparse
import importlib.util
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

HERE = Path(__file__).resolve().parent
LOG2E = 1.4426950408889634  # log2(e): exp(x) = exp2(x * log2(e))
LN2 = 0.6931471805599453  # ln(2): turns a log2-domain logsumexp back into natural log

# ----------------------------------------------------------------------------- motivation
# Step 02 still reads all of K and V once per query row. FlashAttention
# (Dao et al. 2022, and FlashAttention-2, 2023) makes the query block big enough
# (64-128 rows) that every K/V tile fetched from memory feeds BLOCK_M x BLOCK_N x D
# multiply-adds on the tensor cores, and it never writes the N x N score matrix:
#
#     for each query tile Q_i (BLOCK_M rows, kept on chip):           # one program
#         m = -inf, l = 0, acc = 0                                     # per row, fp32
#         for each key tile j visible to Q_i:                          # K_j, V_j: BLOCK_N rows
#             S   = Q_i @ K_j^T                        # tensor cores, fp32 accumulate
#             S   = S * scale * log2(e)                # in the log2 domain: exp2 is one instruction
#             m'  = max(m, rowmax(S))
#             P   = exp2(S - m')                       # masked entries: exp2(-inf) = 0
#             a   = exp2(m - m')                       # how much the old state shrinks
#             l   = l * a + rowsum(P)
#             acc = acc * a + P @ V_j                  # P rounded to fp16/bf16: tensor cores again
#             m   = m'
#         O_i   = acc / l                              # write BLOCK_M x D once
#         lse_i = (m + log2(l)) * ln(2)                # natural-log logsumexp, for the backward
#
# Memory traffic per program: read Q_i once, read every visible K_j and V_j once,
# write O_i and lse_i once. Over the whole grid K and V are read Nq / BLOCK_M times
# (from L2 mostly: neighbouring programs share a head), instead of once per query row.
#
# Causal (top-left: query i sees key j iff j <= i). Key tiles that end before the
# query tile starts are fully visible: they run without any mask. Tiles that cross
# the diagonal need the mask; tiles after it are skipped entirely. So the key loop
# is split into two loops, the second only one or two tiles long. Without causal,
# the second loop is the last, partial key tile when Nk is not a multiple of BLOCK_N.


# ----------------------------------------------------------------------------- kernel
@triton.jit
def attention_tile_loop(
    acc, m_i, l_i,  # running state: (BLOCK_M, BLOCK_D) fp32 accumulator, row max (log2 units), row sum
    q,  # (BLOCK_M, BLOCK_D) query tile, stays in registers for the whole loop
    k_base, v_base,  # pointers to K[batch, kv_head, 0, 0] and V[batch, kv_head, 0, 0]
    stride_kn, stride_kd, stride_vn, stride_vd,  # element strides of K and V rows / columns
    start, end,  # key range [start, end) of this loop; start is a multiple of BLOCK_N
    offs_m,  # (BLOCK_M,) query row indices of this tile
    n_k,  # Nk, to mask keys past the end
    qk_scale,  # softmax scale * log2(e)
    MASKED: tl.constexpr,  # this loop needs masks (diagonal tiles / last partial tile)
    CAUSAL: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    NEG_SCALE: tl.constexpr,  # scale < 0: the row max of S is the row min of Q K^T
    UPCAST_DOT: tl.constexpr,  # interpreter + bf16 only: tl.dot in fp32 (see launcher)
    DOT_PRECISION: tl.constexpr,  # "ieee" (fp32 inputs) or "tf32"; ignored for fp16/bf16
):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM  # all true when HEAD_DIM is a power of two: compiled away
    for start_n in range(start, end, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + offs_n  # key indices of this tile
        # ---- S = Q K^T ------------------------------------------------ read BLOCK_N x D of K
        k_ptrs = k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd
        if MASKED:
            k = tl.load(k_ptrs, mask=(cols[:, None] < n_k) & d_mask[None, :], other=0.0)
        elif HEAD_DIM == BLOCK_D:
            k = tl.load(k_ptrs)  # full tile, no mask: the fast path of the main loop
        else:
            k = tl.load(k_ptrs, mask=d_mask[None, :], other=0.0)
        if UPCAST_DOT:
            k = k.to(tl.float32)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) fp32
        # ---- online softmax in the log2 domain -----------------------------------------------
        if MASKED:
            # Scale first, then mask with -inf, so that any sign of the scale works.
            s = qk * qk_scale
            visible = cols[None, :] < n_k
            if CAUSAL:
                visible = visible & (cols[None, :] <= offs_m[:, None])  # top-left: key j <= query i
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])  # masked: exp2(-inf) = 0
            alpha = tl.math.exp2(m_i - m_new)  # 0 on the first tile (m_i = -inf), else <= 1
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            m_i = m_new
        else:
            # No mask: the row max of the raw products times the scale (one multiply per
            # row, not per score), then one fused multiply-add per score: qk * qk_scale - m.
            if NEG_SCALE:
                m_new = tl.maximum(m_i, tl.min(qk, 1) * qk_scale)
            else:
                m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.math.exp2(qk * qk_scale - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)  # how much the old state shrinks
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            m_i = m_new
        # ---- acc += P V -------------------------------------------------- read BLOCK_N x D of V
        v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if MASKED:
            v = tl.load(v_ptrs, mask=(cols[:, None] < n_k) & d_mask[None, :], other=0.0)
        elif HEAD_DIM == BLOCK_D:
            v = tl.load(v_ptrs)
        else:
            v = tl.load(v_ptrs, mask=d_mask[None, :], other=0.0)
        if UPCAST_DOT:
            v = v.to(tl.float32)
        # P is rounded to the input type (fp16/bf16) so the second product runs on tensor cores.
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    return acc, m_i, l_i


@triton.jit
def flash_attention_forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,  # (B, H, Nq, D) queries, (B, Hkv, Nk, D) keys/values, output like q
    lse_ptr,  # (B, H, Nq) fp32, contiguous: natural-log logsumexp of each row's scaled scores
    stride_qb, stride_qh, stride_qn, stride_qd,  # element strides (any layout)
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    n_heads,  # H: splits program_id(1) into (batch, head)
    group,  # H // Hkv: query heads per K/V head (1 = MHA, H = MQA)
    n_q, n_k,  # Nq, Nk
    qk_scale,  # softmax scale * log2(e)
    N_Q_BUCKET, N_K_BUCKET,  # unused by the code: autotuning keys (lengths rounded to powers of two)
    HEAD_DIM: tl.constexpr,  # D
    BLOCK_D: tl.constexpr,  # D rounded up to a power of two (tl.arange and tl.dot need it)
    CAUSAL: tl.constexpr,
    NEG_SCALE: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,  # query rows per program
    BLOCK_N: tl.constexpr,  # keys per inner step
):
    # Causal programs get very different amounts of work (the last query tile sees all
    # keys, the first only one tile); launch the heavy ones first so the light ones fill
    # the gaps at the end of the grid instead of leaving a long tail.
    if CAUSAL:
        start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    else:
        start_m = tl.program_id(0)
    bh = tl.program_id(1)
    batch = bh // n_heads
    head = bh % n_heads
    kv_head = head // group  # GQA/MQA: consecutive query heads share one K/V head, no copies
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM

    # Base pointers of this (batch, head) in int64: a safety margin, since the launcher already
    # refuses tensors spanning 2^31 elements (shared.check_attention_inputs).
    q_base = q_ptr + batch.to(tl.int64) * stride_qb + head.to(tl.int64) * stride_qh
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    o_base = o_ptr + batch.to(tl.int64) * stride_ob + head.to(tl.int64) * stride_oh

    q_ptrs = q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=(offs_m[:, None] < n_q) & d_mask[None, :], other=0.0)  # read BLOCK_M x D once
    if UPCAST_DOT:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max, log2 units
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp2(s - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running sum of P V

    # Split the key range. [0, full_end): every tile fully visible, no masks.
    # [full_end, masked_end): tiles that need a mask (diagonal, or the last partial tile).
    # Keys at or past masked_end are never touched.
    full_tiles_end = (n_k // BLOCK_N) * BLOCK_N
    if CAUSAL:
        first_row = start_m * BLOCK_M
        full_end = tl.minimum((first_row // BLOCK_N) * BLOCK_N, full_tiles_end)
        masked_end = tl.minimum(first_row + BLOCK_M, n_k)
    else:
        full_end = full_tiles_end
        masked_end = n_k
    acc, m_i, l_i = attention_tile_loop(  # the bulk of the work: full tiles, no masks
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
        0, full_end, offs_m, n_k, qk_scale,
        False, CAUSAL, HEAD_DIM, BLOCK_D, BLOCK_N, NEG_SCALE, UPCAST_DOT, DOT_PRECISION)
    acc, m_i, l_i = attention_tile_loop(  # one or two tiles: the diagonal / the ragged end
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
        full_end, masked_end, offs_m, n_k, qk_scale,
        True, CAUSAL, HEAD_DIM, BLOCK_D, BLOCK_N, NEG_SCALE, UPCAST_DOT, DOT_PRECISION)
    # Every row sees at least key 0 (j = 0 <= i), so l_i >= 1 and m_i is finite.

    # ---- epilogue: normalise, write O and the logsumexp -------------- write BLOCK_M x D + BLOCK_M
    out = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453  # log2-domain -> natural log
    row_mask = offs_m < n_q
    tl.store(lse_ptr + bh.to(tl.int64) * n_q + offs_m, lse, mask=row_mask)
    o_ptrs = o_base + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=row_mask[:, None] & d_mask[None, :])


# ----------------------------------------------------------------------------- configurations
# A "config" is (BLOCK_M, BLOCK_N, num_warps, num_stages). Measured on an H100 (fp16,
# B=4 H=32, N 1024-16384; results/tune1.log): BLOCK_M=128 with 8 warps (two warpgroups of
# 64 rows, each on its own wgmma) and 3 pipeline stages wins almost everywhere; BLOCK_N=128
# helps D=128 at long lengths; 64x64 with 4 warps wins short D=128 problems (more programs).
# The autotuner picks among a few such candidates per (head dim, causal, dtype, length
# bucket), once per process, and only for problems big enough for it to matter.
#
# What did not help (measured on the H100 in the same runs, beside SDPA; notes/gpu_log.md,
# results/tune1.log and tune2.log; the code of each is in the git history):
#   * Tensor descriptors (TMA, device-side tl.make_tensor_descriptor, one (N, D) descriptor
#     per (batch, head)): correct, batch > 1 included, but slower than plain pointer loads
#     (which Triton already turns into cp.async pipelines) in all 12 shapes, best config
#     against best (config by config TMA won 26 of 96 pairs), e.g. D=128 N=16384: 456 vs 494.
#   * warp_specialize=True in tl.range: with Triton 3.6 on sm_90 it compiled to the very same
#     PTX as without (and failed to compile with 4 warps), so there was nothing to measure.
#   * "Lazy" rescaling (skip acc *= alpha unless a row max grew by > 2^8): needs a
#     block-wide max per tile; 4-23% lower throughput (best config against best, same run).
#   * Hand-pipelining S = Q K^T of tile j+1 before the softmax of tile j: Triton still waits
#     for each wgmma at once (wait_group 0), so nothing overlaps and the extra registers cost
#     5-27% of throughput.
#   * 256-row tiles with 16 warps: within noise of 128 x 64 at best, 10x slower with
#     BLOCK_N=128 (register spills).
AUTOTUNE_MIN_WORK = 2048 * 2048  # Nq * Nk below this: the default config, no autotuner
# (at N=1024 a kernel takes ~0.1 ms, about what the autotuner's Python dispatch costs)


def _bucket(n):
    """Lengths rounded up to a power of two (at least 16): the autotuner's key."""
    return max(16, triton.next_power_of_2(int(n)))


def default_config(head_dim, n_q, dtype, n_k=None):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) used when no tuning happens."""
    block_d = triton.next_power_of_2(head_dim)
    n_k = n_q if n_k is None else n_k
    if n_q <= 16:  # decoding: one query row (or a few) against many keys
        return (16, 64 if block_d <= 128 else 32, 4, 2)
    if n_q <= 64:
        return (64, 64 if block_d <= 128 else 32, 4, 2)
    if dtype == torch.float32:  # twice the bytes per tile: smaller tiles fit shared memory
        return (64, 32, 4, 2)
    if block_d <= 64:
        return (128, 64, 8, 3)
    if block_d <= 128:
        # short problems: 64-row tiles make twice the programs to fill 132 SMs (measured at
        # N=1024: 392-398 vs 384-386 TFLOP/s non-causal, 294-296 vs 262-264 causal)
        return (64, 64, 4, 3) if n_q * n_k < AUTOTUNE_MIN_WORK else (128, 64, 8, 3)
    return (64, 32, 4, 2)


def candidate_configs(head_dim, n_q, dtype):
    """The short list the autotuner tries for large problems (pruned by head dim)."""
    block_d = triton.next_power_of_2(head_dim)
    if dtype == torch.float32 or n_q <= 64:
        return [default_config(head_dim, n_q, dtype)]
    if block_d <= 64:
        return [(128, 64, 8, 3), (64, 64, 4, 3)]
    if block_d <= 128:
        return [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 8, 4)]
    return [(64, 32, 4, 2)]  # D > 128: the one config checked on the GPU (others untried)


def _as_triton_configs(configs):
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in configs]


def _prune(configs, named_args, **kwargs):
    """Keep the candidates meant for this head dim / length / dtype (the autotuner's prune hook)."""
    wanted = set(candidate_configs(kwargs["HEAD_DIM"], named_args["N_Q_BUCKET"],
                                   named_args["q_ptr"].dtype))
    kept = [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps,
                                   c.num_stages) in wanted]
    return kept or configs[:1]


_ALL_CANDIDATES = sorted({c for d in (16, 64, 128, 256) for n in (16, 64, 1024)
                          for dt in (torch.float16, torch.float32) for c in candidate_configs(d, n, dt)})
flash_attention_forward_kernel_tuned = triton.autotune(
    configs=_as_triton_configs(_ALL_CANDIDATES),
    key=["HEAD_DIM", "CAUSAL", "N_Q_BUCKET", "N_K_BUCKET"],  # + dtypes, always
    prune_configs_by={"early_config_prune": _prune},
)(flash_attention_forward_kernel)


# ----------------------------------------------------------------------------- launcher
def _forward(q, k, v, causal=False, scale=None, out=None, *, config=None):
    """Validate, pick a config, launch. Returns (o, lse).

    ``config``: (BLOCK_M, BLOCK_N, num_warps, num_stages) to bypass the autotuner (tuning
    scripts, tests, the backward pass's recomputation if it wants a fixed tiling).
    """
    scale = shared.check_attention_inputs(q, k, v, scale, allow_gqa=True, min_head_dim=16,
                                          max_head_dim=256)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    out = shared.check_out(out, q, v)
    batch, heads, n_q, head_dim = q.shape
    kv_heads, n_k = k.shape[1], k.shape[2]
    shared.check_grid_rows(batch, heads)  # (batch, head) pairs on the grid's second axis
    lse = torch.empty((batch, heads, n_q), dtype=torch.float32, device=q.device)

    # The interpreter computes bf16 tl.dot wrongly (a Triton bug, both 3.6 and 3.8): there,
    # and only there, bf16 tiles are widened to fp32 before each tl.dot. The GPU path never is.
    upcast = shared.INTERPRETER and q.dtype == torch.bfloat16
    # fp32 inputs: "ieee" gives true fp32 products (slow, exact to ~1e-6); tf32 would round
    # the inputs to 10 mantissa bits. fp32 here is for checking, so exactness wins.
    precision = "ieee" if (q.dtype == torch.float32 or upcast) else "tf32"

    args = (q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            heads, heads // kv_heads, n_q, n_k, scale * LOG2E, _bucket(n_q), _bucket(n_k))
    meta = dict(HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim), CAUSAL=causal,
                NEG_SCALE=scale < 0, UPCAST_DOT=upcast,
                DOT_PRECISION=precision)

    if config is None and (shared.INTERPRETER or n_q * n_k < AUTOTUNE_MIN_WORK):
        config = default_config(head_dim, n_q, q.dtype, n_k)
        if shared.INTERPRETER:  # small tiles: the interpreter's cost grows with tile size
            config = (16, 16, 4, 1)
    if config is None:
        grid = lambda meta_: (triton.cdiv(n_q, meta_["BLOCK_M"]), batch * heads)  # noqa: E731
        flash_attention_forward_kernel_tuned[grid](*args, **meta)
    else:
        block_m, block_n, warps, stages = config
        grid = (triton.cdiv(n_q, block_m), batch * heads)  # query tiles x (batch, head)
        flash_attention_forward_kernel[grid](*args, **meta, BLOCK_M=block_m, BLOCK_N=block_n,
                                             num_warps=warps, num_stages=stages)
    return out, lse


def flash_attention_forward(q, k, v, causal=False, scale=None):
    """Forward pass that also returns what a backward pass needs: ``(o, lse)``.

    ``o`` is like ``flash_attention``'s result; ``lse`` is float32, shape (B, H, Nq),
    contiguous: ``lse[b, h, i] = log(sum_j exp(scale * q_i . k_j))`` over the keys row i
    sees (natural log).
    """
    return _forward(q, k, v, causal=causal, scale=scale)


# ----------------------------------------------------------------------------- backward: motivation
# Forward, per (batch, head), with scale c and row-wise softmax:
#
#     S = c * Q K^T          P = softmax(S) = exp(S - lse)          O = P V
#
# Given dO = dLoss/dO (same shape as O), the chain rule gives
#
#     dV = P^T dO                                  (Nk x D)
#     dP = dO V^T                                  (Nq x Nk)
#     dS = P * (dP - delta),  delta_i = sum_j P_ij dP_ij = rowsum(dO * O)_i
#     dQ = c * dS K                                (Nq x D)
#     dK = c * dS^T Q                              (Nk x D)
#
# (the softmax Jacobian, diag(p) - p p^T, applied row by row, is the
# "P * (dP - delta)" line; delta collapses to rowsum(dO * O) because O = P V.)
#
# Five products per tile - Q K^T again, dO V^T, P^T dO, dS K, dS^T Q - against
# the forward's two: that is where the "backward = 2.5x forward" FLOP count
# comes from. Nothing of size Nq x Nk is ever stored: P is recomputed per tile
# as exp2(S * c * log2(e) - lse * log2(e)) from the forward's saved lse.
#
# Who owns which output? dK and dV for key block j sum over ALL query rows;
# dQ for query block i sums over ALL key blocks. One kernel can own only one
# of the two reductions. FlashAttention-2's answer, which we follow:
#
#     pre-pass   delta_i = rowsum(dO_i * O_i)                  (fp32, one read of O and dO)
#     kernel 1   for each key block j (one program):           -> dK_j, dV_j, written once
#                    for each query block i (and each query head sharing this K/V head):
#                        recompute P_ij^T; dV_j += P^T dO_i; dS^T = P^T * (V dO^T - delta)
#                        dK_j += dS^T Q_i
#     kernel 2   for each query block i (one program):         -> dQ_i, written once
#                    for each key block j: recompute P_ij, dS_ij; dQ_i += dS K_j
#
# The alternative fuses kernel 2 into kernel 1 with `tl.atomic_add` into an
# fp32 dQ: no recomputation of Q K^T and dO V^T (5 products per tile instead of
# 7), but Nk / BLOCK_N programs then add into every dQ row, an fp32 buffer must
# be zeroed, converted and copied, and the result is not deterministic (the
# order of float additions changes run to run). The separate dQ kernel costs two
# extra products per tile yet writes every output once, reproducibly. Measured
# on an H100 (fp16, B=4 H=32 N=4096): the atomic variant (`dq_atomic=True`)
# takes 2.2-2.7x as long - 10.2 ms against 3.8-4.1 ms at D=64, 21.8 against 8.2-9.7
# ms at D=128 - its fp32 read-modify-writes of dQ on every tile cost far more
# than the two products they save. So: a separate dQ kernel.
#
# Causal (top-left: key j visible to query i iff j <= i): a key block sees only
# queries at or after its first key, so kernel 1 starts its query loop at that
# block and masks only the tiles on the diagonal; kernel 2 stops at the last key
# its queries can see and masks only the diagonal tiles. Fully masked tiles are
# never loaded.


# ----------------------------------------------------------------------------- backward: kernels
@triton.jit
def _bwd_preprocess_kernel(
    o_ptr, do_ptr,  # (B, H, Nq, D) forward output and its incoming gradient
    delta_ptr,  # (B, H, Nq) float32 out: rowsum(dO * O)
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    n_heads, n_q, head_dim,  # H, Nq, D
    BLOCK_M: tl.constexpr,  # query rows per program
    BLOCK_D: tl.constexpr,  # D rounded up to a power of two
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    batch = bh // n_heads
    head = bh % n_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < n_q) & (offs_d[None, :] < head_dim)
    o = tl.load(o_ptr + batch * stride_ob + head * stride_oh
                + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od, mask=mask, other=0.0)
    do = tl.load(do_ptr + batch * stride_dob + head * stride_doh
                 + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)  # read 2 x BLOCK_M x D, write BLOCK_M
    tl.store(delta_ptr + bh * n_q + offs_m, delta, mask=offs_m < n_q)


@triton.jit
def _bwd_dkdv_tile(
    dk, dv,  # (BLOCK_N, BLOCK_D) fp32 accumulators of this key block
    k, v,  # (BLOCK_N, BLOCK_D) this key block, loaded once by the caller
    q_base, do_base, lse_base, delta_base,  # pointers to row 0 of this query head
    dq_acc_base,  # fp32 dQ accumulator of this query head (DQ_ATOMIC only), contiguous
    stride_qn, stride_qd, stride_don, stride_dod,
    offs_n, offs_d,  # key indices of this block, head-dim lanes
    start_m, n_q, head_dim,
    scale, qk_scale,  # c, and c * log2(e): S in base-2 units
    MASK_CAUSAL: tl.constexpr,  # a diagonal tile: mask key j > query i
    DQ_ATOMIC: tl.constexpr,  # also add this tile's dQ share into dq_acc (fused variant)
    BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr,  # operand type of tl.dot (fp32 in the interpreter for bf16)
    IEEE: tl.constexpr,  # fp32 inputs: exact fp32 products instead of TF32
    BLOCK_M: tl.constexpr,
):
    # One (BLOCK_M queries) x (BLOCK_N keys) tile, computed transposed (keys on
    # rows) so that the results land directly in dK and dV's layout.
    offs_m = start_m + tl.arange(0, BLOCK_M)
    m_in = offs_m < n_q
    d_in = offs_d < head_dim
    # Rows past Nq load as zeros (q, dO, lse, delta): their P^T entries become
    # exp2(0) = 1 but multiply dO = 0 and (dP - delta) = 0, so they add nothing.
    q = tl.load(q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                mask=m_in[:, None] & d_in[None, :], other=0.0)  # read BLOCK_M x D
    do = tl.load(do_base + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod,
                 mask=m_in[:, None] & d_in[None, :], other=0.0)  # read BLOCK_M x D
    lse2 = tl.load(lse_base + offs_m, mask=m_in, other=0.0) * 1.4426950408889634  # base-2 lse
    delta = tl.load(delta_base + offs_m, mask=m_in, other=0.0)
    q = q.to(DOT_DTYPE)
    do = do.to(DOT_DTYPE)
    if IEEE:
        s_t = tl.dot(k, tl.trans(q), input_precision="ieee")  # (BLOCK_N, BLOCK_M) = K Q^T
    else:
        s_t = tl.dot(k, tl.trans(q))
    p_t = tl.math.exp2(s_t * qk_scale - lse2[None, :])  # P^T, recomputed from the saved lse
    if MASK_CAUSAL:
        p_t = tl.where(offs_n[:, None] <= offs_m[None, :], p_t, 0.0)
    if IEEE:
        dv += tl.dot(p_t.to(DOT_DTYPE), do, input_precision="ieee")  # dV += P^T dO
        dp_t = tl.dot(v, tl.trans(do), input_precision="ieee")  # dP^T = V dO^T
    else:
        dv += tl.dot(p_t.to(DOT_DTYPE), do)
        dp_t = tl.dot(v, tl.trans(do))
    ds_t = p_t * (dp_t - delta[None, :])  # dS^T (scale applied once, at the end)
    if IEEE:
        dk += tl.dot(ds_t.to(DOT_DTYPE), q, input_precision="ieee")  # dK += dS^T Q
    else:
        dk += tl.dot(ds_t.to(DOT_DTYPE), q)
    if DQ_ATOMIC:  # the fused variant: dQ_i += c * dS K, added by every key block in turn
        if IEEE:
            dq = tl.dot(tl.trans(ds_t.to(DOT_DTYPE)), k, input_precision="ieee")
        else:
            dq = tl.dot(tl.trans(ds_t.to(DOT_DTYPE)), k)
        tl.atomic_add(dq_acc_base + offs_m[:, None] * BLOCK_D + offs_d[None, :], dq * scale,
                      mask=m_in[:, None] & d_in[None, :])  # read + write BLOCK_M x D fp32
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr,  # q, dO (B, H, Nq, D); k, v (B, Hkv, Nk, D)
    lse_ptr, delta_ptr,  # (B, H, Nq) float32, contiguous: forward's lse, pre-pass's delta
    dk_ptr, dv_ptr,  # (B, Hkv, Nk, D) out, like k
    dq_acc_ptr,  # (B, H, Nq, BLOCK_D) fp32, zeroed: dQ accumulator when DQ_ATOMIC, else unused
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    n_heads, kv_heads, n_q, n_k, head_dim,  # H, Hkv, Nq, Nk, D
    scale, qk_scale,  # softmax scale c, and c * log2(e)
    CAUSAL: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    IEEE: tl.constexpr,
    DQ_ATOMIC: tl.constexpr,  # fuse dQ in here with atomics (the variant we measured against)
    BLOCK_M: tl.constexpr,  # query rows per step of the inner loop
    BLOCK_N: tl.constexpr,  # keys owned by one program (a multiple of BLOCK_M)
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)  # (batch, K/V head)
    batch = bh // kv_heads
    kv_head = bh % kv_heads
    group = n_heads // kv_heads  # query heads per K/V head (GQA); 1 for plain attention

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (offs_n[:, None] < n_k) & (offs_d[None, :] < head_dim)
    k = tl.load(k_ptr + batch * stride_kb + kv_head * stride_kh
                + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + batch * stride_vb + kv_head * stride_vh
                + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
    k = k.to(DOT_DTYPE)  # read BLOCK_N x D of K and of V, once for the whole program
    v = v.to(DOT_DTYPE)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)

    # Causal: queries before this block's first key see none of it (skip them);
    # queries in [start_n, start_n + BLOCK_N) see part of it (masked tiles);
    # later queries see all of it (unmasked tiles). BLOCK_N % BLOCK_M == 0
    # keeps those boundaries on tile boundaries.
    if CAUSAL:
        diag_end = tl.minimum(start_n + BLOCK_N, n_q)
        full_start = start_n + BLOCK_N
    else:
        diag_end = 0
        full_start = 0

    for g in range(0, group):  # GQA: sum over the query heads sharing this K/V head
        head = kv_head * group + g
        q_base = q_ptr + batch * stride_qb + head * stride_qh
        do_base = do_ptr + batch * stride_dob + head * stride_doh
        lse_base = lse_ptr + (batch * n_heads + head) * n_q
        delta_base = delta_ptr + (batch * n_heads + head) * n_q
        dq_acc_base = dq_acc_ptr + (batch * n_heads + head) * n_q * BLOCK_D
        if CAUSAL:
            for start_m in range(start_n, diag_end, BLOCK_M):
                dk, dv = _bwd_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_acc_base,
                                        stride_qn, stride_qd, stride_don, stride_dod,
                                        offs_n, offs_d, start_m, n_q, head_dim, scale, qk_scale,
                                        True, DQ_ATOMIC, BLOCK_D, DOT_DTYPE, IEEE, BLOCK_M)
        for start_m in range(full_start, n_q, BLOCK_M):
            dk, dv = _bwd_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_acc_base,
                                    stride_qn, stride_qd, stride_don, stride_dod,
                                    offs_n, offs_d, start_m, n_q, head_dim, scale, qk_scale,
                                    False, DQ_ATOMIC, BLOCK_D, DOT_DTYPE, IEEE, BLOCK_M)

    dk *= scale  # dK = c * dS^T Q: the scale once per element, not once per tile
    tl.store(dk_ptr + batch * stride_dkb + kv_head * stride_dkh
             + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             dk.to(dk_ptr.dtype.element_ty), mask=kv_mask)  # write BLOCK_N x D
    tl.store(dv_ptr + batch * stride_dvb + kv_head * stride_dvh
             + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)  # write BLOCK_N x D


@triton.jit
def _bwd_dq_tile(
    dq,  # (BLOCK_M, BLOCK_D) fp32 accumulator of this query block
    q, do, lse2, delta,  # this query block: q and dO (BLOCK_M, BLOCK_D), base-2 lse and delta (BLOCK_M,)
    k_base, v_base,  # pointers to row 0 of the K/V head
    stride_kn, stride_kd, stride_vn, stride_vd,
    offs_m, offs_d,
    start_n, n_k, head_dim,
    qk_scale,
    MASK: tl.constexpr,  # a diagonal or last tile: mask keys j > i (causal) and j >= Nk
    CAUSAL: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    n_in = offs_n < n_k
    d_in = offs_d < head_dim
    k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=n_in[:, None] & d_in[None, :], other=0.0).to(DOT_DTYPE)  # read BLOCK_N x D
    v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=n_in[:, None] & d_in[None, :], other=0.0).to(DOT_DTYPE)  # read BLOCK_N x D
    if IEEE:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")  # (BLOCK_M, BLOCK_N) = Q K^T
    else:
        s = tl.dot(q, tl.trans(k))
    p = tl.math.exp2(s * qk_scale - lse2[:, None])
    if MASK:
        visible = n_in[None, :]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None])
        p = tl.where(visible, p, 0.0)
    if IEEE:
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")  # dP = dO V^T
    else:
        dp = tl.dot(do, tl.trans(v))
    ds = p * (dp - delta[:, None])
    if IEEE:
        dq += tl.dot(ds.to(DOT_DTYPE), k, input_precision="ieee")  # dQ += dS K
    else:
        dq += tl.dot(ds.to(DOT_DTYPE), k)
    return dq


@triton.jit
def _bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr,  # q, dO (B, H, Nq, D); k, v (B, Hkv, Nk, D)
    lse_ptr, delta_ptr,  # (B, H, Nq) float32, contiguous
    dq_ptr,  # (B, H, Nq, D) out, like q
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    n_heads, kv_heads, n_q, n_k, head_dim,
    scale, qk_scale,
    CAUSAL: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr,  # query rows owned by one program (a multiple of BLOCK_N)
    BLOCK_N: tl.constexpr,  # keys per step of the inner loop
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)  # (batch, query head)
    batch = bh // n_heads
    head = bh % n_heads
    kv_head = head // (n_heads // kv_heads)

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_mask = (offs_m[:, None] < n_q) & (offs_d[None, :] < head_dim)
    q = tl.load(q_ptr + batch * stride_qb + head * stride_qh
                + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=q_mask, other=0.0)
    do = tl.load(do_ptr + batch * stride_dob + head * stride_doh
                 + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=q_mask, other=0.0)
    q = q.to(DOT_DTYPE)  # read BLOCK_M x D of Q and of dO, once
    do = do.to(DOT_DTYPE)
    lse2 = tl.load(lse_ptr + bh * n_q + offs_m, mask=offs_m < n_q, other=0.0) * 1.4426950408889634
    delta = tl.load(delta_ptr + bh * n_q + offs_m, mask=offs_m < n_q, other=0.0)
    k_base = k_ptr + batch * stride_kb + kv_head * stride_kh
    v_base = v_ptr + batch * stride_vb + kv_head * stride_vh
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    # Unmasked tiles: every key < full_end is visible to every query of the
    # block and inside Nk. Masked tiles: the causal diagonal and the ragged
    # last key block. Keys past the block's last query are never touched.
    full_end = (n_k // BLOCK_N) * BLOCK_N
    end = n_k
    if CAUSAL:
        full_end = tl.minimum(full_end, start_m)
        end = tl.minimum(start_m + BLOCK_M, n_k)
    for start_n in range(0, full_end, BLOCK_N):
        dq = _bwd_dq_tile(dq, q, do, lse2, delta, k_base, v_base,
                          stride_kn, stride_kd, stride_vn, stride_vd, offs_m, offs_d,
                          start_n, n_k, head_dim, qk_scale,
                          False, CAUSAL, DOT_DTYPE, IEEE, BLOCK_N)
    for start_n in range(full_end, end, BLOCK_N):
        dq = _bwd_dq_tile(dq, q, do, lse2, delta, k_base, v_base,
                          stride_kn, stride_kd, stride_vn, stride_vd, offs_m, offs_d,
                          start_n, n_k, head_dim, qk_scale,
                          True, CAUSAL, DOT_DTYPE, IEEE, BLOCK_N)

    dq *= scale
    tl.store(dq_ptr + batch * stride_dqb + head * stride_dqh
             + offs_m[:, None] * stride_dqn + offs_d[None, :] * stride_dqd,
             dq.to(dq_ptr.dtype.element_ty), mask=q_mask)  # write BLOCK_M x D


# ----------------------------------------------------------------------------- launcher
# Tile sizes and launch settings, by padded head dim:
#   (BLOCK_M1, BLOCK_N1, warps1, stages1,   the dK/dV kernel: a program owns BLOCK_N1 keys
#    BLOCK_M2, BLOCK_N2, warps2, stages2)   the dQ kernel: a program owns BLOCK_M2 queries
# A dK/dV program keeps K, V, dK and dV (4 x BLOCK_N1 x D) on chip, so a larger
# D needs smaller blocks or fewer stages. Chosen by the sweep logged in
# notes/gpu_log.md (`python tune_backward.py`); the
# interpreter gets small blocks, which it runs faster.
BWD_CONFIGS = {
    # From the H100 sweep (fp16, B=4 H=32 N=4096, causal and not; results/backward_sweep.json).
    # D=64: 128 keys per dK/dV program in 4 warps (8 warps: -25%; BLOCK_M1=64 with 4 warps
    # spills: 4x slower); a 4th stage +1%. dQ: 128 queries in 8 warps, 3 stages.
    # D=128: 64 x 64 tiles in 4 warps for both kernels (twice the registers per key row).
    16: (32, 128, 4, 4, 128, 32, 8, 3),
    32: (32, 128, 4, 4, 128, 32, 8, 3),
    64: (32, 128, 4, 4, 128, 32, 8, 3),
    128: (64, 64, 4, 2, 64, 64, 4, 2),
    256: (16, 64, 8, 1, 64, 16, 8, 1),  # correct on the H100 (tests), not tuned
}
BWD_INTERPRETER_CONFIG = (16, 32, 4, 1, 32, 16, 4, 1)


def flash_attention_bwd_config(block_d, causal=False):
    """(BLOCK_M1, BLOCK_N1, warps1, stages1, BLOCK_M2, BLOCK_N2, warps2, stages2) for a padded D."""
    if shared.INTERPRETER:
        return BWD_INTERPRETER_CONFIG
    return BWD_CONFIGS[block_d]


def flash_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, config=None, dq_atomic=False):
    """Gradients (dq, dk, dv) of attention given dO, the inputs and the forward's o and lse.

    q, o, do: (B, H, Nq, D); k, v: (B, Hkv, Nk, D) with H % Hkv == 0; lse:
    (B, H, Nq) float32, the natural-log log-sum-exp of scale * q.k over the
    visible keys (what the forward returns). Any strides. Returns dq like q and
    dk, dv like k, all contiguous, in q's dtype. ``config`` overrides the tile
    sizes (see ``flash_attention_bwd_config``), for sweeps; ``dq_atomic=True``
    runs the fused variant (dQ by atomics inside the dK/dV kernel), for comparison.
    """
    scale = shared.check_attention_inputs(q, k, v, scale, allow_gqa=True, min_head_dim=16, max_head_dim=256)
    for name, t, shape in (("do", do, q.shape), ("o", o, q.shape)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(q.shape):
            raise ValueError(f"{name} must be a tensor of q's shape {tuple(shape)}, "
                             f"got {getattr(t, 'shape', type(t).__name__)}")
        if t.dtype != q.dtype or t.device != q.device:
            raise TypeError(f"{name} must have q's dtype {q.dtype} and device {q.device}, got {t.dtype} on {t.device}")
    if not isinstance(lse, torch.Tensor) or tuple(lse.shape) != tuple(q.shape[:3]) or lse.dtype != torch.float32:
        raise ValueError(f"lse must be a float32 tensor of shape {tuple(q.shape[:3])}")
    lse = lse.contiguous()
    batch, heads, n_q, head_dim = q.shape
    kv_heads, n_k = k.shape[1], k.shape[2]
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_m1, block_n1, warps1, stages1, block_m2, block_n2, warps2, stages2 = (
        config or flash_attention_bwd_config(block_d, causal))
    if block_n1 % block_m1 or block_m2 % block_n2:
        raise ValueError(f"config {config}: BLOCK_N1 must be a multiple of BLOCK_M1 and BLOCK_M2 of "
                         "BLOCK_N2 (the causal diagonal must fall on tile boundaries)")
    shared.check_grid_rows(batch, heads)  # (batch, head) pairs on the grid's second axis
    if max(t.numel() for t in (q, k, v, o, do)) >= 2**31:
        raise ValueError("tensors of 2^31 elements or more are not supported (32-bit offsets)")

    # The interpreter computes tl.dot on bfloat16 operands wrongly (a Triton bug,
    # 3.6 and 3.8): there, and only there, bf16 operands are upcast to fp32.
    # fp32 inputs get exact fp32 products ("ieee") rather than TF32.
    if q.dtype == torch.float32 or (shared.INTERPRETER and q.dtype == torch.bfloat16):
        dot_dtype = tl.float32
    else:
        dot_dtype = tl.float16 if q.dtype == torch.float16 else tl.bfloat16
    ieee = q.dtype == torch.float32

    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=q.dtype, device=q.device)
    dv = torch.empty(v.shape, dtype=q.dtype, device=q.device)
    delta = torch.empty((batch, heads, n_q), dtype=torch.float32, device=q.device)

    # Grids by integer ceil-division: triton.cdiv is itself a jit function, and
    # calling one from Python costs microseconds. At N = 1024 the backward is
    # already bound by Python and launch overhead (about 0.5 ms per autograd call
    # on the H100 host), so the launcher keeps its own work small.
    pre_block = 64 if not shared.INTERPRETER else 32
    _bwd_preprocess_kernel[(-(-n_q // pre_block), batch * heads)](
        o, do, delta, *o.stride(), *do.stride(), heads, n_q, head_dim,
        BLOCK_M=pre_block, BLOCK_D=block_d)
    common = dict(CAUSAL=bool(causal), DOT_DTYPE=dot_dtype, IEEE=ieee, BLOCK_D=block_d)
    qk_scale = scale * LOG2E
    dq_acc = (torch.zeros((batch, heads, n_q, block_d), dtype=torch.float32, device=q.device)
              if dq_atomic else delta)  # unused unless DQ_ATOMIC
    _bwd_dkdv_kernel[(-(-n_k // block_n1), batch * kv_heads)](
        q, k, v, do, lse, delta, dk, dv, dq_acc,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
        heads, kv_heads, n_q, n_k, head_dim, scale, qk_scale,
        DQ_ATOMIC=bool(dq_atomic), BLOCK_M=block_m1, BLOCK_N=block_n1,
        num_warps=warps1, num_stages=stages1, **common)
    if dq_atomic:
        dq.copy_(dq_acc[..., :head_dim])
        return dq, dk, dv
    _bwd_dq_kernel[(-(-n_q // block_m2), batch * heads)](
        q, k, v, do, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        heads, kv_heads, n_q, n_k, head_dim, scale, qk_scale,
        BLOCK_M=block_m2, BLOCK_N=block_n2, num_warps=warps2, num_stages=stages2, **common)
    return dq, dk, dv


# ----------------------------------------------------------------------------- autograd + torch.compile
# Two custom ops make the kernels opaque, well-typed nodes for torch.compile:
# dynamo traces through them without a graph break, and the fake (meta)
# implementations tell it the output shapes without running a kernel. The
# autograd formula is registered on the forward op, so `loss.backward()` and
# AOTAutograd both route into our backward kernels.
@torch.library.custom_op("triton_attention::flash_attn_fwd", mutates_args=())
def _flash_attn_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                       scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    o, lse = flash_attention_forward(q, k, v, causal=causal, scale=scale)
    return o, lse  # both contiguous, as the fake below promises


@_flash_attn_fwd_op.register_fake
def _(q, k, v, causal, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("triton_attention::flash_attn_bwd", mutates_args=())
def _flash_attn_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       o: torch.Tensor, lse: torch.Tensor, causal: bool,
                       scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return flash_attention_backward(do, q, k, v, o, lse, causal=causal, scale=scale)


@_flash_attn_bwd_op.register_fake
def _(do, q, k, v, o, lse, causal, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.causal, ctx.scale = causal, scale


def _flash_attn_autograd(ctx, grad_o, grad_lse):
    # The lse output is for the backward's use; a gradient flowing into it is not supported.
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = _flash_attn_bwd_op(grad_o, q, k, v, o, lse, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None


_flash_attn_fwd_op.register_autograd(_flash_attn_autograd, setup_context=_setup_context)


def flash_attention(q, k, v, causal=False, scale=None, out=None):
    """Attention of q (B, H, Nq, D) over k, v (B, Hkv, Nk, D); returns (B, H, Nq, D) like q.

    Computes what ``F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale,
    enable_gqa=True)`` computes: top-left causal alignment when Nq != Nk; H % Hkv == 0
    (MHA, GQA, MQA, without copying K/V); any lengths >= 1; head dims 16 to 256 (padded to
    a power of two with masks); any strides. fp16 and bf16 run on tensor cores with fp32
    accumulation and softmax; fp32 inputs are accepted and multiplied in true fp32
    (``input_precision="ieee"``, not TF32): exact, but far slower than the half types.

    Differentiable: when an input requires grad (or under ``torch.compile``) the call goes
    through the ``triton_attention::flash_attn_fwd`` custom op, whose backward runs the
    Triton kernels above. Otherwise it launches the forward kernel directly, skipping the
    op's dispatch cost. ``out=`` (inference only) writes into a caller's buffer.
    """
    if out is not None:
        if torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in (q, k, v)):
            raise ValueError("out= is for inference: a result written into a caller's buffer "
                             "carries no gradient; call flash_attention without out=")
        return _forward(q, k, v, causal=causal, scale=scale, out=out)[0]
    needs_grad = torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in (q, k, v))
    if not (needs_grad or torch.compiler.is_compiling()):
        return _forward(q, k, v, causal=causal, scale=scale)[0]
    scale = shared.check_attention_inputs(q, k, v, scale, allow_gqa=True, min_head_dim=16,
                                          max_head_dim=256)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    return _flash_attn_fwd_op(q, k, v, causal, scale)[0]


class FlashAttentionFunction(torch.autograd.Function):
    """The same pair of kernels as a classic ``autograd.Function`` (eager only).

    Kept because it is the shortest way to read how forward and backward fit:
    the forward saves q, k, v, o and lse; the backward calls the kernels.
    ``flash_attention`` (custom op) is what torch.compile should see.
    """

    @staticmethod
    def forward(ctx, q, k, v, causal=False, scale=None):
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        o, lse = flash_attention_forward(q, k, v, causal=causal, scale=scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(grad_o, q, k, v, o, lse, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None


# ----------------------------------------------------------------------------- correctness
# (B, H, Nq, Nk, D, causal): features beyond the shared shapes, each on purpose.
EXTRA_SHAPES_QUICK = [
    (1, 2, 33, 65, 111, True),  # odd head dim (pads 111 -> 128), Nq < Nk causal
    (1, 1, 1, 97, 96, True),  # decoding-like: one query, causal sees only key 0
]
EXTRA_SHAPES_FULL = EXTRA_SHAPES_QUICK + [
    (2, 8, 1000, 1000, 256, True),
    (3, 5, 257, 513, 40, False),
    (1, 2, 2049, 4096, 128, True),
]


def check_special_cases(label="03 flash"):
    """GQA/MQA, non-contiguous inputs, a custom scale and the lse, printed like run_checks."""
    passed = True
    small = shared.INTERPRETER
    cases = [  # (label, B, H, Hkv, Nq, Nk, D, causal, scale, dtype)
        ("GQA H=4 Hkv=2", 2, 4, 2, 17 if small else 300, 33 if small else 1025, 64, True, None,
         torch.float16),
        ("MQA H=4 Hkv=1", 1, 4, 1, 20 if small else 513, 20 if small else 513, 80, False, 0.3,
         torch.bfloat16),
    ]
    for name, b, h, hkv, nq, nk, d, causal, scale, dtype in cases:
        q, k, v = shared.make_qkv(b, h, nq, d, n_k=nk, kv_heads=hkv, dtype=dtype)
        result = shared.test_correctness(flash_attention, q, k, v, causal=causal, scale=scale)
        passed &= result.passed
        print(f"  {label:<22} {name:<32} causal={causal!s:<5} {str(dtype)[6:]:<8} {result}")
    # (B, N, H, D) as models produce it, viewed as (B, H, N, D): strides, no copies
    n = 19 if small else 777
    q, k, v = (torch.randn(2, n, 3, 64, dtype=torch.float16, device=shared.DEVICE).transpose(1, 2)
               for _ in range(3))
    result = shared.test_correctness(flash_attention, q, k, v, causal=True)
    passed &= result.passed
    print(f"  {label:<22} {'non-contiguous (B,N,H,D).T':<32} causal=True  float16  {result}")
    # the logsumexp, against float64 scores
    q, k, v = shared.make_qkv(2, 2, 19 if small else 600, 64, n_k=23 if small else 999,
                              dtype=torch.float16)
    _, lse = flash_attention_forward(q, k, v, causal=True)
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(64)
    scores = scores.masked_fill(~torch.ones_like(scores, dtype=torch.bool).tril(), float("-inf"))
    lse_err = (lse.double() - torch.logsumexp(scores, -1)).abs().max().item()
    ok = lse_err < 1e-2 and lse.is_contiguous() and lse.dtype == torch.float32
    passed &= ok
    print(f"  {label:<22} {'lse vs float64 logsumexp':<32} causal=True  float16  "
          f"{'PASS' if ok else 'FAIL'}: max abs err {lse_err:.2e}")
    return passed


# One rounding of a result to its dtype: an error no implementation can beat.
BWD_ROUNDING = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}


def gradient_errors(q, k, v, causal=False, scale=None, do=None, forward=None):
    """Our (dq, dk, dv) against float64 autograd, next to plain PyTorch autograd in q's dtype.

    ``forward`` gives (o, lse) to differentiate through (default: our forward kernel;
    the tests also pass an exact float64 forward, to test the backward alone).

    Returns three dicts, one per gradient, with "ours" and "torch" (max abs
    errors vs float64) and "bound" = 2 x torch's error + one output rounding
    (2^-11 fp16, 2^-8 bf16, times the largest |gradient|) + 1e-5: the rule the
    tests hold us to. The rounding term matters where both errors are just the
    final rounding to fp16/bf16 (e.g. Nk = 1, where dV is a plain sum of dO).
    """
    q, k, v = (t.detach() for t in (q, k, v))
    o, lse = (forward or flash_attention_forward)(q, k, v, causal=causal, scale=scale)
    if do is None:
        do = torch.randn_like(o)
    ours = flash_attention_backward(do, q, k, v, o, lse, causal=causal, scale=scale)

    def grads(dtype):
        leaves = [t.to(dtype).requires_grad_(True) for t in (q, k, v)]
        fn = shared.reference_attention if dtype == torch.float64 else shared.naive_torch
        out = fn(*leaves, causal=causal, scale=scale)
        return torch.autograd.grad(out, leaves, do.to(dtype))

    exact = grads(torch.float64)
    torch_same = grads(q.dtype)
    result = []
    for got, ref, e in zip(ours, torch_same, exact):
        err_ours = (got.to(torch.float64) - e).abs().max().item()
        err_torch = (ref.to(torch.float64) - e).abs().max().item()
        bound = 2 * err_torch + BWD_ROUNDING[q.dtype] * e.abs().max().item() + 1e-5
        result.append({"ours": err_ours, "torch": err_torch, "bound": bound, "ok": err_ours <= bound})
    return result


def check_backward(quick):
    shapes = [  # (B, H, Hkv, Nq, Nk, D, causal): awkward lengths one side at a time, GQA, MQA
        (1, 2, 2, 1, 17, 16, False),
        (1, 2, 1, 17, 1, 40, True),
        (1, 4, 2, 97, 33, 64, True),
        (2, 2, 2, 33, 97, 80, False),
        (1, 3, 1, 40, 40, 128, True),
    ]
    if not shared.INTERPRETER and not quick:
        shapes += [(2, 8, 2, 1025, 1025, 64, True), (1, 4, 4, 1, 1025, 128, False),
                   (1, 4, 1, 333, 257, 96, True), (2, 4, 4, 256, 256, 256, True),
                   (1, 4, 2, 1000, 3000, 111, False)]
    print("Gradient check against float64 autograd (rule: ours <= 2 x torch same-dtype error + rounding):")
    passed = True
    for dtype in (torch.float16, torch.bfloat16):
        for b, h, hkv, n_q, n_k, d, causal in shapes:
            q, k, v = shared.make_qkv(b, h, n_q, d, n_k=n_k, kv_heads=hkv, dtype=dtype)
            errs = gradient_errors(q, k, v, causal=causal)
            ok = all(e["ok"] for e in errs)
            passed &= ok
            ours = " ".join(f"{e['ours']:.1e}" for e in errs)
            theirs = " ".join(f"{e['torch']:.1e}" for e in errs)
            print(f"  B={b} H={h} Hkv={hkv} Nq={n_q} Nk={n_k} D={d} causal={causal!s:<5} {str(dtype)[6:]:<8} "
                  f"{'PASS' if ok else 'FAIL'}  dq/dk/dv err {ours}  (torch {theirs})")
    return passed


def check(quick):
    small = quick or shared.INTERPRETER
    shapes = shared.CHECK_SHAPES_QUICK + EXTRA_SHAPES_QUICK if small else \
        shared.CHECK_SHAPES_FULL + EXTRA_SHAPES_FULL
    dtypes = (torch.float16, torch.bfloat16) if small else (torch.float16, torch.bfloat16, torch.float32)
    print("Correctness against the float64 reference:")
    passed = shared.run_checks(flash_attention, shapes, dtypes, label="03 flash")
    passed &= check_special_cases()
    passed &= check_backward(quick)
    return passed


# ----------------------------------------------------------------------------- benchmark
def load_vectorized_attention():
    """Step 02's kernel, if its script exists (it is a baseline here, not a dependency)."""
    path = HERE.parent / "02_vectorized_attention" / "vectorized_attention.py"
    if not path.exists():
        return None
    try:
        spec = importlib.util.spec_from_file_location("step02_vectorized_attention", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.vectorized_attention
    except Exception as exc:  # a broken or unfinished step 02 must not stop step 03's benchmark
        print(f"(skipping 02 vectorized: {type(exc).__name__}: {exc})")
        return None


def benchmark_functions(include_flex=True):
    fns = {"03 flash": flash_attention,
           "sdpa flash": shared.sdpa_backend("flash"),
           "sdpa efficient": shared.sdpa_backend("efficient"),
           "sdpa cudnn": shared.sdpa_backend("cudnn")}
    if include_flex:
        from shared.baselines import flex_attention_compiled
        fns["flex attention"] = flex_attention_compiled()
    fns["naive torch"] = shared.naive_torch
    vectorized = load_vectorized_attention()
    if vectorized is not None:
        fns["02 vectorized"] = vectorized
    return fns


SLOW_IMPLS = ("naive torch", "02 vectorized")  # naive runs out of memory at N=16384; 02 takes seconds a call


def benchmark(quick, out_dir, head_dims=(64, 128), dtypes=(torch.float16, torch.bfloat16),
              causals=(False, True), n_max=16384, include_flex=True, tag="", plots=True,
              slow_n_max=4096, modes=("fwd",)):
    """Time step 03 and the baselines on (4, 32, N, D); save forward[_tag].json or backward[_tag].json (+ plots).

    The slow baselines (naive torch, 02 vectorized) are timed only up to ``slow_n_max``:
    naive torch runs out of memory at N=16384, and 02 takes over a second a call there.
    """
    from shared.plotting import plot_all

    lengths = [n for n in ((1024, 4096) if quick else (1024, 2048, 4096, 8192, 16384)) if n <= n_max]
    shapes = [(4, 32, n, d) for d in head_dims for n in lengths]
    fns = benchmark_functions(include_flex)
    # Let the autotuner pick its configs before timing, so its scratch buffers do not show
    # up in the first call's peak memory (measure() records it).
    for dtype in dtypes:
        for causal in causals:
            for b, h, n, d in shapes:
                q, k, v = shared.make_qkv(b, h, n, d, dtype=dtype)
                flash_attention(q, k, v, causal=causal)
                del q, k, v
    ceilings = shared.measure_ceilings()
    print(f"ceilings: {ceilings}")
    fast = {k: f for k, f in fns.items() if k not in SLOW_IMPLS}
    slow = {k: f for k, f in fns.items() if k in SLOW_IMPLS}
    timing = dict(causal=tuple(causals), dtype=tuple(dtypes), warmup=10 if quick else 25,
                  rep=50 if quick else 100, modes=tuple(modes))
    rows = shared.quick_benchmark(fast, shapes=shapes, **timing)
    if modes == ("fwd",):  # naive torch runs out of memory, 02 vectorized has no backward
        rows += shared.quick_benchmark(slow, shapes=[s for s in shapes if s[2] <= slow_n_max], **timing)
    # forward.json / backward.json: the names make_tables.py reads (a tag marks a part of a grid;
    # benchmarks/merge_results.py joins parts)
    name = ("forward" if modes == ("fwd",) else "backward") + (f"_{tag}" if tag else "") + ".json"
    path = shared.save_results(out_dir / name, rows, step="03_advanced_optimizations",
                               ceilings=ceilings, command=" ".join(["python flash_attention.py",
                                                                    *sys.argv[1:]]))
    print(f"wrote {path}")
    for dtype in (dtypes if plots and not shared.INTERPRETER else ()):
        dt = str(dtype).replace("torch.", "")
        for d in head_dims:
            for causal in causals:
                for mode in modes:
                    sel = shared.select(rows, head_dim=d, causal=causal, dtype=dt, mode=mode)
                    if not sel:
                        continue
                    plot_tag = (f"{mode.replace('+', '_')}_{dt}_d{d}_{'causal' if causal else 'full'}"
                                + (f"_{tag}" if tag else ""))
                    plot_all(sel, out_dir, plot_tag,
                             f"step 03 {mode}, {dt}, B=4 H=32 D={d}{' causal' if causal else ''}",
                             baseline="sdpa flash")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and sizes")
    parser.add_argument("--head-dim", type=int, nargs="+", default=[64, 128], help="head dims to time")
    parser.add_argument("--dtype", nargs="+", default=["float16", "bfloat16"],
                        choices=["float16", "bfloat16"], help="dtypes to time")
    parser.add_argument("--causal", choices=["no", "yes", "both"], default="both")
    parser.add_argument("--n-max", type=int, default=16384, help="longest sequence to time")
    parser.add_argument("--no-flex", action="store_true",
                        help="leave FlexAttention out (it compiles per shape)")
    parser.add_argument("--slow-n-max", type=int, default=4096,
                        help="longest sequence for naive torch and 02 vectorized (default 4096)")
    parser.add_argument("--quick-check", action="store_true",
                        help="the short correctness check, but the full benchmark")
    parser.add_argument("--no-plots", action="store_true",
                        help="results JSON only (4 plots per dtype/head dim/causal otherwise)")
    parser.add_argument("--tag", default="", help="suffix for forward_<tag>.json / backward_<tag>.json and the plots")
    parser.add_argument("--backward", action="store_true",
                        help="time the backward pass (modes bwd and fwd+bwd) instead of the forward")
    parser.add_argument("--train", action="store_true",
                        help="train the small GPT of train_gpt.py with SDPA and with flash_attention")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results",
                        help="where forward.json / backward.json and the plots go (default: results/ beside this script)")
    args = parser.parse_args(argv)
    print(shared.describe_runtime())
    if args.train:
        spec = importlib.util.spec_from_file_location("step03_train_gpt", HERE / "train_gpt.py")
        train_gpt = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(train_gpt)
        train_gpt.main(["--out-dir", str(args.out_dir)] + (["--steps", "3", "--tiny"] if args.quick else []))
        return 0
    if not check(args.quick or args.quick_check):
        print("FAILED: flash_attention does not match the reference; not benchmarking.")
        return 1
    if shared.INTERPRETER:
        print("Skipping the benchmark: there is no GPU to time on.")
        return 0
    causals = {"no": (False,), "yes": (True,), "both": (False, True)}[args.causal]
    benchmark(args.quick, args.out_dir, tuple(args.head_dim), tuple(getattr(torch, d) for d in args.dtype),
              causals, args.n_max, not args.no_flex, args.tag, not args.no_plots, args.slow_n_max,
              ("bwd", "fwd+bwd") if args.backward else ("fwd",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
