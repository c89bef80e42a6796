"""Step 03: FlashAttention - a query tile on chip, K/V tiles streaming past, tensor cores.

Since step 02: step 02 still gives each program one query row, loads a tile of
keys per step and does its dot products by broadcasting and `tl.sum`, so every
row re-reads all of K and V and the tensor cores stay idle. This step is a
FlashAttention-2 style forward pass: each program loads a BLOCK_M x D tile of
queries once and streams BLOCK_N x D tiles of keys and values past it; both
products (Q K^T and P V) run on tensor cores through `tl.dot`; the softmax is
computed online in fp32; tiles a query tile cannot see are skipped and only the
tiles on a mask's edge pay for the mask. It also grows up: grouped-query
attention, any lengths and strides, head dims 16 to 256, causal masks aligned
top-left (SDPA) or lower-right (a KV cache), sliding windows, packed
variable-length batches, split-KV decoding, and the log-sum-exp that the
backward pass (and any merge of partial results) needs. The backward pass
recomputes P from that log-sum-exp (a dQ kernel, then a dK/dV kernel), and the
host code is kept as thin as the installed Triton allows, because a model calls
attention thousands of times on small problems.

You will learn:
  * tiling attention: why a query tile on chip turns the K/V traffic from O(N^2 D) row reads
    into O(N^2 D / BLOCK_M) tile reads, and how close that brings attention to the matmul rate;
  * the online softmax on tiles: running max and sum per row, rescaling the accumulator;
  * exp2 with scale * log2(e) folded into one multiply-add per score;
  * masks as key ranges: which tiles to skip, which run without a mask, which need one
    (causal top-left and lower-right, sliding windows, ragged ends), and rows that see nothing;
  * GQA/MQA by index arithmetic, packed sequences by offsets, decoding by splitting the keys
    over programs and merging the partial results with their log-sum-exps;
  * the backward: five tile products, recomputation instead of storing P, GQA gradients;
  * the host side: what one call costs before the GPU starts, and how to make it small
    (validation once per layout, no autotuner in the call, direct launches, autograd.Function
    in eager mode and a custom op for torch.compile).

Run it (from this folder or the repo root):
    python flash_attention.py                    # check, then benchmark the whole grid (GPU)
    python flash_attention.py --quick            # fewer shapes, a short benchmark
    python flash_attention.py --quick-check --no-plots --head-dim 64 --dtype float16 --causal no
                                                 # one slice of the grid
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
LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) = exp2(x * log2(e)); LOG2E.value on the host
LN2 = tl.constexpr(0.6931471805599453)  # ln(2): a log2-domain logsumexp back to natural log
UNBOUNDED = 1 << 29  # a window side with no limit: past any length the input checks admit

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
# Masks as key ranges. Query i sees key j iff  i' - left <= j <= i' + right  and j < Nk,
# where i' = i (top-left alignment, SDPA's is_causal) or i + Nk - Nq (lower-right: the
# last query sits on the last key, as in a KV cache); causal means right = 0, a sliding
# window sets left (and maybe right), "no mask" leaves both unbounded. For a whole query
# tile that rule gives three key ranges: keys some row sees only partly (the window's left
# edge), keys every row sees (no mask needed: the bulk of the work), and keys on the right
# edge (the causal diagonal, the window's right edge, the last partial tile). Keys outside
# are never loaded, so a sliding window costs O(N x window), not O(N^2). A row that sees
# no key at all (a window, or lower-right alignment with Nq > Nk) returns 0 and lse = -inf.
# ----------------------------------------------------------------------------- forward: kernel
@triton.jit
def attention_tile_loop(
    acc, m_i, l_i,  # running state: (BLOCK_M, BLOCK_D) fp32 accumulator, row max (log2 units), row sum
    q,  # (BLOCK_M, BLOCK_D) query tile, loaded once by the caller
    k_base, v_base,  # pointers to key 0 of this (batch, K/V head, sequence), 64-bit offsets included
    stride_kn, stride_kd, stride_vn, stride_vd,  # element strides of K and V rows / columns
    lo, full_lo, full_hi, hi,  # MASKED: the tiles of [lo, full_lo) and [full_hi, hi); else [full_lo, full_hi)
    q_idx,  # (BLOCK_M,) query index i of each row, within its sequence
    seqlen_k, shift,  # keys in this sequence; i' = i + shift is where row i sits among the keys
    window_left, window_right,  # row i sees keys [i' - left, i' + right] (UNBOUNDED: no limit)
    qk_scale,  # softmax scale * log2(e)
    MASKED: tl.constexpr,  # this loop's tiles need the mask (window edges, causal diagonal, ragged end)
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    NEG_SCALE: tl.constexpr,  # scale < 0: the row max of S is the row min of Q K^T
    UPCAST_DOT: tl.constexpr,  # interpreter + bf16 only: tl.dot in fp32 (see the launcher)
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs; ignored for fp16/bf16
):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM  # all true when HEAD_DIM is a power of two: compiled away
    first_key = q_idx + shift - window_left  # (BLOCK_M,) first and last key each row may see
    last_key = q_idx + shift + window_right
    if MASKED:
        tiles = edge_tiles(lo, full_lo, full_hi, hi, BLOCK_N)
    else:
        tiles = tl.cdiv(full_hi - full_lo, BLOCK_N)
    for tile in range(0, tiles):
        if MASKED:
            start_n = edge_tile(tile, lo, full_lo, full_hi, BLOCK_N)
        else:
            start_n = tl.multiple_of(full_lo + tile * BLOCK_N, BLOCK_N)
        cols = start_n + offs_n  # key indices of this tile
        # ---- S = Q K^T ------------------------------------------------ read BLOCK_N x D of K
        k_ptrs = k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd
        if MASKED:
            k = tl.load(k_ptrs, mask=(cols[:, None] < seqlen_k) & d_mask[None, :], other=0.0)
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
            visible = ((cols[None, :] >= first_key[:, None]) & (cols[None, :] <= last_key[:, None])
                       & (cols[None, :] < seqlen_k))
            s = tl.where(visible, qk * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # A row may see no key of this tile yet (windows, lower-right alignment): its max
            # stays -inf, and subtracting 0 instead keeps exp2(-inf - -inf) from making a NaN.
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_sub[:, None])  # masked: exp2(-inf) = 0
            alpha = tl.math.exp2(m_i - m_sub)  # 0 while a row has seen nothing, else <= 1
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
            v = tl.load(v_ptrs, mask=(cols[:, None] < seqlen_k) & d_mask[None, :], other=0.0)
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
def edge_tile(tile, lo, full_lo, full_hi, BLOCK: tl.constexpr):
    """Start of the `tile`-th masked tile: those of [lo, full_lo), then those from full_hi on.

    One loop over both edges of a mask instead of two: the online softmax (and the gradient
    sums) do not care about the order of the tiles, and one loop body is fewer registers.
    """
    left_tiles = tl.cdiv(full_lo - lo, BLOCK)
    return tl.multiple_of(tl.where(tile < left_tiles, lo + tile * BLOCK, full_hi + (tile - left_tiles) * BLOCK),
                          BLOCK)


@triton.jit
def edge_tiles(lo, full_lo, full_hi, hi, BLOCK: tl.constexpr):
    """How many masked tiles [lo, full_lo) and [full_hi, hi) hold together."""
    return tl.cdiv(full_lo - lo, BLOCK) + tl.cdiv(hi - full_hi, BLOCK)


@triton.jit
def visible_ranges(first_row, last_row, seqlen_k, shift, window_left, window_right, BLOCK_N: tl.constexpr):
    """Split the keys that rows [first_row, last_row] see into tile ranges (lo, full_lo, full_hi, hi).

    Row i sees keys [i + shift - left, i + shift + right] inside [0, seqlen_k). Every row sees
    every key of [full_lo, full_hi): whole tiles, no mask. [lo, full_lo) and [full_hi, hi) are
    the tiles on the mask's edges. Keys outside [lo, hi) are never loaded, so the cost follows
    the window, not the sequence length. lo, full_lo, full_hi are multiples of BLOCK_N (unless
    clamped to hi). The backward reads the same rule from the keys' side: key j is seen by rows
    [j - shift - right, j - shift + left], i.e. the call with shift, left, right -> -shift, right, left.
    """
    lo = tl.maximum(first_row + shift - window_left, 0)  # the first key any row sees
    hi = tl.minimum(last_row + shift + window_right + 1, seqlen_k)  # one past the last one
    full_lo = tl.maximum(last_row + shift - window_left, 0)  # keys every row sees ...
    full_hi = tl.minimum(first_row + shift + window_right + 1, seqlen_k)  # ... end here
    lo = (lo // BLOCK_N) * BLOCK_N
    full_lo = tl.minimum(tl.maximum(tl.cdiv(full_lo, BLOCK_N) * BLOCK_N, lo), tl.maximum(hi, lo))
    full_hi = tl.maximum(tl.minimum((full_hi // BLOCK_N) * BLOCK_N, hi), full_lo)
    return lo, full_lo, full_hi, hi


@triton.jit
def sequence_bounds(cu_seqlens_q_ptr, cu_seqlens_k_ptr, batch, n_q, n_k, VARLEN: tl.constexpr):
    """(q_start, seqlen_q, k_start, seqlen_k) of sequence `batch`.

    A packed batch (VARLEN) reads them from the cumulative lengths, starts as 64-bit offsets;
    a dense batch has every sequence at 0, Nq and Nk long.
    """
    if VARLEN:
        q_start = tl.load(cu_seqlens_q_ptr + batch)
        k_start = tl.load(cu_seqlens_k_ptr + batch)
        seqlen_q = tl.load(cu_seqlens_q_ptr + batch + 1) - q_start
        seqlen_k = tl.load(cu_seqlens_k_ptr + batch + 1) - k_start
        return q_start.to(tl.int64), seqlen_q, k_start.to(tl.int64), seqlen_k
    else:
        return 0, n_q, 0, n_k


@triton.jit
def flash_attention_forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,  # q (B, H, Nq, D), k/v (B, Hkv, Nk, D), o like q; packed: (tokens, heads, D)
    lse_ptr,  # (B, H, Nq) fp32: natural-log logsumexp of each row's scaled scores (-inf: no key seen)
    cu_seqlens_q_ptr, cu_seqlens_k_ptr,  # VARLEN: (B + 1,) int32 offsets of each packed sequence
    stride_ob, stride_oh, stride_on, stride_od,  # element strides (any layout; 0 for a packed batch)
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_lb, stride_lh, stride_ln,  # lse strides
    stride_o_split, stride_lse_split,  # SPLIT: one partial (o, lse) per key split, fp32
    n_heads,  # H
    group,  # H // Hkv: query heads per K/V head (1 = MHA, H = MQA)
    n_q, n_k,  # Nq, Nk (VARLEN: the longest sequence's)
    qk_scale,  # softmax scale * log2(e)
    window_left, window_right,  # row i sees keys [i' - left, i' + right]; causal: right = 0
    lower_right,  # 1: i' = i + Nk - Nq (KV-cache alignment), 0: i' = i (SDPA's is_causal)
    keys_per_split,  # SPLIT: keys each split program covers (a multiple of BLOCK_N)
    HEAD_DIM: tl.constexpr,  # D
    BLOCK_D: tl.constexpr,  # D rounded up to a power of two (tl.arange and tl.dot need it)
    NEG_SCALE: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    HEAVY_FIRST: tl.constexpr,  # causal: launch the query tiles that see the most keys first
    VARLEN: tl.constexpr,  # packed sequences: lengths and offsets from cu_seqlens
    PACK_GQA: tl.constexpr,  # rows of a tile are (query head of the group, query): decoding
    SPLIT: tl.constexpr,  # program_id(2) picks a slice of the keys (flash-decoding)
    BLOCK_M: tl.constexpr,  # query rows per program
    BLOCK_N: tl.constexpr,  # keys per inner step
):
    # Causal programs get very different amounts of work (the last query tile sees all
    # keys, the first only one tile); launch the heavy ones first so the light ones fill
    # the gaps at the end of the grid instead of leaving a long tail.
    pid_m = tl.program_id(0)
    if HEAVY_FIRST:
        pid_m = tl.num_programs(0) - 1 - pid_m
    bh = tl.program_id(1)
    if PACK_GQA:  # one program per (batch, K/V head): its `group` query heads share every K/V tile
        batch = bh // (n_heads // group)
        kv_head = bh % (n_heads // group)
    else:
        batch = bh // n_heads
        head = bh % n_heads
        kv_head = head // group  # GQA/MQA: consecutive query heads share one K/V head, no copies
    # 64-bit offsets to this (batch, sequence): a KV cache may hold 2^31 elements or more.
    q_base = q_ptr + batch.to(tl.int64) * stride_qb
    o_base = o_ptr + batch.to(tl.int64) * stride_ob
    lse_base = lse_ptr + batch.to(tl.int64) * stride_lb
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    # sequence `batch` is rows [start, start + length) of the packed tensors (dense: 0, Nq / Nk)
    q_start, seqlen_q, k_start, seqlen_k = sequence_bounds(cu_seqlens_q_ptr, cu_seqlens_k_ptr, batch,
                                                           n_q, n_k, VARLEN)
    q_base += q_start * stride_qn
    o_base += q_start * stride_on
    lse_base += q_start * stride_ln
    k_base += k_start * stride_kn
    v_base += k_start * stride_vn
    if PACK_GQA:
        rows = seqlen_q * group
    else:
        rows = seqlen_q
    if pid_m * BLOCK_M >= rows:  # a packed batch's shorter sequences need fewer query tiles
        return

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    row_valid = offs_m < rows
    if PACK_GQA:
        member = offs_m // seqlen_q  # which query head of the group this row belongs to
        q_idx = offs_m - member * seqlen_q
        first_row = tl.min(tl.where(row_valid, q_idx, seqlen_q), 0)
        last_row = tl.max(tl.where(row_valid, q_idx, 0), 0)
        q_rows = (kv_head * group + member) * stride_qh + q_idx * stride_qn  # where each row starts
    else:
        q_idx = offs_m
        first_row = pid_m * BLOCK_M
        last_row = tl.minimum(first_row + BLOCK_M, seqlen_q) - 1
        q_base += head.to(tl.int64) * stride_qh
        o_base += head.to(tl.int64) * stride_oh
        lse_base += head.to(tl.int64) * stride_lh
        q_rows = q_idx * stride_qn

    q = tl.load(q_base + q_rows[:, None] + offs_d[None, :] * stride_qd,
                mask=row_valid[:, None] & d_mask[None, :], other=0.0)  # read BLOCK_M x D once
    if UPCAST_DOT:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max, log2 units
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp2(s - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running sum of P V

    shift = lower_right * (seqlen_k - seqlen_q)
    lo, full_lo, full_hi, hi = visible_ranges(first_row, last_row, seqlen_k, shift,
                                              window_left, window_right, BLOCK_N)
    if SPLIT:  # this program's share of the keys; keys_per_split keeps tiles whole
        split = tl.program_id(2)
        split_lo = split * keys_per_split
        split_hi = split_lo + keys_per_split
        lo = tl.maximum(lo, split_lo)
        hi = tl.maximum(tl.minimum(hi, split_hi), lo)
        full_lo = tl.minimum(tl.maximum(full_lo, lo), hi)
        full_hi = tl.maximum(tl.minimum(full_hi, hi), full_lo)
        o_base += split.to(tl.int64) * stride_o_split
        lse_base += split.to(tl.int64) * stride_lse_split
    # The bulk of the work first: whole tiles every row sees, no masks. Then, in one loop (the
    # online softmax does not care about the order of the tiles), the tiles on the mask's
    # edges: a window's left edge, the causal diagonal or a window's right edge, the ragged end.
    acc, m_i, l_i = attention_tile_loop(
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
        lo, full_lo, full_hi, hi, q_idx, seqlen_k, shift, window_left, window_right, qk_scale,
        False, HEAD_DIM, BLOCK_D, BLOCK_N, NEG_SCALE, UPCAST_DOT, DOT_PRECISION)
    acc, m_i, l_i = attention_tile_loop(
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
        lo, full_lo, full_hi, hi, q_idx, seqlen_k, shift, window_left, window_right, qk_scale,
        True, HEAD_DIM, BLOCK_D, BLOCK_N, NEG_SCALE, UPCAST_DOT, DOT_PRECISION)

    # ---- epilogue: normalise, write O and the logsumexp -------------- write BLOCK_M x D + BLOCK_M
    # A row that saw no key (l = 0, m = -inf) gets O = 0 and lse = -inf, never 0/0.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = (m_i + tl.math.log2(l_safe)) * LN2  # log2 domain -> natural log
    # Row offsets recomputed here, not kept in registers through the loops: at 8 warps, 128
    # registers a thread is the line between two programs per SM and one.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = offs_m < rows
    if PACK_GQA:
        member = offs_m // seqlen_q
        head_rows = kv_head * group + member
        o_rows = head_rows * stride_oh + (offs_m - member * seqlen_q) * stride_on
        lse_rows = head_rows * stride_lh + (offs_m - member * seqlen_q) * stride_ln
    else:
        o_rows = offs_m * stride_on
        lse_rows = offs_m * stride_ln
    tl.store(lse_base + lse_rows, lse, mask=row_valid)
    tl.store(o_base + o_rows[:, None] + offs_d[None, :] * stride_od, out.to(o_ptr.dtype.element_ty),
             mask=row_valid[:, None] & (offs_d[None, :] < HEAD_DIM))


@triton.jit
def merge_splits_kernel(
    o_part_ptr, lse_part_ptr,  # fp32 partial results, one per key split: o (S, ...D), lse (S, ...)
    o_ptr, lse_ptr,  # the merged output (like q) and lse
    stride_pb, stride_ph, stride_pn, stride_pd, stride_p_split,  # partial o strides
    stride_plb, stride_plh, stride_pln, stride_pl_split,  # partial lse strides
    stride_ob, stride_oh, stride_on, stride_od,
    stride_lb, stride_lh, stride_ln,
    n_heads, n_rows, num_splits,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    # The merge is the online softmax once more, over splits instead of keys: each split's
    # output is weighted by exp(lse_split - lse), lse = logsumexp over the splits.
    bh = tl.program_id(1)
    batch = bh // n_heads
    head = bh % n_heads
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_valid = offs_m < n_rows
    mask = row_valid[:, None] & (offs_d[None, :] < HEAD_DIM)
    p_rows = batch.to(tl.int64) * stride_pb + head.to(tl.int64) * stride_ph + offs_m * stride_pn
    pl_rows = batch.to(tl.int64) * stride_plb + head.to(tl.int64) * stride_plh + offs_m * stride_pln
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for split in range(0, num_splits):
        lse_s = tl.load(lse_part_ptr + split * stride_pl_split + pl_rows, mask=row_valid,
                        other=float("-inf"))  # read BLOCK_M
        o_s = tl.load(o_part_ptr + split * stride_p_split + p_rows[:, None] + offs_d[None, :] * stride_pd,
                      mask=mask, other=0.0)  # read BLOCK_M x D
        m_new = tl.maximum(m, lse_s)
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_sub)
        weight = tl.exp(lse_s - m_sub)
        total = total * alpha + weight
        acc = acc * alpha[:, None] + weight[:, None] * o_s
        m = m_new
    total_safe = tl.where(total == 0.0, 1.0, total)
    lse = m + tl.log(total_safe)  # -inf where no split saw a key
    tl.store(lse_ptr + batch.to(tl.int64) * stride_lb + head.to(tl.int64) * stride_lh + offs_m * stride_ln,
             lse, mask=row_valid)
    tl.store(o_ptr + batch.to(tl.int64) * stride_ob + head.to(tl.int64) * stride_oh
             + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
             (acc / total_safe[:, None]).to(o_ptr.dtype.element_ty), mask=mask)


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
# dQ for query block i sums over ALL key blocks. One loop order can own only
# one of the two reductions. FlashAttention-2 (Dao 2023, section 3.2) loops over
# key blocks and adds each tile's dQ share into an fp32 buffer with atomic adds.
# We give dQ a pass of its own, as Triton's fused-attention tutorial does
# (there both passes live in one launch):
#
#     kernel 1   for each query block i (one program):         -> dQ_i, written once
#                    delta_i = rowsum(dO_i * O_i)                 (also stored, for kernel 2)
#                    for each key block j it sees: recompute P_ij, dS_ij; dQ_i += dS K_j
#     kernel 2   for each key block j (one program):           -> dK_j, dV_j, written once
#                    for each query block i (and each query head sharing this K/V head):
#                        recompute P_ij^T; dV_j += P^T dO_i; dS^T = P^T * (V dO^T - delta)
#                        dK_j += dS^T Q_i
#
# Two products per tile more than the atomic scheme (Q K^T and dO V^T are computed
# in both kernels), but every output is written once, with no zeroed fp32 buffer,
# no conversion pass, and the same bits on every run (the order of atomic float
# additions changes from run to run). `dq_atomic=True` runs FlashAttention-2's
# scheme (relaxed fp32 atomics from kernel 2) for comparison; the post has both timed.
#
# Masks work as in the forward, read from the other side: a key block sees only the
# query rows whose window contains it, so kernel 2's query loop covers just those rows
# and masks only the tiles on the edges; fully masked tiles are never loaded.
# ----------------------------------------------------------------------------- backward: kernels
@triton.jit
def _bwd_dkdv_tile(
    dk, dv,  # (BLOCK_N, BLOCK_D) fp32 accumulators of this key block
    k, v,  # (BLOCK_N, BLOCK_D) this key block, loaded once by the caller
    q_base, do_base, lse_base, delta_base,  # pointers to query 0 of this query head (64-bit offsets in)
    dq_acc_base,  # DQ_ATOMIC: fp32 dQ accumulator of this query head, rows of BLOCK_D
    stride_qn, stride_qd, stride_don, stride_dod, stride_ln,
    offs_n, offs_d,  # key indices of this block, head-dim lanes
    start_m, seqlen_q, seqlen_k, shift, window_left, window_right,
    scale, qk_scale,  # c, and c * log2(e): S in base-2 units
    MASKED: tl.constexpr,  # a tile on a window edge, the causal diagonal or a ragged end
    DQ_ATOMIC: tl.constexpr,  # also add this tile's dQ share into dq_acc (the fused variant)
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr,  # operand type of tl.dot (fp32 in the interpreter for bf16)
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    # One (BLOCK_M queries) x (BLOCK_N keys) tile, computed transposed (keys on
    # rows) so that the results land directly in dK and dV's layout.
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q_ptrs = q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    do_ptrs = do_base + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod
    d_in = offs_d < HEAD_DIM
    m_in = offs_m < seqlen_q
    if MASKED:
        q = tl.load(q_ptrs, mask=m_in[:, None] & d_in[None, :], other=0.0)  # read BLOCK_M x D
        do = tl.load(do_ptrs, mask=m_in[:, None] & d_in[None, :], other=0.0)  # read BLOCK_M x D
        lse = tl.load(lse_base + offs_m * stride_ln, mask=m_in, other=0.0)
        delta = tl.load(delta_base + offs_m * stride_ln, mask=m_in, other=0.0)
    else:  # whole rows inside the sequence: no row mask
        if HEAD_DIM == BLOCK_D:
            q = tl.load(q_ptrs)
            do = tl.load(do_ptrs)
        else:
            q = tl.load(q_ptrs, mask=d_in[None, :], other=0.0)
            do = tl.load(do_ptrs, mask=d_in[None, :], other=0.0)
        lse = tl.load(lse_base + offs_m * stride_ln)
        delta = tl.load(delta_base + offs_m * stride_ln)
    q = q.to(DOT_DTYPE)
    do = do.to(DOT_DTYPE)
    s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M) = K Q^T
    p_t = tl.math.exp2(s_t * qk_scale - lse[None, :] * LOG2E)  # P^T, recomputed from the saved lse
    if MASKED:
        # Padded keys and rows, and pairs outside the window, get P = 0 before anything uses P
        # (a padded key's exp2(0 - lse) can overflow, and inf * 0 would poison dQ).
        visible = ((offs_n[:, None] >= (offs_m + shift - window_left)[None, :])
                   & (offs_n[:, None] <= (offs_m + shift + window_right)[None, :])
                   & (offs_n[:, None] < seqlen_k) & m_in[None, :])
        p_t = tl.where(visible, p_t, 0.0)
    dv += tl.dot(p_t.to(DOT_DTYPE), do, input_precision=DOT_PRECISION)  # dV += P^T dO
    dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # dP^T = V dO^T
    ds_t = p_t * (dp_t - delta[None, :])  # dS^T (the scale is applied once, at the end)
    dk += tl.dot(ds_t.to(DOT_DTYPE), q, input_precision=DOT_PRECISION)  # dK += dS^T Q
    if DQ_ATOMIC:  # the fused variant: dQ_i += c * dS K, added by every key block in turn
        dq = tl.dot(tl.trans(ds_t.to(DOT_DTYPE)), k, input_precision=DOT_PRECISION)
        tl.atomic_add(dq_acc_base + offs_m[:, None] * BLOCK_D + offs_d[None, :], dq * scale,
                      mask=m_in[:, None] & d_in[None, :], sem="relaxed")  # read + write BLOCK_M x D fp32
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr,  # q, dO (B, H, Nq, D); k, v (B, Hkv, Nk, D); packed: (tokens, heads, D)
    lse_ptr, delta_ptr,  # (B, H, Nq) fp32, lse's strides: forward's lse, rowsum(dO * O)
    dk_ptr, dv_ptr,  # out, like k
    dq_acc_ptr,  # DQ_ATOMIC: (B, H, Nq, BLOCK_D) fp32, zeroed; unused otherwise
    cu_seqlens_q_ptr, cu_seqlens_k_ptr,  # VARLEN: (B + 1,) int32
    stride_dob, stride_doh, stride_don, stride_dod,  # dO's first: it comes in whatever layout
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_lb, stride_lh, stride_ln,
    n_heads, group, n_q, n_k,  # H, H // Hkv, Nq, Nk (VARLEN: the longest)
    scale, qk_scale,  # softmax scale c, and c * log2(e)
    window_left, window_right, lower_right,  # the visibility rule of the forward
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    VARLEN: tl.constexpr,
    DQ_ATOMIC: tl.constexpr,  # fuse dQ in here with atomics (the variant we measure against)
    BLOCK_M: tl.constexpr,  # query rows per step of the inner loop
    BLOCK_N: tl.constexpr,  # keys owned by one program
):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)  # (batch, K/V head)
    kv_heads = n_heads // group
    batch = bh // kv_heads
    kv_head = bh % kv_heads
    q_base0 = q_ptr + batch.to(tl.int64) * stride_qb
    do_base0 = do_ptr + batch.to(tl.int64) * stride_dob
    lse_base0 = lse_ptr + batch.to(tl.int64) * stride_lb
    delta_base0 = delta_ptr + batch.to(tl.int64) * stride_lb
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    dk_base = dk_ptr + batch.to(tl.int64) * stride_dkb + kv_head.to(tl.int64) * stride_dkh
    dv_base = dv_ptr + batch.to(tl.int64) * stride_dvb + kv_head.to(tl.int64) * stride_dvh
    q_start, seqlen_q, k_start, seqlen_k = sequence_bounds(cu_seqlens_q_ptr, cu_seqlens_k_ptr, batch,
                                                           n_q, n_k, VARLEN)
    q_base0 += q_start * stride_qn
    do_base0 += q_start * stride_don
    lse_base0 += q_start * stride_ln
    delta_base0 += q_start * stride_ln
    k_base += k_start * stride_kn
    v_base += k_start * stride_vn
    dk_base += k_start * stride_dkn
    dv_base += k_start * stride_dvn
    start_n = pid_n * BLOCK_N
    if start_n >= seqlen_k:  # a packed batch's shorter sequences need fewer key blocks
        return

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (offs_n[:, None] < seqlen_k) & (offs_d[None, :] < HEAD_DIM)
    k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
    v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
    k = k.to(DOT_DTYPE)  # read BLOCK_N x D of K and of V, once for the whole program
    v = v.to(DOT_DTYPE)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)

    # The query rows that see some key of this block, and those that see all of it: the forward's
    # rule read from the keys' side (query i sees key j iff j - shift - right <= i <= j - shift + left).
    shift = lower_right * (seqlen_k - seqlen_q)
    last_key = tl.minimum(start_n + BLOCK_N, seqlen_k) - 1
    lo, full_lo, full_hi, hi = visible_ranges(start_n, last_key, seqlen_q, -shift,
                                              window_right, window_left, BLOCK_M)
    if start_n + BLOCK_N > seqlen_k:  # a ragged last block: every tile masks its padded keys
        full_lo = hi
        full_hi = hi

    for g in range(0, group):  # GQA: sum over the query heads sharing this K/V head
        head = (kv_head * group + g).to(tl.int64)
        q_base = q_base0 + head * stride_qh
        do_base = do_base0 + head * stride_doh
        lse_base = lse_base0 + head * stride_lh
        delta_base = delta_base0 + head * stride_lh
        dq_acc_base = dq_acc_ptr + ((batch.to(tl.int64) * n_heads + head) * n_q) * BLOCK_D
        for start_m in range(full_lo, full_hi, BLOCK_M):  # rows that see the whole block: no masks
            dk, dv = _bwd_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_acc_base,
                                    stride_qn, stride_qd, stride_don, stride_dod, stride_ln,
                                    offs_n, offs_d, start_m, seqlen_q, seqlen_k, shift,
                                    window_left, window_right, scale, qk_scale,
                                    False, DQ_ATOMIC, HEAD_DIM, BLOCK_D, DOT_DTYPE, DOT_PRECISION, BLOCK_M)
        for tile in range(0, edge_tiles(lo, full_lo, full_hi, hi, BLOCK_M)):  # both edges, masked
            dk, dv = _bwd_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_acc_base,
                                    stride_qn, stride_qd, stride_don, stride_dod, stride_ln,
                                    offs_n, offs_d, edge_tile(tile, lo, full_lo, full_hi, BLOCK_M),
                                    seqlen_q, seqlen_k, shift, window_left, window_right, scale, qk_scale,
                                    True, DQ_ATOMIC, HEAD_DIM, BLOCK_D, DOT_DTYPE, DOT_PRECISION, BLOCK_M)

    dk *= scale  # dK = c * dS^T Q: the scale once per element, not once per tile
    tl.store(dk_base + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             dk.to(dk_ptr.dtype.element_ty), mask=kv_mask)  # write BLOCK_N x D
    tl.store(dv_base + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)  # write BLOCK_N x D


@triton.jit
def _bwd_dq_tile(
    dq,  # (BLOCK_M, BLOCK_D) fp32 accumulator of this query block
    q, do, lse2, delta,  # this query block: q and dO (BLOCK_M, BLOCK_D), base-2 lse and delta (BLOCK_M,)
    k_base, v_base,  # pointers to key 0 of the K/V head (64-bit offsets in)
    stride_kn, stride_kd, stride_vn, stride_vd,
    offs_m, offs_d,
    start_n, seqlen_k, shift, window_left, window_right,
    qk_scale,
    MASKED: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    k_ptrs = k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    d_in = offs_d < HEAD_DIM
    if MASKED:
        n_in = offs_n < seqlen_k
        k = tl.load(k_ptrs, mask=n_in[:, None] & d_in[None, :], other=0.0)  # read BLOCK_N x D
        v = tl.load(v_ptrs, mask=n_in[:, None] & d_in[None, :], other=0.0)  # read BLOCK_N x D
    elif HEAD_DIM == BLOCK_D:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    else:
        k = tl.load(k_ptrs, mask=d_in[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=d_in[None, :], other=0.0)
    k = k.to(DOT_DTYPE)
    v = v.to(DOT_DTYPE)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) = Q K^T
    p = tl.math.exp2(s * qk_scale - lse2[:, None])
    if MASKED:
        visible = ((offs_n[None, :] >= (offs_m + shift - window_left)[:, None])
                   & (offs_n[None, :] <= (offs_m + shift + window_right)[:, None])
                   & (offs_n[None, :] < seqlen_k))
        p = tl.where(visible, p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)  # dP = dO V^T
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(DOT_DTYPE), k, input_precision=DOT_PRECISION)  # dQ += dS K
    return dq


@triton.jit
def _bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, do_ptr,  # q, o, dO (B, H, Nq, D); k, v (B, Hkv, Nk, D); packed: (tokens, heads, D)
    lse_ptr, delta_ptr,  # (B, H, Nq) fp32, lse's strides: lse in, delta = rowsum(dO * O) out
    dq_ptr,  # out, like q
    cu_seqlens_q_ptr, cu_seqlens_k_ptr,
    stride_ob, stride_oh, stride_on, stride_od,  # O and dO first: they come in whatever layout
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    stride_lb, stride_lh, stride_ln,
    n_heads, group, n_q, n_k,
    qk_scale, scale,
    window_left, window_right, lower_right,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    VARLEN: tl.constexpr,
    BLOCK_M: tl.constexpr,  # query rows owned by one program
    BLOCK_N: tl.constexpr,  # keys per step of the inner loop
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)  # (batch, query head)
    batch = bh // n_heads
    head = bh % n_heads
    kv_head = head // group
    q_base = q_ptr + batch.to(tl.int64) * stride_qb + head.to(tl.int64) * stride_qh
    o_base = o_ptr + batch.to(tl.int64) * stride_ob + head.to(tl.int64) * stride_oh
    do_base = do_ptr + batch.to(tl.int64) * stride_dob + head.to(tl.int64) * stride_doh
    dq_base = dq_ptr + batch.to(tl.int64) * stride_dqb + head.to(tl.int64) * stride_dqh
    lse_base = lse_ptr + batch.to(tl.int64) * stride_lb + head.to(tl.int64) * stride_lh
    delta_base = delta_ptr + batch.to(tl.int64) * stride_lb + head.to(tl.int64) * stride_lh
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    q_start, seqlen_q, k_start, seqlen_k = sequence_bounds(cu_seqlens_q_ptr, cu_seqlens_k_ptr, batch,
                                                           n_q, n_k, VARLEN)
    q_base += q_start * stride_qn
    o_base += q_start * stride_on
    do_base += q_start * stride_don
    dq_base += q_start * stride_dqn
    lse_base += q_start * stride_ln
    delta_base += q_start * stride_ln
    k_base += k_start * stride_kn
    v_base += k_start * stride_vn
    start_m = pid_m * BLOCK_M
    if start_m >= seqlen_q:
        return

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_in = offs_m < seqlen_q
    q_mask = m_in[:, None] & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=q_mask, other=0.0)
    do = tl.load(do_base + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=q_mask, other=0.0)
    o = tl.load(o_base + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od, mask=q_mask, other=0.0)
    # delta_i = rowsum(dO * O)_i, for this kernel and for the dK/dV kernel launched after it
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)  # read BLOCK_M x D of O, once
    tl.store(delta_base + offs_m * stride_ln, delta, mask=m_in)
    lse2 = tl.load(lse_base + offs_m * stride_ln, mask=m_in, other=0.0) * LOG2E
    q = q.to(DOT_DTYPE)  # read BLOCK_M x D of Q and of dO, once
    do = do.to(DOT_DTYPE)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    shift = lower_right * (seqlen_k - seqlen_q)
    last_row = tl.minimum(start_m + BLOCK_M, seqlen_q) - 1
    lo, full_lo, full_hi, hi = visible_ranges(start_m, last_row, seqlen_k, shift,
                                              window_left, window_right, BLOCK_N)
    for start_n in range(full_lo, full_hi, BLOCK_N):  # keys every row sees: no masks
        dq = _bwd_dq_tile(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                          offs_m, offs_d, start_n, seqlen_k, shift, window_left, window_right, qk_scale,
                          False, HEAD_DIM, BLOCK_D, DOT_DTYPE, DOT_PRECISION, BLOCK_N)
    for tile in range(0, edge_tiles(lo, full_lo, full_hi, hi, BLOCK_N)):  # both edges, masked
        dq = _bwd_dq_tile(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                          offs_m, offs_d, edge_tile(tile, lo, full_lo, full_hi, BLOCK_N), seqlen_k, shift,
                          window_left, window_right, qk_scale,
                          True, HEAD_DIM, BLOCK_D, DOT_DTYPE, DOT_PRECISION, BLOCK_N)
    dq *= scale
    tl.store(dq_base + offs_m[:, None] * stride_dqn + offs_d[None, :] * stride_dqd,
             dq.to(dq_ptr.dtype.element_ty), mask=q_mask)  # write BLOCK_M x D


@triton.jit
def _bwd_preprocess_kernel(
    o_ptr, do_ptr,  # (B, H, Nq, D) forward output and its incoming gradient
    delta_ptr,  # (B, H, Nq) float32 out: rowsum(dO * O); the fused atomic variant needs it first
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_lb, stride_lh, stride_ln,
    n_heads, n_q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    bh = tl.program_id(1)
    batch = (bh // n_heads).to(tl.int64)
    head = (bh % n_heads).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < n_q) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(o_ptr + batch * stride_ob + head * stride_oh
                + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od, mask=mask, other=0.0)
    do = tl.load(do_ptr + batch * stride_dob + head * stride_doh
                 + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)  # read 2 x BLOCK_M x D, write BLOCK_M
    tl.store(delta_ptr + batch * stride_lb + head * stride_lh + offs_m * stride_ln, delta, mask=offs_m < n_q)


# ----------------------------------------------------------------------------- configurations
# A "config" is (BLOCK_M, BLOCK_N, num_warps, num_stages), chosen on the host from the
# problem's shape, once per layout (see AttentionPlan). Measured on an H100 (fp16,
# B=4 H=32, N 1024-16384; results/tune1.log, tune2.log): 128-row tiles with 8 warps (two
# warpgroups of 64 rows, each on its own wgmma) and 3 pipeline stages win almost
# everywhere; 128-key tiles help D=128 at long lengths; 64 x 64 tiles with 4 warps win
# when 128-row tiles would leave too few programs to fill the GPU. No autotuner runs
# inside a call: its dispatch costs host time on every call, and its benchmarking would
# run the kernel on the caller's own buffers. `tune_forward.py` re-measures the choices.
#
# What did not help (measured on the H100 in the same runs, beside SDPA; notes/gpu_log.md,
# results/tune1.log and tune2.log; `tune_forward.py --stage 1/2` re-runs them from commit
# 1008836, which still has their code):
#   * Tensor descriptors (TMA, device-side tl.make_tensor_descriptor, one (N, D) descriptor
#     per (batch, head)): correct, but slower than plain pointer loads (which Triton already
#     turns into cp.async pipelines) in all 12 shapes, best config against best, e.g. D=128 N=16384: 456 vs 494 TFLOP/s.
#   * "Lazy" rescaling (skip acc *= alpha unless a row max grew by > 2^8): 5-25% slower.
#   * Hand-pipelining S = Q K^T of tile j+1 before the softmax of tile j: Triton still waits
#     for each wgmma at once (wait_group 0), so nothing overlaps: 5-30% slower.
#   * 256-row tiles with 16 warps: within noise of 128 x 64 at best.
NUM_SMS = torch.cuda.get_device_properties(0).multi_processor_count if shared.HAS_GPU else 132
INTERPRETER_CONFIG = (16, 16, 4, 1)  # the interpreter's cost grows with tile size


def forward_config(block_d, dtype, rows, n_k, row_programs):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of the forward kernel.

    ``rows``: query rows per program column (Nq, or Nq x group when query heads are packed);
    ``row_programs``: how many such columns there are (batch x heads, or batch x K/V heads).
    """
    if shared.INTERPRETER:
        return INTERPRETER_CONFIG
    if rows <= 16:  # decoding: one query row (or a few) against many keys; memory-bound
        return (16, 128 if block_d <= 64 else 64 if block_d <= 128 else 32, 4, 3)
    if dtype == torch.float32 or block_d > 128:  # twice the bytes per element, or per row
        return (64, 32, 4, 2)
    if rows <= 64:
        return (64, 64, 4, 2)
    tiles_128 = triton.cdiv(rows, 128) * row_programs  # programs if the tiles had 128 rows
    if block_d <= 64:
        return (64, 64, 4, 3) if tiles_128 < 2 * NUM_SMS else (128, 64, 8, 3)
    if tiles_128 < 8 * NUM_SMS:  # D=128: 64-row tiles until there are 8 waves of 128-row ones
        return (64, 64, 4, 3)
    return (128, 128, 8, 3) if n_k >= 8192 else (128, 64, 8, 3)


