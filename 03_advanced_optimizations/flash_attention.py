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
256, any strides, and the log-sum-exp a backward pass needs.

You will learn:
  * tiling attention: why a query tile on chip turns the K/V traffic from O(N^2 D) row reads
    into O(N^2 D / BLOCK_M) tile reads, and why that makes attention compute-bound;
  * the online softmax on tiles: running max and sum per row, rescaling the accumulator;
  * exp2 with scale * log2(e) folded into one multiply-add per score;
  * causal attention in two loops: full tiles without masks, diagonal tiles with masks;
  * GQA/MQA by index arithmetic (no copies of K/V), strides for any layout, masks for any length;
  * the log-sum-exp (lse) the backward pass recomputes the softmax from;
  * Hopper: autotuning block sizes, warps and pipeline stages; what tensor descriptors (TMA)
    and warp specialisation bought here (nothing, measured: see "what did not help" below).

Run it (from this folder or the repo root):
    python flash_attention.py                    # check, then benchmark the whole grid (GPU)
    python flash_attention.py --quick            # fewer shapes, a short benchmark
    python flash_attention.py --quick-check --no-plots --head-dim 64 --dtype float16 --causal no
                                                 # one slice of the grid (about 3-4 minutes on an H100)
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

    # Base pointers of this (batch, head): int64, since B * H * N * D can pass 2^31.
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
#     (which Triton already turns into cp.async pipelines) in 10 of 12 shapes, e.g. D=128
#     N=16384: 456 vs 494 TFLOP/s.
#   * warp_specialize=True in tl.range: with Triton 3.6 on sm_90 it compiled to the very same
#     PTX as without (and failed to compile with 4 warps), so there was nothing to measure.
#   * "Lazy" rescaling (skip acc *= alpha unless a row max grew by > 2^8): needs a
#     block-wide max per tile; 5-25% slower (best config against best config, same run).
#   * Hand-pipelining S = Q K^T of tile j+1 before the softmax of tile j: Triton still waits
#     for each wgmma at once (wait_group 0), so nothing overlaps and the extra registers cost
#     5-30%.
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
    if batch * heads > 65535:  # the grid's second axis (CUDA's limit for grid y)
        raise ValueError(f"batch * heads = {batch * heads} exceeds 65535, the grid's limit")
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


def flash_attention(q, k, v, causal=False, scale=None, out=None):
    """Attention of q (B, H, Nq, D) over k, v (B, Hkv, Nk, D); returns (B, H, Nq, D) like q.

    Computes what ``F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale,
    enable_gqa=True)`` computes: top-left causal alignment when Nq != Nk; H % Hkv == 0
    (MHA, GQA, MQA, without copying K/V); any lengths >= 1; head dims 16 to 256 (padded to
    a power of two with masks); any strides. fp16 and bf16 run on tensor cores with fp32
    accumulation and softmax; fp32 inputs are accepted and multiplied in true fp32
    (``input_precision="ieee"``, not TF32): exact, but far slower than the half types.
    """
    return _forward(q, k, v, causal=causal, scale=scale, out=out)[0]


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


def check(quick):
    small = quick or shared.INTERPRETER
    shapes = shared.CHECK_SHAPES_QUICK + EXTRA_SHAPES_QUICK if small else \
        shared.CHECK_SHAPES_FULL + EXTRA_SHAPES_FULL
    dtypes = (torch.float16, torch.bfloat16) if small else (torch.float16, torch.bfloat16, torch.float32)
    print("Correctness against the float64 reference:")
    passed = shared.run_checks(flash_attention, shapes, dtypes, label="03 flash")
    passed &= check_special_cases()
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


SLOW_IMPLS = ("naive torch", "02 vectorized")  # O(N^2) memory / no tensor cores: minutes at N=16384


def benchmark(quick, out_dir, head_dims=(64, 128), dtypes=(torch.float16, torch.bfloat16),
              causals=(False, True), n_max=16384, include_flex=True, tag="", plots=True,
              slow_n_max=4096):
    """Time step 03 and the baselines on (4, 32, N, D); save results[_tag].json (+ plots).

    The slow baselines (naive torch, 02 vectorized) are timed only up to ``slow_n_max``:
    02 takes ~20 s per call at N=16384, D=128, and do_bench calls it 8 times.
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
                  rep=50 if quick else 100)
    rows = shared.quick_benchmark(fast, shapes=shapes, **timing)
    rows += shared.quick_benchmark(slow, shapes=[s for s in shapes if s[2] <= slow_n_max], **timing)
    name = "results" + (f"_{tag}" if tag else "") + ".json"
    path = shared.save_results(out_dir / name, rows, step="03_advanced_optimizations",
                               ceilings=ceilings, command=" ".join(["python flash_attention.py",
                                                                    *sys.argv[1:]]))
    print(f"wrote {path}")
    for dtype in (dtypes if plots and not shared.INTERPRETER else ()):
        dt = str(dtype).replace("torch.", "")
        for d in head_dims:
            for causal in causals:
                sel = shared.select(rows, head_dim=d, causal=causal, dtype=dt)
                if sel:
                    plot_tag = f"{dt}_d{d}_{'causal' if causal else 'full'}" + (f"_{tag}" if tag else "")
                    plot_all(sel, out_dir, plot_tag,
                             f"step 03, {dt}, B=4 H=32 D={d}{' causal' if causal else ''}",
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
    parser.add_argument("--tag", default="", help="suffix for results_<tag>.json and the plots")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results",
                        help="where results.json and the plots go (default: results/ beside this script)")
    args = parser.parse_args(argv)
    print(shared.describe_runtime())
    if not check(args.quick or args.quick_check):
        print("FAILED: flash_attention does not match the reference; not benchmarking.")
        return 1
    if shared.INTERPRETER:
        print("Skipping the benchmark: there is no GPU to time on.")
        return 0
    causals = {"no": (False,), "yes": (True,), "both": (False, True)}[args.causal]
    benchmark(args.quick, args.out_dir, tuple(args.head_dim), tuple(getattr(torch, d) for d in args.dtype),
              causals, args.n_max, not args.no_flex, args.tag, not args.no_plots, args.slow_n_max)
    return 0


if __name__ == "__main__":
    sys.exit(main())
