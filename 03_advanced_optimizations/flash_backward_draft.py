"""Step 03 (backward): FlashAttention-2 gradients dQ, dK, dV in Triton.

The development file of the backward pass; its kernels and its autograd glue
are meant to move into ``flash_attention.py`` as one self-contained section
(every kernel is named ``_bwd_*_kernel``, every helper ``flash_attention_bwd*``
or ``_bwd_*``, so nothing clashes with the forward's names).

What changed since the forward: training needs gradients, and attention's
gradients need the (Nq x Nk) probabilities P again. Storing P would undo what
the forward saved, so we recompute it tile by tile from the one number per
query row the forward kept: its log-sum-exp.

You will learn:
  * the backward of softmax attention, written as five tile products;
  * why the backward is split into a dK/dV kernel (key blocks own their output)
    and a dQ kernel (query blocks own theirs), and what atomics would cost;
  * grouped-query attention in the backward: one program sums the gradients of
    all query heads that share its K/V head, in registers, with no atomics;
  * how to wrap Triton kernels as a ``torch.library.custom_op`` so that
    ``torch.compile(fullgraph=True)`` keeps a model that calls them in one graph.

Run it (from this folder or the repo root):
    python flash_backward_draft.py           # check gradients, then benchmark the backward (GPU)
    python flash_backward_draft.py --quick   # fewer shapes
Without a GPU it runs in Triton's CPU interpreter on small shapes and skips timing.
"""
import argparse
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

# ----------------------------------------------------------------------------- motivation
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
# takes 2.5x as long - 10.2 ms against 3.8-4.1 ms at D=64, 21.8 against 8.2-9.7
# ms at D=128 - its fp32 read-modify-writes of dQ on every tile cost far more
# than the two products they save. So: a separate dQ kernel.
#
# Causal (top-left: key j visible to query i iff j <= i): a key block sees only
# queries at or after its first key, so kernel 1 starts its query loop at that
# block and masks only the tiles on the diagonal; kernel 2 stops at the last key
# its queries can see and masks only the diagonal tiles. Fully masked tiles are
# never loaded.


# ----------------------------------------------------------------------------- kernels
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
# notes/gpu_log.md (`python flash_backward_draft.py --sweep`); the
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
    if batch * heads > 65535:  # the grid's second dimension
        raise ValueError(f"batch * heads = {batch * heads} is more than 65535 programs can cover")
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


# ----------------------------------------------------------------------------- forward (stand-in)
def reference_forward(q, k, v, causal=False, scale=None):
    """(o, lse) from the float64 reference, o cast back to q's dtype: a forward for tests.

    Lets the backward be tested on its own, against an exact o and lse, before
    (or without) the Triton forward. Works through the heads a few at a time so
    that long sequences fit in memory (it is slow, not meant for training).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch, heads, n_q, _ = q.shape
    n_k, group = k.shape[2], q.shape[1] // k.shape[1]
    o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, n_q), dtype=torch.float32, device=q.device)
    step = max(1, min(heads, 2**27 // (n_q * n_k)))  # at most ~1 GiB of float64 scores at a time
    visible = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril() if causal else None
    for b in range(batch):
        for h0 in range(0, heads, step):
            heads_here = torch.arange(h0, min(h0 + step, heads), device=q.device)
            qd = q[b, heads_here].detach().to(torch.float64)
            kd = k[b, heads_here // group].detach().to(torch.float64)
            vd = v[b, heads_here // group].detach().to(torch.float64)
            scores = (qd @ kd.transpose(-1, -2)) * scale
            if causal:
                scores = scores.masked_fill(~visible, float("-inf"))
            row_lse = torch.logsumexp(scores, dim=-1)
            o[b, heads_here] = (torch.exp(scores - row_lse[..., None]) @ vd).to(q.dtype)
            lse[b, heads_here] = row_lse.to(torch.float32)
    return o, lse


def _load_forward():
    """The Triton forward of flash_attention.py if it defines one that works, else the stand-in.

    "Works": it runs and matches the reference on one small awkward input. Until the
    forward and this backward share one file, this keeps the backward usable (and
    its tests meaningful) while the forward file is being edited.
    """
    try:
        module = __import__("shared.steps", fromlist=["load_step"]).load_step("03")
        forward = module.flash_attention_forward
        q, k, v = shared.make_qkv(1, 2, 19, 40, n_k=23, kv_heads=1, dtype=torch.float16, seed=0)
        o, lse = forward(q, k, v, causal=True)
        o_ref, lse_ref = reference_forward(q, k, v, causal=True)
        if (o.float() - o_ref.float()).abs().max() < 1e-2 and (lse - lse_ref).abs().max() < 1e-3:
            return forward, "triton"
        print("warning: flash_attention_forward does not match the reference; using the stand-in")
    except Exception as exc:  # a half-edited forward file: any failure means "not usable yet"
        print(f"warning: no usable flash_attention_forward ({type(exc).__name__}: {str(exc)[:100]}); "
              "using the float64 stand-in")
    return reference_forward, "float64 reference (stand-in)"


_FORWARD = None


def flash_attention_bwd_forward():
    """(forward fn, its name): resolved once, on first use."""
    global _FORWARD
    if _FORWARD is None:
        _FORWARD = _load_forward()
    return _FORWARD


# ----------------------------------------------------------------------------- autograd + torch.compile
# Two custom ops make the kernels opaque, well-typed nodes for torch.compile:
# dynamo traces through them without a graph break, and the fake (meta)
# implementations tell it the output shapes without running a kernel. The
# autograd formula is registered on the forward op, so `loss.backward()` and
# AOTAutograd both route into our backward kernels.
@torch.library.custom_op("triton_attention::flash_attn_fwd", mutates_args=())
def _bwd_op_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                    scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    fwd, _ = flash_attention_bwd_forward()
    o, lse = fwd(q, k, v, causal=causal, scale=scale)
    return o.contiguous(), lse.contiguous()  # the fake below promises contiguous outputs


@_bwd_op_forward.register_fake
def _(q, k, v, causal, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("triton_attention::flash_attn_bwd", mutates_args=())
def _bwd_op_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     o: torch.Tensor, lse: torch.Tensor, causal: bool,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return flash_attention_backward(do, q, k, v, o, lse, causal=causal, scale=scale)


@_bwd_op_backward.register_fake
def _(do, q, k, v, o, lse, causal, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _bwd_setup_context(ctx, inputs, output):
    q, k, v, causal, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.causal, ctx.scale = causal, scale


def _bwd_autograd(ctx, grad_o, grad_lse):
    # The lse output is for the backward's use; a gradient flowing into it is not supported.
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = _bwd_op_backward(grad_o, q, k, v, o, lse, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None


_bwd_op_forward.register_autograd(_bwd_autograd, setup_context=_bwd_setup_context)


def flash_attention_trainable(q, k, v, causal=False, scale=None):
    """Attention with gradients: the forward op above, backward by our Triton kernels.

    Works under ``torch.compile(fullgraph=True)``. Same arguments as
    ``flash_attention``; returns o (B, H, Nq, D) like q.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    o, _ = _bwd_op_forward(q, k, v, bool(causal), scale)
    return o