def split_count(programs, n_k, block_n):
    """How many slices of the keys each query tile is split into (flash-decoding).

    A decoding step has one query row per sequence: batch x K/V heads programs, far fewer
    than the GPU has SMs, each streaming all of a long KV cache. Splitting the keys over
    more programs, and merging their partial results by log-sum-exp, fills the GPU.
    """
    if programs >= NUM_SMS or n_k < max(2048, 8 * block_n):  # short rows: the extra launch would cost more
        return 1
    return max(1, min(triton.cdiv(2 * NUM_SMS, programs), n_k // (4 * block_n)))  # >= 4 tiles a split


# Backward tile sizes and launch settings, by padded head dim:
#   (BLOCK_M1, BLOCK_N1, warps1, stages1,   the dK/dV kernel: a program owns BLOCK_N1 keys
#    BLOCK_M2, BLOCK_N2, warps2, stages2)   the dQ kernel: a program owns BLOCK_M2 queries
# A dK/dV program keeps K, V, dK and dV (4 x BLOCK_N1 x D) on chip, so a larger D needs
# smaller blocks. From the H100 sweep (fp16, B=4 H=32 N=4096, causal and not;
# results/backward_sweep.json, `python tune_backward.py`): D=64: 128 keys per dK/dV
# program in 4 warps (8 warps: -25%; BLOCK_M1=64 with 4 warps spills: 4x slower), dQ:
# 128 queries in 8 warps. D=128: 64 x 64 tiles in 4 warps for both kernels.
BWD_CONFIGS = {
    16: (32, 128, 4, 4, 128, 32, 8, 3),
    32: (32, 128, 4, 4, 128, 32, 8, 3),
    64: (32, 128, 4, 4, 128, 32, 8, 3),
    128: (64, 64, 4, 2, 64, 64, 4, 2),
    256: (16, 64, 8, 1, 64, 16, 8, 1),  # correct on the H100 (tests), not tuned
}
BWD_FP32_CONFIG = (32, 64, 4, 1, 64, 32, 4, 1)  # fp32 (for checking): twice the bytes, smaller tiles
BWD_INTERPRETER_CONFIG = (16, 32, 4, 1, 32, 16, 4, 1)


def backward_config(block_d, dtype):
    """(BLOCK_M1, BLOCK_N1, warps1, stages1, BLOCK_M2, BLOCK_N2, warps2, stages2) for a padded D."""
    if shared.INTERPRETER:
        return BWD_INTERPRETER_CONFIG
    return BWD_FP32_CONFIG if dtype == torch.float32 else BWD_CONFIGS[block_d]


# ----------------------------------------------------------------------------- launching
# What one call costs before the GPU starts matters as much as the kernel when a model
# calls attention on short sequences: Triton's `kernel[grid](...)` binds ~50 arguments,
# computes their specialisation key and looks the binary up, ~10 us a launch. A launcher
# below does that once per argument "variant" and then calls the compiled binary directly.
FAST_LAUNCH = not shared.INTERPRETER  # a switch, so the benchmark can measure what it saves


class KernelLauncher:
    """One kernel with fixed compile-time arguments and grid, launched as cheaply as Triton allows.

    The first call of each ``variant`` goes through Triton (``kernel[grid](...)``): it
    compiles or finds the binary specialised for these arguments (integers equal to 1 or
    divisible by 16, pointers aligned to 16 bytes). Later calls with the same variant -
    the caller's promise that those properties did not change - call that binary directly.
    """

    def __init__(self, kernel, grid, meta):
        self.kernel, self.grid, self.meta = kernel, grid, meta
        self.binaries = {}

    def __call__(self, variant, *args):
        binary = self.binaries.get(variant) if FAST_LAUNCH else None
        if binary is None:
            compiled = self.kernel[self.grid](*args, **self.meta)
            if FAST_LAUNCH and not _launch_hooks():
                names = self.kernel.arg_names[len(args):]  # the compile-time arguments, in order
                stream = triton.runtime.driver.active.get_current_stream  # what Triton itself calls
                self.binaries[variant] = (compiled.run, compiled.function, compiled.packed_metadata,
                                          tuple(self.meta[n] for n in names), stream)
            return
        run, function, metadata, constants, stream = binary
        run(*self.grid, stream(args[0].device.index), function, metadata, None, None, None, *args, *constants)


def _launch_hooks():
    """Launch hooks someone installed in Triton (its profiler does): then launch through Triton.

    Triton 3.6 keeps an empty HookChain there by default, not None; Triton 3.8, None.
    """
    hook = triton.knobs.runtime.launch_enter_hook
    return hook is not None and bool(getattr(hook, "calls", True))


def _aligned(*tensors):
    """True when every tensor's data starts on a 16-byte boundary (what Triton specialises on)."""
    return not any(t.data_ptr() & 15 for t in tensors)


def _layout_like(t, shape, dtype):
    """An empty tensor of `shape` laid out like `t`: (B, N, H, D) memory if t is such a view.

    Models project q, k, v as (B, N, H, D) and view them as (B, H, N, D); giving the output
    (and the gradients) the same memory order makes the model's transpose back free, as SDPA does.
    """
    return torch.empty_strided(shape, _like_strides(t), dtype=dtype, device=t.device)


def _check_window(window):
    """(left, right) as the kernels take them: UNBOUNDED for -1 or no window."""
    if window is None:
        return UNBOUNDED, UNBOUNDED
    if not isinstance(window, (tuple, list)) or len(window) != 2 or any(
            isinstance(w, bool) or not isinstance(w, int) for w in window):
        raise TypeError(f"window must be a pair of ints (left, right), -1 for unbounded, got {window!r}")
    if min(window) < -1:
        raise ValueError(f"window sides must be >= -1 (-1: unbounded), got {tuple(window)}")
    left, right = window
    return (UNBOUNDED if left == -1 else left), (UNBOUNDED if right == -1 else right)


class AttentionPlan:
    """Everything about a call that depends only on shapes, strides, dtype and flags.

    Built (and the inputs checked) once per such combination, then looked up: the hot path
    of a call is a dictionary lookup, the allocations and the launches, with every argument
    that does not change between calls packed into a tuple here.
    Tensors are described in one (batch, head, position, dim) convention: a packed batch
    (varlen) has batch stride 0 and its sequences' offsets in cu_seqlens.
    """

    def __init__(self, q, k, v, causal, scale, window, varlen=None, config=None, num_splits=None):
        if varlen is None:
            self.scale = shared.check_attention_inputs(q, k, v, scale, allow_gqa=True, min_head_dim=16,
                                                       max_head_dim=256, offsets64=True, differentiable=True)
            batch, heads, n_q, head_dim = q.shape
            kv_heads, n_k = k.shape[1], k.shape[2]
            self.q_strides, self.k_strides, self.v_strides = q.stride(), k.stride(), v.stride()
            self.o_shape, self.lse_shape = tuple(q.shape), (batch, heads, n_q)
            self.lse_strides = (heads * n_q, n_q, 1)
            # outputs laid out like their inputs: (B, N, H, D) memory for (B, N, H, D) views
            self.alloc_strides = (_like_strides(q), _like_strides(k), _like_strides(v))  # o/dq, dk, dv
            self.o_strides = self.dq_strides = self.alloc_strides[0]  # as the kernels take them
            self.dk_strides, self.dv_strides = self.alloc_strides[1:]
        else:
            batch, n_q, n_k = varlen  # (sequences, longest query sequence, longest key sequence)
            self.scale = check_varlen_inputs(q, k, v, scale, n_q, n_k)
            heads, head_dim, kv_heads = q.shape[1], q.shape[2], k.shape[1]
            self.q_strides, self.k_strides, self.v_strides = _packed(q.stride()), _packed(k.stride()), \
                _packed(v.stride())
            self.o_shape, self.lse_shape = tuple(q.shape), (heads, q.shape[0])
            self.lse_strides = (0, q.shape[0], 1)
            self.alloc_strides = (_like_strides(q), _like_strides(k), _like_strides(v))  # o/dq, dk, dv
            self.o_strides = self.dq_strides = _packed(self.alloc_strides[0])  # as the kernels take them
            self.dk_strides, self.dv_strides = (_packed(t) for t in self.alloc_strides[1:])
        self.varlen = varlen is not None
        self.alignment = shared.check_causal(causal, lower_right=True)
        self.window_left, self.window_right = _check_window(window)
        if self.alignment:  # causal: the right edge is the diagonal (or tighter)
            self.window_right = min(self.window_right, 0)
        self.lower_right = int(self.alignment == "lower_right")
        self.batch, self.heads, self.kv_heads, self.group = batch, heads, kv_heads, heads // max(kv_heads, 1)
        self.n_q, self.n_k, self.head_dim = n_q, n_k, head_dim
        self.block_d = max(16, triton.next_power_of_2(head_dim))
        self.dtype, self.device = q.dtype, q.device
        self.shapes = (tuple(q.shape), tuple(k.shape), tuple(v.shape))
        self.qk_scale = self.scale * LOG2E.value
        self.empty = min(batch, heads, n_q) == 0
        self.no_keys = n_k == 0
        shared.check_grid_rows(batch, heads)
        # The interpreter computes tl.dot on bf16 operands wrongly (Triton 3.6 and 3.8): there,
        # and only there, bf16 tiles are widened to fp32 first. fp32 inputs get exact fp32
        # products ("ieee", not TF32): fp32 is for checking, so exactness wins.
        upcast = shared.INTERPRETER and q.dtype == torch.bfloat16
        self.precision = "ieee" if (q.dtype == torch.float32 or upcast) else "tf32"
        self.dot_dtype = tl.float32 if (q.dtype == torch.float32 or upcast) else \
            (tl.float16 if q.dtype == torch.float16 else tl.bfloat16)
        self._plan_forward(upcast, config, num_splits)
        self._backward = None  # planned on the first backward call

    # ---- forward
    def _plan_forward(self, upcast, config, num_splits):
        # Decoding with GQA: the `group` query heads of one K/V head become the rows of one tile,
        # so each K/V tile is read once for all of them instead of once per query head.
        pack = self.group > 1 and self.n_q * self.group <= 64
        rows = self.n_q * self.group if pack else self.n_q
        row_programs = self.batch * (self.kv_heads if pack else self.heads)
        block_m, block_n, warps, stages = config or forward_config(self.block_d, self.dtype, rows, self.n_k,
                                                                     row_programs)
        if pack and rows > block_m:  # a given config too small for the group's rows: no packing
            pack, rows, row_programs = False, self.n_q, self.batch * self.heads
        programs = triton.cdiv(rows, block_m) * row_programs
        splits = num_splits or split_count(programs, self.n_k, block_n)
        keys_per_split = triton.cdiv(triton.cdiv(max(self.n_k, 1), splits), block_n) * block_n
        splits = triton.cdiv(max(self.n_k, 1), keys_per_split)
        self.splits, self.keys_per_split, self.pack_gqa = splits, keys_per_split, pack
        self.forward_config = (block_m, block_n, warps, stages)
        meta = dict(HEAD_DIM=self.head_dim, BLOCK_D=self.block_d, NEG_SCALE=self.scale < 0,
                    UPCAST_DOT=upcast, DOT_PRECISION=self.precision,
                    HEAVY_FIRST=bool(self.alignment) and self.window_left >= UNBOUNDED and not pack,
                    VARLEN=self.varlen, PACK_GQA=pack, SPLIT=splits > 1,
                    BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages)
        self.forward_launch = KernelLauncher(flash_attention_forward_kernel,
                                             (triton.cdiv(rows, block_m), row_programs, splits), meta)
        # every argument after o's strides, as the kernel takes them
        scalars = (self.heads, self.group, self.n_q, self.n_k, self.qk_scale, self.window_left,
                   self.window_right, self.lower_right, keys_per_split)
        self.forward_tail = (*self.q_strides, *self.k_strides, *self.v_strides, *self.lse_strides, 0, 0,
                             *scalars)
        if splits > 1:
            # flash-decoding: each split writes a partial (o, lse) in fp32, one kernel merges them
            self.part_shapes = ((splits, *self.o_shape), (splits, *self.lse_shape))
            o_part = torch.empty(self.part_shapes[0], device="meta")
            lse_part = torch.empty(self.part_shapes[1], device="meta")
            part = (0, o_part.stride(2), o_part.stride(1), 1) if self.varlen else o_part.stride()[1:]
            part_lse = (0, *lse_part.stride()[1:]) if self.varlen else lse_part.stride()[1:]
            self.split_tail = (*self.q_strides, *self.k_strides, *self.v_strides, *part_lse, o_part.stride(0),
                               lse_part.stride(0), *scalars)
            self.part_strides = part
            self.merge_tail = (*part, o_part.stride(0), *part_lse, lse_part.stride(0))
            merge_meta = dict(HEAD_DIM=self.head_dim, BLOCK_D=self.block_d,
                              BLOCK_M=16 if shared.INTERPRETER else 32, num_warps=4)
            merge_grid = (triton.cdiv(self.lse_shape[-1], merge_meta["BLOCK_M"]),
                          self.heads if self.varlen else self.batch * self.heads, 1)
            self.merge_launch = KernelLauncher(merge_splits_kernel, merge_grid, merge_meta)

    def forward(self, q, k, v, out=None, cu_seqlens_q=None, cu_seqlens_k=None):
        """(o, lse) for these inputs (whose layout this plan was made for)."""
        if out is None:
            o = torch.empty_strided(self.o_shape, self.alloc_strides[0], dtype=self.dtype, device=self.device)
            o_strides, variant = self.o_strides, not ((q.data_ptr() | k.data_ptr() | v.data_ptr()) & 15)
        else:
            o = out
            o_strides = _packed(out.stride()) if self.varlen else out.stride()
            variant = (_aligned(q, k, v, out), o_strides)
        lse = torch.empty(self.lse_shape, dtype=torch.float32, device=self.device)
        if self.empty or self.no_keys:  # SDPA's answer: an empty result, or zeros (no key to see)
            return o.zero_(), lse.fill_(float("-inf"))
        if self.varlen:
            cu_q, cu_k = cu_seqlens_q, cu_seqlens_k
            variant = (variant, _aligned(cu_q, cu_k))
        else:
            cu_q = cu_k = lse  # unused by the kernel
        if self.splits == 1:
            self.forward_launch(variant, q, k, v, o, lse, cu_q, cu_k, *o_strides, *self.forward_tail)
            return o, lse
        o_part = torch.empty(self.part_shapes[0], dtype=torch.float32, device=self.device)
        lse_part = torch.empty(self.part_shapes[1], dtype=torch.float32, device=self.device)
        self.forward_launch(variant, q, k, v, o_part, lse_part, cu_q, cu_k, *self.part_strides, *self.split_tail)
        self.merge_launch(variant, o_part, lse_part, o, lse, *self.merge_tail, *o_strides, *self.lse_strides,
                          self.heads, self.lse_shape[-1], self.splits)
        return o, lse

    # ---- backward
    def _plan_backward(self, config):
        block_m1, block_n1, warps1, stages1, block_m2, block_n2, warps2, stages2 = (
            config or backward_config(self.block_d, self.dtype))
        common = dict(HEAD_DIM=self.head_dim, BLOCK_D=self.block_d, DOT_DTYPE=self.dot_dtype,
                      DOT_PRECISION=self.precision, VARLEN=self.varlen)
        n_q, n_k = max(self.n_q, 1), max(self.n_k, 1)
        dkdv_grid = (triton.cdiv(n_k, block_n1), self.batch * self.kv_heads, 1)
        dq_grid = (triton.cdiv(n_q, block_m2), self.batch * self.heads, 1)
        rule = (self.heads, self.group, self.n_q, self.n_k)
        mask = (self.window_left, self.window_right, self.lower_right)
        return {
            "dq": KernelLauncher(_bwd_dq_kernel, dq_grid, dict(
                common, BLOCK_M=block_m2, BLOCK_N=block_n2, num_warps=warps2, num_stages=stages2)),
            "dq_tail": (*self.q_strides, *self.k_strides, *self.v_strides, *self.dq_strides, *self.lse_strides,
                        *rule, self.qk_scale, self.scale, *mask),
            "dkdv": KernelLauncher(_bwd_dkdv_kernel, dkdv_grid, dict(
                common, DQ_ATOMIC=False, BLOCK_M=block_m1, BLOCK_N=block_n1, num_warps=warps1,
                num_stages=stages1)),
            "dkdv_atomic": KernelLauncher(_bwd_dkdv_kernel, dkdv_grid, dict(
                common, DQ_ATOMIC=True, BLOCK_M=block_m1, BLOCK_N=block_n1, num_warps=warps1,
                num_stages=stages1)),
            "dkdv_tail": (*self.q_strides, *self.k_strides, *self.v_strides, *self.dk_strides, *self.dv_strides,
                          *self.lse_strides, *rule, self.scale, self.qk_scale, *mask),
            "delta": KernelLauncher(_bwd_preprocess_kernel, (triton.cdiv(n_q, 64), *dq_grid[1:]),
                                    dict(HEAD_DIM=self.head_dim, BLOCK_D=self.block_d, BLOCK_M=64)),
        }

    def backward(self, do, q, k, v, o, lse, cu_seqlens_q=None, cu_seqlens_k=None, dq_atomic=False,
                 config=None):
        """(dq, dk, dv): dq laid out like q, dk and dv like k and v."""
        if config is not None:  # a one-off tiling (tuning scripts): not kept
            return self._run_backward(self._plan_backward(config), do, q, k, v, o, lse, cu_seqlens_q,
                                      cu_seqlens_k, dq_atomic)
        if self._backward is None:
            self._backward = self._plan_backward(None)
        return self._run_backward(self._backward, do, q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, dq_atomic)

    def _run_backward(self, launch, do, q, k, v, o, lse, cu_q, cu_k, dq_atomic):
        dq, dk, dv = (torch.empty_strided(shape, strides, dtype=self.dtype, device=self.device)
                      for shape, strides in zip(self.shapes, self.alloc_strides))
        if self.empty or self.no_keys:  # no key seen: no gradient anywhere
            return dq.zero_(), dk.zero_(), dv.zero_()
        do_strides, o_strides = do.stride(), o.stride()
        if self.varlen:
            do_strides, o_strides = _packed(do_strides), _packed(o_strides)
        # dO comes from autograd in any layout, and offsets inside one (batch, head) are 32-bit
        if (self.n_q - 1) * abs(do_strides[2]) + (self.head_dim - 1) * abs(do_strides[3]) >= 2**31:
            do = do.contiguous()
            do_strides = _packed(do.stride()) if self.varlen else do.stride()
        delta = torch.empty_like(lse)
        variant = (do_strides, o_strides, not ((q.data_ptr() | k.data_ptr() | v.data_ptr() | do.data_ptr()
                                                | o.data_ptr()) & 15))
        if not self.varlen:
            cu_q = cu_k = lse  # unused by the kernels
        if dq_atomic:  # FlashAttention-2's scheme, kept for comparison (dense inputs only)
            if self.varlen:
                raise ValueError("dq_atomic=True is implemented for dense (B, H, N, D) inputs only")
            launch["delta"](variant, o, do, delta, *o_strides, *do_strides, *self.lse_strides, self.heads,
                            self.n_q)
            dq_acc = torch.zeros((self.batch, self.heads, self.n_q, self.block_d), dtype=torch.float32,
                                 device=self.device)
            launch["dkdv_atomic"](variant, q, k, v, do, lse, delta, dk, dv, dq_acc, cu_q, cu_k, *do_strides,
                                  *launch["dkdv_tail"])
            dq.copy_(dq_acc[..., :self.head_dim])
            return dq, dk, dv
        # the dQ kernel first: it also writes delta = rowsum(dO * O), which the dK/dV kernel reads
        launch["dq"](variant, q, k, v, o, do, lse, delta, dq, cu_q, cu_k, *o_strides, *do_strides,
                     *launch["dq_tail"])
        launch["dkdv"](variant, q, k, v, do, lse, delta, dk, dv, delta, cu_q, cu_k, *do_strides,
                       *launch["dkdv_tail"])
        return dq, dk, dv


def _like_strides(t):
    """Strides of a new tensor shaped like `t` in `t`'s memory order ((B, N, H, D) for such views)."""
    if t.dim() == 4 and t.stride(1) < t.stride(2):  # heads inside sequence positions
        b, h, n, d = t.shape
        return (n * h * d, d, h * d, 1)
    if t.dim() == 4:
        b, h, n, d = t.shape
        return (h * n * d, n * d, d, 1)
    tokens, h, d = t.shape  # packed (tokens, heads, D): contiguous
    return (h * d, d, 1)


def _packed(strides):
    """A packed (tokens, heads, D) tensor's strides in the kernels' (batch, head, position, dim) order."""
    return (0, strides[1], strides[0], strides[2])


_PLANS = {}  # (shapes, strides, dtypes, devices, flags) -> AttentionPlan
MULTI_GPU = shared.HAS_GPU and torch.cuda.device_count() > 1
MAX_PLANS = 4096  # decoding sees a new key length every step: keep the cache bounded


def attention_plan(q, k, v, causal=False, scale=None, window=None):
    """The plan for these inputs: looked up by a few attribute reads, built (and checked) once."""
    try:
        key = (q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(), q.dtype, k.dtype, v.dtype,
               q.device, k.device, v.device, causal, causal.__class__, scale, scale.__class__, window)
        plan = _PLANS.get(key)
    except (AttributeError, TypeError):  # not tensors, or flags that cannot be a key: checked below
        key, plan = None, None
    if plan is None:
        plan = AttentionPlan(q, k, v, causal, scale, window)
        if key is not None:
            if len(_PLANS) >= MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    if MULTI_GPU and plan.device.index != torch.cuda.current_device():
        raise ValueError(f"inputs are on {plan.device}, but the current device is cuda:"
                         f"{torch.cuda.current_device()}: Triton launches on the current device "
                         "(use torch.cuda.set_device or `with torch.cuda.device(...)`)")
    return plan


def check_varlen_inputs(q, k, v, scale, max_seqlen_q, max_seqlen_k):
    """The packed layout's checks (the cu_seqlens values are checked per call): returns the scale."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a 3-D (total_tokens, heads, head_dim) tensor, "
                             f"got {getattr(t, 'shape', type(t).__name__)}")
    as_4d = [t.unsqueeze(0).transpose(1, 2) for t in (q, k, v)]  # (1, heads, tokens, D) views, no copies
    scale = shared.check_attention_inputs(*as_4d, scale, allow_gqa=True, min_head_dim=16, max_head_dim=256,
                                          offsets64=True, differentiable=True)
    for name, value in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"{name} must be a non-negative int, got {value!r}")
    for name, t, longest in (("q", q, max_seqlen_q), ("k", k, max_seqlen_k), ("v", v, max_seqlen_k)):
        if (longest - 1) * abs(t.stride(0)) + (t.shape[2] - 1) * abs(t.stride(2)) >= 2**31:
            raise ValueError(f"one sequence of {name} spans 2^31 elements or more (32-bit offsets)")
    return scale


def check_cu_seqlens(cu_seqlens_q, cu_seqlens_k, total_q, total_k, max_seqlen_q, max_seqlen_k):
    """Cumulative lengths: int32, 1-D, same length, from 0, non-decreasing, ending at the totals.

    Reads them on the host: one device-to-host copy per call (pass check=False to skip it).
    """
    lengths = []
    for name, cu, total, longest in (("cu_seqlens_q", cu_seqlens_q, total_q, max_seqlen_q),
                                     ("cu_seqlens_k", cu_seqlens_k, total_k, max_seqlen_k)):
        if not isinstance(cu, torch.Tensor) or cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() < 2:
            raise TypeError(f"{name} must be a 1-D int32 tensor of batch + 1 offsets, "
                            f"got {getattr(cu, 'dtype', type(cu).__name__)} {tuple(getattr(cu, 'shape', ()))}")
        values = cu.tolist()
        steps = [b - a for a, b in zip(values, values[1:])]
        if values[0] != 0 or min(steps) < 0:
            raise ValueError(f"{name} must start at 0 and never decrease, got {values[:8]}...")
        if values[-1] != total:
            raise ValueError(f"{name} ends at {values[-1]}, but the packed tensor has {total} tokens")
        if max(steps) > longest:
            raise ValueError(f"a sequence of {max(steps)} tokens is longer than max_seqlen "
                             f"{longest} ({name})")
        lengths.append(steps)
    if len(lengths[0]) != len(lengths[1]):
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k describe {len(lengths[0])} and "
                         f"{len(lengths[1])} sequences")
    if cu_seqlens_q.device != cu_seqlens_k.device:
        raise ValueError("cu_seqlens_q and cu_seqlens_k must be on one device")


# ----------------------------------------------------------------------------- autograd and torch.compile
# Eager mode: a plain autograd.Function, whose overhead is a few microseconds. A
# torch.library custom op costs far more per call in eager mode (its dispatch runs through
# Python layers), so it is used only under torch.compile, where dynamo needs an opaque,
# well-typed node (no graph break; fake implementations give it the output shapes).
class FlashAttentionFunction(torch.autograd.Function):
    """Forward saves q, k, v, o and lse; backward runs the two gradient kernels."""

    @staticmethod
    def forward(ctx, q, k, v, plan):
        o, lse = plan.forward(q, k, v)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.plan = plan
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        return (*ctx.plan.backward(do, q, k, v, o, lse), None)


class FlashAttentionVarlenFunction(torch.autograd.Function):
    """The same for packed sequences: cu_seqlens travel with the saved tensors."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, plan):
        o, lse = plan.forward(q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)
        ctx.save_for_backward(q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k)
        ctx.plan = plan
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse, cu_q, cu_k = ctx.saved_tensors
        return (*ctx.plan.backward(do, q, k, v, o, lse, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k),
                None, None, None)


@torch.library.custom_op("triton_attention::flash_attn_fwd", mutates_args=())
def _flash_attn_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: str, scale: float,
                       window_left: int, window_right: int) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_plan(q, k, v, causal or False, scale, (window_left, window_right)).forward(q, k, v)


@_flash_attn_fwd_op.register_fake
def _(q, k, v, causal, scale, window_left, window_right):
    return _layout_like(q, q.shape, q.dtype), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("triton_attention::flash_attn_bwd", mutates_args=())
def _flash_attn_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       o: torch.Tensor, lse: torch.Tensor, causal: str, scale: float, window_left: int,
                       window_right: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    plan = attention_plan(q, k, v, causal or False, scale, (window_left, window_right))
    return plan.backward(do, q, k, v, o, lse)


@_flash_attn_bwd_op.register_fake
def _(do, q, k, v, o, lse, causal, scale, window_left, window_right):
    return _layout_like(q, q.shape, q.dtype), _layout_like(k, k.shape, k.dtype), _layout_like(v, v.shape, v.dtype)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale, window_left, window_right = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.flags = (causal, scale, window_left, window_right)


def _flash_attn_op_backward(ctx, grad_o, grad_lse):
    # lse is an output for the backward's use; a gradient flowing into it is not supported.
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = _flash_attn_bwd_op(grad_o, q, k, v, o, lse, *ctx.flags)
    return dq, dk, dv, None, None, None, None


_flash_attn_fwd_op.register_autograd(_flash_attn_op_backward, setup_context=_setup_context)


def _compiled_attention(q, k, v, causal, scale, window):
    """What torch.compile traces: one custom op with the flags as plain values."""
    alignment = shared.check_causal(causal, lower_right=True) or ""
    left, right = (-1, -1) if window is None else window
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return _flash_attn_fwd_op(q, k, v, alignment, scale, left, right)[0]


# ----------------------------------------------------------------------------- the functions to call
def flash_attention(q, k, v, causal=False, scale=None, out=None, *, window=None):
    """Attention of q (B, H, Nq, D) over k, v (B, Hkv, Nk, D); returns (B, H, Nq, D) like q.

    ``F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)``
    when ``causal`` is True/False (True = "top_left": key j visible to query i iff j <= i);
    ``causal="lower_right"`` aligns the last query with the last key (j <= i + Nk - Nq), as a
    KV cache needs. ``window=(left, right)``: query i sees keys [i' - left, i' + right], where i'
    is i, or i + Nk - Nq with "lower_right"; -1 leaves a side unbounded; with causal, the
    causal bound wins on the right. A query that sees no key returns 0 (its lse is -inf,
    its gradients 0). H % Hkv == 0 (GQA/MQA without copying K/V); any lengths; head dims 16
    to 256; any strides. fp16 and bf16 on tensor cores with fp32 accumulation and softmax;
    fp32 in exact fp32 (``input_precision="ieee"``), slower.

    Differentiable (a torch.autograd.Function in eager mode, a custom op under
    torch.compile). ``out=`` (inference only) writes into a caller's buffer, which must
    not overlap q, k or v. The result is laid out like q: (B, N, H, D) memory for a
    (B, N, H, D) view, as SDPA does.
    """
    if torch.compiler.is_compiling():
        if out is not None:
            raise ValueError("out= is not supported under torch.compile")
        return _compiled_attention(q, k, v, causal, scale, window)
    plan = attention_plan(q, k, v, causal, scale, window)
    if out is not None:
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            raise ValueError("out= is for inference: a result written into a caller's buffer "
                             "carries no gradient; call flash_attention without out=")
        shared.check_out(out, q, v, inputs=(q, k, v), offsets64=True)
        return plan.forward(q, k, v, out=out)[0]
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return FlashAttentionFunction.apply(q, k, v, plan)
    return plan.forward(q, k, v)[0]


def flash_attention_forward(q, k, v, causal=False, scale=None, *, window=None, config=None, num_splits=None):
    """Forward pass that also returns what a backward pass (or a merge) needs: ``(o, lse)``.

    ``o`` is like ``flash_attention``'s result; ``lse`` is float32, shape (B, H, Nq),
    contiguous: ``lse[b, h, i] = log(sum_j exp(scale * q_i . k_j))`` over the keys row i
    sees (natural log; -inf for a row that sees none). ``config`` (BLOCK_M, BLOCK_N,
    num_warps, num_stages) and ``num_splits`` override the automatic choice (tuning, tests).
    """
    if config is None and num_splits is None:
        return attention_plan(q, k, v, causal, scale, window).forward(q, k, v)
    return AttentionPlan(q, k, v, causal, scale, window, config=config, num_splits=num_splits).forward(q, k, v)


def flash_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, *, window=None, config=None,
                             dq_atomic=False):
    """Gradients (dq, dk, dv) of attention given dO, the inputs and the forward's o and lse.

    q, o, do: (B, H, Nq, D); k, v: (B, Hkv, Nk, D) with H % Hkv == 0; lse: (B, H, Nq)
    float32, natural log (what ``flash_attention_forward`` returns). Any strides. dq comes
    laid out like q, dk and dv like k. ``config`` overrides the tile sizes (see
    ``backward_config``), for sweeps; ``dq_atomic=True`` runs FlashAttention-2's scheme
    (dQ by relaxed fp32 atomics inside the dK/dV kernel), for comparison.
    """
    plan = attention_plan(q, k, v, causal, scale, window)
    for name, t in (("do", do), ("o", o)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(q.shape):
            raise ValueError(f"{name} must be a tensor of q's shape {tuple(q.shape)}, "
                             f"got {getattr(t, 'shape', type(t).__name__)}")
        if t.dtype != q.dtype or t.device != q.device:
            raise TypeError(f"{name} must have q's dtype {q.dtype} and device {q.device}, "
                            f"got {t.dtype} on {t.device}")
    if not isinstance(lse, torch.Tensor) or tuple(lse.shape) != tuple(q.shape[:3]) or lse.dtype != torch.float32:
        raise ValueError(f"lse must be a float32 tensor of shape {tuple(q.shape[:3])}")
    return plan.backward(do, q, k, v, o, lse.contiguous(), dq_atomic=dq_atomic, config=config)


_VARLEN_PLANS = {}


def flash_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False,
                           scale=None, window=None, *, check=True, return_lse=False):
    """Attention over packed sequences, FlashAttention's ``flash_attn_varlen_func`` layout.

    q (total_q, H, D); k, v (total_k, Hkv, D); ``cu_seqlens_q/k``: int32 (batch + 1,)
    cumulative lengths (sequence b is rows [cu[b], cu[b+1])); ``max_seqlen_q/k``: the longest
    sequence's length. Each sequence attends only within itself; ``causal``, ``window`` and
    ``scale`` as in ``flash_attention``, per sequence. Returns (total_q, H, D) (and the lse,
    (H, total_q) float32, with ``return_lse``). Differentiable. ``check=True`` reads the
    cumulative lengths on the host to check them: one device-to-host copy per call.
    """
    key = None
    try:
        key = (q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(), q.dtype, k.dtype, v.dtype,
               q.device, max_seqlen_q, max_seqlen_k, len(cu_seqlens_q), causal, causal.__class__, scale,
               scale.__class__, window)
        plan = _VARLEN_PLANS.get(key)
    except (AttributeError, TypeError):
        plan = None
    if plan is None:
        batch = len(cu_seqlens_q) - 1 if isinstance(cu_seqlens_q, torch.Tensor) and cu_seqlens_q.dim() == 1 else 0
        plan = AttentionPlan(q, k, v, causal, scale, window, varlen=(batch, max_seqlen_q, max_seqlen_k))
        if key is not None:
            if len(_VARLEN_PLANS) >= MAX_PLANS:
                _VARLEN_PLANS.clear()
            _VARLEN_PLANS[key] = plan
    if check:
        check_cu_seqlens(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], max_seqlen_q, max_seqlen_k)
        if cu_seqlens_q.device != q.device:
            raise ValueError(f"cu_seqlens must be on q's device {q.device}, got {cu_seqlens_q.device}")
    if return_lse or not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        o, lse = plan.forward(q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)
        return (o, lse) if return_lse else o
    return FlashAttentionVarlenFunction.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, plan)


def merge_attention_states(o_a, lse_a, o_b, lse_b):
    """Attention over keys A and B together, from attention over A and over B: ``(o, lse)``.

    o (..., D) and lse (...) float32 natural-log log-sum-exps, as ``flash_attention_forward``
    returns them. Each side is weighted by the share of the softmax mass its keys hold:
    o = (e^lse_a o_a + e^lse_b o_b) / (e^lse_a + e^lse_b), lse = log(e^lse_a + e^lse_b). A side
    with lse = -inf (it saw no key) gets weight 0; both -inf: o = 0, lse = -inf. The sum is
    taken in fp32; o comes back in o_a's dtype. KV-cache chunks, split-KV decoding and ring
    attention across GPUs all merge this way.
    """
    if o_a.shape != o_b.shape or lse_a.shape != lse_b.shape or tuple(o_a.shape[:-1]) != tuple(lse_a.shape):
        raise ValueError(f"o (..., D) and lse (...) must match: o {tuple(o_a.shape)}, {tuple(o_b.shape)}; "
                         f"lse {tuple(lse_a.shape)}, {tuple(lse_b.shape)}")
    if lse_a.dtype != lse_b.dtype or lse_a.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"lse must be float32 (or float64), both alike, got {lse_a.dtype} and {lse_b.dtype}")
    lse = torch.logaddexp(lse_a, lse_b)
    finite = torch.where(torch.isneginf(lse), 0.0, lse)  # both -inf: weights exp(-inf) = 0, not NaN
    w_a = torch.exp(lse_a - finite).unsqueeze(-1)
    w_b = torch.exp(lse_b - finite).unsqueeze(-1)
    o = w_a * o_a.float() + w_b * o_b.float()
    return o.to(o_a.dtype), lse