class FlashAttentionFunction(torch.autograd.Function):
    """The same pair of kernels as a classic ``autograd.Function`` (eager only).

    Kept because it is the shortest way to read how forward and backward fit:
    the forward saves q, k, v, o and lse; the backward calls the kernels.
    ``flash_attention_trainable`` (custom op) is what torch.compile should see.
    """

    @staticmethod
    def forward(ctx, q, k, v, causal=False, scale=None):
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        fwd, _ = flash_attention_bwd_forward()
        o, lse = fwd(q, k, v, causal=causal, scale=scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(grad_o, q, k, v, o, lse, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None


# ----------------------------------------------------------------------------- correctness
# One rounding of a result to its dtype: an error no implementation can beat.
BWD_ROUNDING = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}


def gradient_errors(q, k, v, causal=False, scale=None, do=None, forward=reference_forward):
    """Our (dq, dk, dv) against float64 autograd, next to plain PyTorch autograd in q's dtype.

    Returns three dicts, one per gradient, with "ours" and "torch" (max abs
    errors vs float64) and "bound" = 2 x torch's error + one output rounding
    (2^-11 fp16, 2^-8 bf16, times the largest |gradient|) + 1e-5: the rule the
    tests hold us to. The rounding term matters where both errors are just the
    final rounding to fp16/bf16 (e.g. Nk = 1, where dV is a plain sum of dO).
    """
    q, k, v = (t.detach() for t in (q, k, v))
    o, lse = forward(q, k, v, causal=causal, scale=scale)
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


# ----------------------------------------------------------------------------- benchmark
def benchmark_backward(quick, out_dir, flex=False):
    lengths = (1024, 4096) if quick else (1024, 2048, 4096, 8192)
    shapes = [(4, 32, n, d) for d in (64, 128) for n in lengths]
    fns = {"03 flash": flash_attention_trainable,
           "sdpa flash": shared.sdpa_backend("flash"), "sdpa cudnn": shared.sdpa_backend("cudnn")}
    if flex:  # compiles once per shape: slow to start, so only on request
        from shared.baselines import flex_attention_compiled
        fns["flex attention"] = flex_attention_compiled()
    rows = shared.quick_benchmark(fns, shapes=shapes, causal=(False, True), dtype=torch.float16,
                                  modes=("bwd",), warmup=10, rep=50)
    path = shared.save_results(out_dir / "results_backward.json", rows, step="03_backward",
                               command="python flash_backward_draft.py" + (" --quick" if quick else ""),
                               forward=flash_attention_bwd_forward()[1])
    print(f"wrote {path}")
    return rows


# (BLOCK_M1, BLOCK_N1, warps1, stages1) of the dK/dV kernel and (BLOCK_M2,
# BLOCK_N2, warps2, stages2) of the dQ kernel, tried one kernel at a time.
BWD_SWEEP_DKDV = {
    64: [(32, 128, 4, 3), (32, 128, 4, 4), (32, 128, 4, 5), (32, 128, 8, 3), (64, 128, 4, 3),
         (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 4, 3), (16, 128, 4, 3), (16, 64, 4, 3)],
    128: [(32, 128, 8, 2), (32, 128, 4, 2), (32, 128, 8, 3), (64, 128, 8, 2), (64, 128, 8, 3),
          (32, 64, 4, 2), (32, 64, 4, 3), (64, 64, 4, 2), (16, 128, 8, 2), (16, 64, 4, 3)],
}
BWD_SWEEP_DQ = {
    64: [(128, 32, 4, 3), (128, 32, 4, 4), (128, 32, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3),
         (64, 32, 4, 3), (64, 64, 4, 3), (128, 16, 4, 3)],
    128: [(128, 32, 8, 2), (128, 32, 4, 2), (128, 32, 8, 3), (128, 64, 8, 2), (64, 32, 4, 3),
          (64, 64, 4, 2), (64, 32, 4, 2), (128, 16, 4, 2)],
}


def sweep_backward(out_dir, n=4096, head_dims=(64, 128), dtype=torch.float16, max_seconds=120):
    """Time the backward alone (no autograd) for each candidate config of each kernel.

    Stops trying new configs after ``max_seconds``. Returns the rows and, per
    head dim, the best full config: the dK/dV choice and the dQ choice with the
    least time summed over causal and not.
    """
    import time

    import triton.testing

    forward, forward_name = flash_attention_bwd_forward()
    rows = []
    started = time.time()
    for d in head_dims:
        for causal in (False, True):
            q, k, v = shared.make_qkv(4, 32, n, d, dtype=dtype)
            o, lse = forward(q, k, v, causal=causal)
            do = torch.randn_like(o)
            flops = shared.attention_flops(4, 32, n, n, d, causal, "bwd")
            base = flash_attention_bwd_config(d)
            trials = [("dkdv", c + base[4:], False) for c in BWD_SWEEP_DKDV[d]]
            trials += [("dq", base[:4] + c, False) for c in BWD_SWEEP_DQ[d]]
            trials += [("atomic dq", base, True)]
            for kernel, config, atomic in trials:
                if time.time() - started > max_seconds * (head_dims.index(d) * 2 + causal + 1) / (2 * len(head_dims)):
                    continue  # this (D, causal)'s share of the time is spent
                row = {"head_dim": d, "causal": causal, "n": n, "kernel": kernel, "config": list(config),
                       "dq_atomic": atomic, "ms": None, "tflops": None, "status": "ok"}
                try:
                    fn = lambda: flash_attention_backward(do, q, k, v, o, lse, causal, None, config, atomic)  # noqa: E731
                    fn()
                    row["ms"] = triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")
                    row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
                except Exception as exc:  # out of shared memory / registers: record and go on
                    row["status"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
                rows.append(row)
                print(f"  sweep D={d} causal={causal!s:<5} {kernel:<9} {str(config):<40} "
                      + (f"{row['ms']:.3f} ms {row['tflops']:.0f} TFLOP/s" if row["ms"] else row["status"]),
                      flush=True)
            del q, k, v, o, lse, do
    best = {}
    for d in head_dims:
        base = flash_attention_bwd_config(d)
        choice = list(base)
        for kernel, part in (("dkdv", slice(0, 4)), ("dq", slice(4, 8))):
            totals = {}
            for r in rows:
                if r["head_dim"] == d and r["kernel"] == kernel and r["ms"]:
                    totals.setdefault(tuple(r["config"][part]), []).append(r["ms"])
            complete = {c: sum(t) for c, t in totals.items() if len(t) == 2}  # timed causal and not
            if complete:
                choice[part] = min(complete, key=complete.get)
        best[d] = tuple(choice)
        print(f"  best config for D={d}: {best[d]} (was {base})")
    path = shared.save_results(out_dir / "backward_sweep.json", rows, step="03_backward_sweep",
                               command="python flash_backward_draft.py --sweep", forward=forward_name,
                               shape=f"(4, 32, {n}, D)", dtype=str(dtype),
                               best={str(d): list(c) for d, c in best.items()})
    print(f"wrote {path}")
    return rows, best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and sizes")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--sweep", action="store_true",
                        help="sweep the tile configs (GPU), then benchmark with the best ones")
    parser.add_argument("--no-check", action="store_true", help="skip the gradient check")
    parser.add_argument("--flex", action="store_true", help="also time FlexAttention's backward")
    args = parser.parse_args(argv)
    if args.sweep:
        _, best = sweep_backward(args.out_dir)
        BWD_CONFIGS.update(best)
        args.no_check = True
    print(shared.describe_runtime())
    print(f"forward used for o and lse in training: {flash_attention_bwd_forward()[1]}")
    if not args.no_check and not check_backward(args.quick):
        print("FAILED: the backward does not match the reference; not benchmarking.")
        return 1
    if shared.INTERPRETER:
        print("Skipping the benchmark: there is no GPU to time on.")
        return 0
    benchmark_backward(args.quick, args.out_dir, flex=args.flex)
    return 0


if __name__ == "__main__":
    sys.exit(main())