# ----------------------------------------------------------------------------- correctness
# (B, H, Nq, Nk, D, causal): features beyond the shared shapes, each on purpose.
EXTRA_SHAPES_QUICK = [
    (1, 2, 33, 65, 111, True),  # odd head dim (pads 111 -> 128), Nq < Nk causal
    (1, 1, 1, 97, 96, True),  # decoding-like: one query, causal (top-left) sees only key 0
]
EXTRA_SHAPES_FULL = EXTRA_SHAPES_QUICK + [
    (2, 8, 1000, 1000, 256, True),
    (3, 5, 257, 513, 40, False),
    (1, 2, 2049, 4096, 128, True),
]


def _print_check(label, name, result, causal="", dtype=""):
    print(f"  {label:<22} {name:<40} {str(causal):<11} {str(dtype).replace('torch.', ''):<8} {result}")


def check_special_cases(label="03 flash"):
    """GQA/MQA, layouts, masks and alignments, decoding, packed sequences, the lse and the merge."""
    passed = True
    small = shared.INTERPRETER
    n = (lambda cpu, gpu: cpu if small else gpu)  # noqa: E731
    cases = [  # (name, B, H, Hkv, Nq, Nk, D, causal, window, scale, dtype)
        ("GQA H=4 Hkv=2", 2, 4, 2, n(17, 300), n(33, 1025), 64, True, None, None, torch.float16),
        ("MQA H=4 Hkv=1", 1, 4, 1, n(20, 513), n(20, 513), 80, False, None, 0.3, torch.bfloat16),
        ("lower-right, Nq < Nk", 2, 2, 1, n(7, 100), n(40, 1000), 64, "lower_right", None, None, torch.float16),
        ("lower-right, Nq > Nk (empty rows)", 1, 2, 2, n(40, 700), n(23, 300), 64, "lower_right", None, None,
         torch.bfloat16),
        ("window (8, 0) causal", 1, 2, 2, n(50, 2000), n(50, 2000), 64, True, (n(8, 256), 0), None, torch.float16),
        ("window (5, 3), not causal", 2, 2, 1, n(37, 999), n(29, 777), 32, False, (n(5, 100), n(3, 50)), None,
         torch.bfloat16),
        ("decoding: 1 query, GQA packed", 3, 8, 2, 1, n(300, 20000), 128, "lower_right", None, None,
         torch.bfloat16),
    ]
    for name, b, h, hkv, nq, nk, d, causal, window, scale, dtype in cases:
        q, k, v = shared.make_qkv(b, h, nq, d, n_k=nk, kv_heads=hkv, dtype=dtype)
        result = shared.test_correctness(flash_attention, q, k, v, causal=causal, scale=scale, window=window)
        passed &= result.passed
        _print_check(label, name, result, causal, dtype)
    # (B, N, H, D) as models produce it, viewed as (B, H, N, D): strides, no copies
    q, k, v = (torch.randn(2, n(19, 777), 3, 64, dtype=torch.float16, device=shared.DEVICE).transpose(1, 2)
               for _ in range(3))
    result = shared.test_correctness(flash_attention, q, k, v, causal=True)
    passed &= result.passed
    _print_check(label, "non-contiguous (B,N,H,D).T", result, True, torch.float16)
    # split-KV decoding forced on, against the reference (the GPU picks it by itself when it pays)
    q, k, v = shared.make_qkv(2, 4, 3, 64, n_k=n(77, 5000), kv_heads=2, dtype=torch.float16)
    got, lse = flash_attention_forward(q, k, v, causal="lower_right", num_splits=3)
    ref, ref_lse = shared.reference_attention(q, k, v, causal="lower_right", return_lse=True)
    ok = (got.double() - ref).abs().max().item() < 5e-3 and (lse.double() - ref_lse).abs().max().item() < 1e-3
    passed &= ok
    _print_check(label, "split-KV (3 splits) + lse", "PASS" if ok else "FAIL", "lower_right", torch.float16)
    # packed variable-length sequences, each against its own reference
    lengths_q, lengths_k = [n(5, 500), n(1, 1), n(17, 1500)], [n(9, 700), n(3, 64), n(17, 1500)]
    ok = check_varlen_case(lengths_q, lengths_k, heads=4, kv_heads=2, head_dim=64, causal=True,
                           window=None, dtype=torch.bfloat16)
    passed &= ok
    _print_check(label, f"varlen q{lengths_q} k{lengths_k}", "PASS" if ok else "FAIL", True, torch.bfloat16)
    # the logsumexp, against float64 scores, and the merge of two halves of the keys
    q, k, v = shared.make_qkv(2, 2, n(19, 600), 64, n_k=n(23, 999), dtype=torch.float16)
    o, lse = flash_attention_forward(q, k, v, causal=True)
    _, ref_lse = shared.reference_attention(q, k, v, causal=True, return_lse=True)
    lse_err = (lse.double() - ref_lse).abs().max().item()
    half = k.shape[2] // 2
    o_a, lse_a = flash_attention_forward(q, k[:, :, :half], v[:, :, :half])
    o_b, lse_b = flash_attention_forward(q, k[:, :, half:], v[:, :, half:])
    merged, merged_lse = merge_attention_states(o_a, lse_a, o_b, lse_b)
    whole, whole_lse = shared.reference_attention(q, k, v, return_lse=True)
    merge_err = (merged.double() - whole).abs().max().item()
    ok = lse_err < 1e-2 and lse.is_contiguous() and lse.dtype == torch.float32 and merge_err < 5e-3 \
        and (merged_lse.double() - whole_lse).abs().max().item() < 1e-2
    passed &= ok
    _print_check(label, "lse vs float64; merge of two key halves", f"{'PASS' if ok else 'FAIL'}: lse err "
                 f"{lse_err:.2e}, merge err {merge_err:.2e}", True, torch.float16)
    return passed


def check_varlen_case(lengths_q, lengths_k, heads, kv_heads, head_dim, causal, window, dtype, grads=False):
    """flash_attention_varlen on packed sequences against the reference run on each one alone."""
    cu_q = torch.tensor([0] + list(torch.tensor(lengths_q).cumsum(0)), dtype=torch.int32, device=shared.DEVICE)
    cu_k = torch.tensor([0] + list(torch.tensor(lengths_k).cumsum(0)), dtype=torch.int32, device=shared.DEVICE)
    q = torch.randn(sum(lengths_q), heads, head_dim, device=shared.DEVICE).to(dtype).requires_grad_(grads)
    k = torch.randn(sum(lengths_k), kv_heads, head_dim, device=shared.DEVICE).to(dtype).requires_grad_(grads)
    v = torch.randn(sum(lengths_k), kv_heads, head_dim, device=shared.DEVICE).to(dtype).requires_grad_(grads)
    out = flash_attention_varlen(q, k, v, cu_q, cu_k, max(lengths_q), max(lengths_k), causal=causal,
                                 window=window)
    atol, rtol = shared.tolerance(dtype)
    ok = True
    do = torch.randn_like(out) if grads else None
    if grads:
        ours = torch.autograd.grad(out, (q, k, v), do)
    for b in range(len(lengths_q)):
        sq, sk = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))
        as_4d = [t.detach()[s].transpose(0, 1)[None] for t, s in ((q, sq), (k, sk), (v, sk))]
        ref = shared.reference_attention(*as_4d, causal=causal, window=window)[0].transpose(0, 1)
        ok &= bool(((out[sq].detach().double() - ref).abs() <= atol + rtol * ref.abs()).all())
        if grads:
            errors = shared.compare_gradients(
                [g[s].transpose(0, 1)[None] for g, s in zip(ours, (sq, sk, sk))], *as_4d,
                do[sq].transpose(0, 1)[None], causal=causal, window=window)
            ok &= all(e["ok"] for e in errors)
    return ok


def gradient_errors(q, k, v, causal=False, scale=None, do=None, forward=None, window=None):
    """Our (dq, dk, dv) against float64 autograd, next to plain PyTorch autograd in q's dtype.

    ``forward`` gives (o, lse) to differentiate through (default: our forward kernel; the
    tests also pass an exact float64 forward, to test the backward alone). Returns
    ``shared.compare_gradients``'s three dicts (dq, dk, dv): "ours", "torch", "bound", "ok".
    """
    q, k, v = (t.detach() for t in (q, k, v))
    if forward is None:
        o, lse = flash_attention_forward(q, k, v, causal=causal, scale=scale, window=window)
    else:
        o, lse = forward(q, k, v, causal=causal, scale=scale)
    if do is None:
        do = torch.randn_like(o)
    ours = flash_attention_backward(do, q, k, v, o, lse, causal=causal, scale=scale, window=window)
    return shared.compare_gradients(ours, q, k, v, do, causal=causal, scale=scale, window=window)


def check_backward(quick):
    shapes = [  # (B, H, Hkv, Nq, Nk, D, causal, window): awkward lengths one side at a time, GQA, MQA, masks
        (1, 2, 2, 1, 17, 16, False, None),
        (1, 2, 1, 17, 1, 40, True, None),
        (1, 4, 2, 97, 33, 64, True, None),
        (2, 2, 2, 33, 97, 80, False, None),
        (1, 3, 1, 40, 40, 128, True, None),
        (1, 2, 1, 23, 41, 64, "lower_right", (7, -1)),
        (1, 2, 2, 41, 23, 32, "lower_right", None),
    ]
    if shared.INTERPRETER and quick:  # the interpreter's quick check: one of each kind (pytest has the rest)
        shapes = [shapes[i] for i in (0, 2, 5, 6)]
    if not shared.INTERPRETER and not quick:
        shapes += [(2, 8, 2, 1025, 1025, 64, True, None), (1, 4, 4, 1, 1025, 128, False, None),
                   (1, 4, 1, 333, 257, 96, True, None), (2, 4, 4, 256, 256, 256, True, None),
                   (1, 4, 2, 1000, 3000, 111, False, None), (2, 4, 2, 2000, 2000, 128, True, (300, 0)),
                   (1, 4, 4, 700, 1500, 64, "lower_right", (100, 20))]
    print("Gradient check against float64 autograd (rule: ours <= 2 x torch same-dtype error + rounding):")
    passed = True
    for dtype in (torch.float16, torch.bfloat16):
        for b, h, hkv, n_q, n_k, d, causal, window in shapes:
            q, k, v = shared.make_qkv(b, h, n_q, d, n_k=n_k, kv_heads=hkv, dtype=dtype)
            errs = gradient_errors(q, k, v, causal=causal, window=window)
            ok = all(e["ok"] for e in errs)
            passed &= ok
            ours = " ".join(f"{e['ours']:.1e}" for e in errs)
            theirs = " ".join(f"{e['torch']:.1e}" for e in errs)
            print(f"  B={b} H={h} Hkv={hkv} Nq={n_q} Nk={n_k} D={d} causal={causal!s:<11} window={window!s:<9} "
                  f"{str(dtype)[6:]:<8} {'PASS' if ok else 'FAIL'}  dq/dk/dv err {ours}  (torch {theirs})")
    ok = check_varlen_case([5, 13, 1], [9, 13, 4], heads=2, kv_heads=1, head_dim=32, causal=True,
                           window=(6, -1), dtype=torch.float16, grads=True)
    print(f"  varlen gradients, 3 packed sequences, causal, window (6, -1): {'PASS' if ok else 'FAIL'}")
    return passed and ok


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
def benchmark_functions(include_flex=True):
    fns = {"03 flash": flash_attention,
           "sdpa flash": shared.sdpa_backend("flash"),
           "sdpa efficient": shared.sdpa_backend("efficient"),
           "sdpa cudnn": shared.sdpa_backend("cudnn")}
    if include_flex:
        from shared.baselines import flex_attention_compiled
        fns["flex attention"] = flex_attention_compiled()
    fns["naive torch"] = shared.naive_torch
    try:  # step 02 is a baseline here, not a dependency: a broken one must not stop this benchmark
        fns["02 vectorized"] = shared.load_step("02").vectorized_attention
    except Exception as exc:  # noqa: BLE001
        print(f"(skipping 02 vectorized: {type(exc).__name__}: {exc})")
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
    for dtype in (dtypes if plots else ()):
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
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where results go (default: results/ beside this script for a full GPU run, "
                             "scratch/ otherwise)")
    args = parser.parse_args(argv)
    if args.train:
        spec = importlib.util.spec_from_file_location("step03_train_gpt", HERE / "train_gpt.py")
        train_gpt = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(train_gpt)
        train_gpt.main((["--out-dir", str(args.out_dir)] if args.out_dir else [])
                       + (["--steps", "3", "--tiny"] if args.quick else []))
        return 0
    causals = {"no": (False,), "yes": (True,), "both": (False, True)}[args.causal]
    modes = ("bwd", "fwd+bwd") if args.backward else ("fwd",)

    def run_benchmark():
        out_dir = shared.output_dir(args.out_dir, HERE / "results", official=not (args.quick or args.tag),
                                    why="a --quick or --tag run")
        benchmark(args.quick, out_dir, tuple(args.head_dim), tuple(getattr(torch, d) for d in args.dtype),
                  causals, args.n_max, not args.no_flex, args.tag, not args.no_plots, args.slow_n_max, modes)

    return shared.run_step("flash_attention", lambda: check(args.quick or args.quick_check), run_benchmark)


if __name__ == "__main__":
    sys.exit(main())
