"""Step 03, Hopper experiments: a TMA forward and a one-launch backward, beside the teaching kernel.

Two variants of step 03's kernels, kept out of flash_attention.py so that the teaching kernel
stays readable, and kept runnable (STYLE.md, lesson 13) whatever the GPU says about them:

  * ``tma_attention_forward``: the forward with host-side tensor descriptors
    (``triton.tools.tensor_descriptor.TensorDescriptor``) over the flattened (B*H*N, D) tensors,
    as Triton's 06-fused-attention tutorial does: Q, K and V tiles come in by TMA (one bulk copy
    per tile, issued by one thread, no address arithmetic in registers), O goes out by TMA when
    the length divides the tile. ``warp_specialize=True`` asks Triton to split the key loop into
    producer (TMA) and consumer (wgmma + softmax) warps (``tl.range(..., warp_specialize=True)``).
  * ``fused_attention_backward``: dK/dV and dQ in one launch after a small delta pre-pass: the
    first programs of the grid own key blocks (dK, dV), the ones past them own query blocks (dQ),
    as FlexAttention's backward template does, so the two halves share the GPU instead of
    running one after the other (no tail of one kernel waiting for the next).

Both reuse step 03's helpers (``visible_ranges``, ``edge_tile(s)``, the backward's tile
functions), so the arithmetic is the teaching kernel's; only the data movement and the launch
differ. Limits: dense (B, H, N, D) inputs; the TMA forward takes contiguous inputs, head dims
16/32/64/128 (a TMA box is a power of two; D * 2 bytes a multiple of 16), a positive scale, and
causal False/True (top-left) only; anything else raises ValueError (callers fall back to
``flash_attention_forward``). The fused backward takes what step 03's dense backward takes.

Run it: ``python flash_attention_tma.py`` checks both against the float64 reference (on a GPU;
without one, the fused backward through the interpreter, and the TMA forward where the installed
Triton's interpreter accepts tensor descriptors). ``benchmarks/hopper_experiments.py`` times them.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

step03 = shared.load_step("03")
# step 03's Triton helpers, bound to module names so that the kernels below can call them
visible_ranges = step03.visible_ranges
edge_tile = step03.edge_tile
edge_tiles = step03.edge_tiles
bwd_dkdv_tile = step03._bwd_dkdv_tile
bwd_dq_tile = step03._bwd_dq_tile
LOG2E = step03.LOG2E
LN2 = step03.LN2
UNBOUNDED = step03.UNBOUNDED
NO_LIMIT = tl.constexpr(UNBOUNDED)  # the same, readable inside a kernel

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # an old Triton: the TMA forward is not available
    TensorDescriptor = None


# ----------------------------------------------------------------------------- TMA forward: kernel
@triton.jit
def tma_tile_loop(
    acc, m_i, l_i, q,  # running state and the query tile, as in step 03's attention_tile_loop
    desc_k, desc_v,  # (B*Hkv*Nk, D) descriptors, box (BLOCK_N, D)
    kv_row0,  # row of key 0 of this (batch, K/V head) in the flattened tensors
    lo, full_lo, full_hi, hi,  # step 03's key ranges
    q_idx, seqlen_k, right,  # query index of each row; keys past i + right are hidden (causal: 0)
    qk_scale,
    MASKED: tl.constexpr, BLOCK_N: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
    UPCAST_DOT: tl.constexpr,  # interpreter + bf16 only: tl.dot in fp32 (as step 03)
):
    offs_n = tl.arange(0, BLOCK_N)
    if MASKED:
        tiles = edge_tiles(lo, full_lo, full_hi, hi, BLOCK_N)
    else:
        tiles = tl.cdiv(full_hi - full_lo, BLOCK_N)
    for tile in tl.range(0, tiles, warp_specialize=WARP_SPECIALIZE):
        if MASKED:
            start_n = edge_tile(tile, lo, full_lo, full_hi, BLOCK_N)
        else:
            start_n = tl.multiple_of(full_lo + tile * BLOCK_N, BLOCK_N)
        # One bulk copy per tile. Rows past this head's keys belong to the next head (or lie past
        # the tensor, where TMA reads zeros): only masked tiles reach them, and the mask hides them.
        k = desc_k.load([kv_row0 + start_n, 0])  # read BLOCK_N x D by TMA
        if UPCAST_DOT:
            k = k.to(tl.float32)
        qk = tl.dot(q, k.T)
        if MASKED:
            cols = start_n + offs_n
            visible = (cols[None, :] <= q_idx[:, None] + right) & (cols[None, :] < seqlen_k)
            s = tl.where(visible, qk * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_sub[:, None])
            alpha = tl.math.exp2(m_i - m_sub)
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.math.exp2(qk * qk_scale - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        m_i = m_new
        v = desc_v.load([kv_row0 + start_n, 0])  # read BLOCK_N x D by TMA
        if UPCAST_DOT:
            v = v.to(tl.float32)
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_i, l_i


@triton.jit
def tma_forward_kernel(
    desc_q, desc_k, desc_v, desc_o,  # descriptors over q/o (B*H*Nq, D) and k/v (B*Hkv*Nk, D)
    o_ptr, lse_ptr,  # o (contiguous, for the masked store of a ragged last tile), lse (B, H, Nq) fp32
    n_heads, group, n_q, n_k,  # H, H // Hkv, Nq, Nk
    qk_scale,  # softmax scale * log2(e)
    right,  # keys past i + right are hidden: 0 causal (top-left), UNBOUNDED otherwise
    HEAD_DIM: tl.constexpr,
    EVEN_M: tl.constexpr,  # Nq % BLOCK_M == 0: O leaves by TMA, no masks on rows
    HEAVY_FIRST: tl.constexpr,  # causal: the query tiles that see most keys first
    WARP_SPECIALIZE: tl.constexpr,  # tl.range(..., warp_specialize=True) on the key loops
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    if HEAVY_FIRST:
        pid_m = tl.num_programs(0) - 1 - pid_m
    bh = tl.program_id(1)
    batch = bh // n_heads
    head = bh % n_heads
    kv_bh = batch * (n_heads // group) + head // group
    q_row0 = bh * n_q + pid_m * BLOCK_M  # this tile's first row in the flattened q and o
    kv_row0 = kv_bh * n_k

    q_idx = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = desc_q.load([q_row0, 0])  # read BLOCK_M x D once, by TMA
    if UPCAST_DOT:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    first_row = pid_m * BLOCK_M
    last_row = tl.minimum(first_row + BLOCK_M, n_q) - 1
    lo, full_lo, full_hi, hi = visible_ranges(first_row, last_row, n_k, 0, NO_LIMIT, right, BLOCK_N)
    acc, m_i, l_i = tma_tile_loop(acc, m_i, l_i, q, desc_k, desc_v, kv_row0, lo, full_lo, full_hi, hi,
                                  q_idx, n_k, right, qk_scale, False, BLOCK_N, WARP_SPECIALIZE, UPCAST_DOT)
    acc, m_i, l_i = tma_tile_loop(acc, m_i, l_i, q, desc_k, desc_v, kv_row0, lo, full_lo, full_hi, hi,
                                  q_idx, n_k, right, qk_scale, True, BLOCK_N, WARP_SPECIALIZE, UPCAST_DOT)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = (acc / l_safe[:, None]).to(desc_o.dtype)
    lse = (m_i + tl.math.log2(l_safe)) * LN2
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    lse_ptrs = lse_ptr + bh.to(tl.int64) * n_q + offs_m
    if EVEN_M:
        tl.store(lse_ptrs, lse)
        desc_o.store([q_row0, 0], out)  # write BLOCK_M x D by TMA
    else:  # the last tile's rows past Nq are the next head's: a masked store, not a TMA box
        row_in = offs_m < n_q
        tl.store(lse_ptrs, lse, mask=row_in)
        offs_d = tl.arange(0, HEAD_DIM)
        o_ptrs = o_ptr + (bh.to(tl.int64) * n_q + offs_m)[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(o_ptrs, out, mask=row_in[:, None])


# ----------------------------------------------------------------------------- TMA forward: launcher
# (BLOCK_M, BLOCK_N, num_warps, num_stages) by head dim, for long sequences on Hopper; short
# problems (fewer than 2 waves of 128-row tiles) take 64-row tiles in 4 warps, as step 03 does.
TMA_FORWARD_CONFIGS = {16: (128, 64, 8, 3), 32: (128, 64, 8, 3), 64: (128, 64, 8, 3), 128: (128, 128, 8, 2)}


def tma_forward_config(head_dim, n_q, programs_128):
    if shared.INTERPRETER:
        return (16, 16, 4, 1)
    if programs_128 < 2 * step03.NUM_SMS or n_q <= 64:
        return (64, 64, 4, 3)
    return TMA_FORWARD_CONFIGS[head_dim]


def check_tma_inputs(q, k, v, causal, scale):
    """ValueError unless this variant handles these inputs (callers then use step 03's kernel)."""
    if TensorDescriptor is None:
        raise ValueError("this Triton has no triton.tools.tensor_descriptor")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or k.shape != v.shape or q.shape[-1] != k.shape[-1]:
        raise ValueError("q (B, H, Nq, D), k and v (B, Hkv, Nk, D) expected")
    if q.shape[1] % k.shape[1] or q.shape[0] != k.shape[0]:
        raise ValueError("H must be a multiple of Hkv and batches equal")
    if q.shape[-1] not in (16, 32, 64, 128):
        raise ValueError(f"the TMA forward takes head dims 16, 32, 64, 128, got {q.shape[-1]}")
    if not (q.is_contiguous() and k.is_contiguous() and v.is_contiguous()):
        raise ValueError("the TMA forward takes contiguous (B, H, N, D) inputs")
    if q.dtype not in (torch.float16, torch.bfloat16) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError("the TMA forward takes fp16 or bf16")
    if causal not in (False, True):
        raise ValueError("the TMA forward takes causal=False or True (top-left)")
    if scale is not None and not scale > 0:
        raise ValueError("the TMA forward takes a positive scale")
    if q.numel() == 0 or k.shape[2] == 0:
        raise ValueError("empty inputs: use step 03's kernel")
    if any(t.data_ptr() % 16 for t in (q, k, v)):
        raise ValueError("a TMA descriptor needs 16-byte aligned base addresses")
    if max(q.numel(), k.numel()) // q.shape[-1] >= 2**31:
        raise ValueError("TMA coordinates are 32-bit: at most 2^31 rows of B*H*N")


def tma_attention_forward(q, k, v, causal=False, scale=None, *, config=None, warp_specialize=False):
    """(o, lse) like step 03's ``flash_attention_forward``, loads and stores by TMA descriptors.

    ``config``: (BLOCK_M, BLOCK_N, num_warps, num_stages) instead of the table above.
    ``warp_specialize``: Triton 3.6 on sm_90 compiles 8-warp configs to the same code as without it
    (its Hopper pass leaves this loop alone) and fails on 4-warp ones (a pass error); kept for
    newer Tritons, off by default.
    """
    check_tma_inputs(q, k, v, causal, scale)
    batch, heads, n_q, d = q.shape
    kv_heads, n_k = k.shape[1], k.shape[2]
    scale = d ** -0.5 if scale is None else float(scale)
    programs_128 = triton.cdiv(n_q, 128) * batch * heads
    block_m, block_n, warps, stages = config or tma_forward_config(d, n_q, programs_128)
    o = torch.empty_like(q)
    lse = torch.empty((batch, heads, n_q), dtype=torch.float32, device=q.device)
    # Descriptors over the flattened tensors: row r of q is (b, h, i) with r = (b H + h) Nq + i.
    desc_q = TensorDescriptor(q.view(-1, d), [batch * heads * n_q, d], [d, 1], [block_m, d])
    desc_o = TensorDescriptor(o.view(-1, d), [batch * heads * n_q, d], [d, 1], [block_m, d])
    desc_k = TensorDescriptor(k.view(-1, d), [batch * kv_heads * n_k, d], [d, 1], [block_n, d])
    desc_v = TensorDescriptor(v.view(-1, d), [batch * kv_heads * n_k, d], [d, 1], [block_n, d])
    grid = (triton.cdiv(n_q, block_m), batch * heads)
    tma_forward_kernel[grid](
        desc_q, desc_k, desc_v, desc_o, o, lse, heads, heads // kv_heads, n_q, n_k,
        scale * LOG2E.value, 0 if causal else UNBOUNDED,
        HEAD_DIM=d, EVEN_M=n_q % block_m == 0, HEAVY_FIRST=bool(causal), WARP_SPECIALIZE=warp_specialize,
        UPCAST_DOT=shared.INTERPRETER and q.dtype == torch.bfloat16,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages)
    return o, lse


def tma_attention(q, k, v, causal=False, scale=None, *, config=None, warp_specialize=False):
    """Forward only (no autograd): the output of ``tma_attention_forward``; the benchmark's callable."""
    return tma_attention_forward(q, k, v, causal, scale, config=config, warp_specialize=warp_specialize)[0]


# ----------------------------------------------------------------------------- one-launch backward
@triton.jit
def fused_backward_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr,  # q, dO (B, H, Nq, D); k, v (B, Hkv, Nk, D)
    lse_ptr, delta_ptr,  # (B, H, Nq) fp32 contiguous: forward's lse, rowsum(dO * O) from the pre-pass
    dq_ptr, dk_ptr, dv_ptr,  # out: dq like q, dk and dv like k
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    n_heads, group, n_q, n_k,
    scale, qk_scale,
    window_left, window_right, lower_right,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr,  # dK/dV: BLOCK_N1 keys a program, BLOCK_M1 rows a step
    BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr,  # dQ part: BLOCK_M2 rows a program, BLOCK_N2 keys a step
):
    # Grid: (key blocks + group x query blocks, batch x K/V heads). Programs [0, key blocks) own a
    # key block (dK, dV) of this K/V head; the ones past them own a query block (dQ) of one of
    # the group's query heads. Both halves run side by side.
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    kv_heads = n_heads // group
    batch = bh // kv_heads
    kv_head = bh % kv_heads
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    lse_b = lse_ptr + batch.to(tl.int64) * n_heads * n_q
    delta_b = delta_ptr + batch.to(tl.int64) * n_heads * n_q
    shift = lower_right * (n_k - n_q)
    offs_d = tl.arange(0, BLOCK_D)
    d_in = offs_d < HEAD_DIM
    key_blocks = tl.cdiv(n_k, BLOCK_N1)
    if pid < key_blocks:
        # ---- dK, dV of keys [start_n, start_n + BLOCK_N1): step 03's _bwd_dkdv_kernel body
        start_n = pid * BLOCK_N1
        offs_n = start_n + tl.arange(0, BLOCK_N1)
        kv_mask = (offs_n[:, None] < n_k) & d_in[None, :]
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_mask,
                    other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_mask,
                    other=0.0)
        k = k.to(DOT_DTYPE)
        v = v.to(DOT_DTYPE)
        dk = tl.zeros((BLOCK_N1, BLOCK_D), dtype=tl.float32)
        dv = tl.zeros((BLOCK_N1, BLOCK_D), dtype=tl.float32)
        last_key = tl.minimum(start_n + BLOCK_N1, n_k) - 1
        lo, full_lo, full_hi, hi = visible_ranges(start_n, last_key, n_q, -shift, window_right, window_left,
                                                  BLOCK_M1)
        if start_n + BLOCK_N1 > n_k:
            full_lo = hi
            full_hi = hi
        for g in range(0, group):
            head = (kv_head * group + g).to(tl.int64)
            q_base = q_ptr + batch.to(tl.int64) * stride_qb + head * stride_qh
            do_base = do_ptr + batch.to(tl.int64) * stride_dob + head * stride_doh
            lse_base = lse_b + head * n_q
            delta_base = delta_b + head * n_q
            for start_m in range(full_lo, full_hi, BLOCK_M1):
                dk, dv = bwd_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, delta_base,
                                       stride_qn, stride_qd, stride_don, stride_dod, 1,
                                       offs_n, offs_d, start_m, n_q, n_k, shift, window_left, window_right,
                                       scale, qk_scale, False, False, HEAD_DIM, BLOCK_D, DOT_DTYPE,
                                       DOT_PRECISION, BLOCK_M1)
            for tile in range(0, edge_tiles(lo, full_lo, full_hi, hi, BLOCK_M1)):
                dk, dv = bwd_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, delta_base,
                                       stride_qn, stride_qd, stride_don, stride_dod, 1,
                                       offs_n, offs_d, edge_tile(tile, lo, full_lo, full_hi, BLOCK_M1),
                                       n_q, n_k, shift, window_left, window_right,
                                       scale, qk_scale, True, False, HEAD_DIM, BLOCK_D, DOT_DTYPE,
                                       DOT_PRECISION, BLOCK_M1)
        dk *= scale
        dk_base = dk_ptr + batch.to(tl.int64) * stride_dkb + kv_head.to(tl.int64) * stride_dkh
        dv_base = dv_ptr + batch.to(tl.int64) * stride_dvb + kv_head.to(tl.int64) * stride_dvh
        tl.store(dk_base + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
                 dk.to(dk_ptr.dtype.element_ty), mask=kv_mask)
        tl.store(dv_base + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
                 dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)
    else:
        # ---- dQ of rows [start_m, start_m + BLOCK_M2) of query head kv_head * group + g
        idx = pid - key_blocks
        query_blocks = tl.cdiv(n_q, BLOCK_M2)
        g = idx // query_blocks
        start_m = (idx % query_blocks) * BLOCK_M2
        head = (kv_head * group + g).to(tl.int64)
        q_base = q_ptr + batch.to(tl.int64) * stride_qb + head * stride_qh
        do_base = do_ptr + batch.to(tl.int64) * stride_dob + head * stride_doh
        dq_base = dq_ptr + batch.to(tl.int64) * stride_dqb + head * stride_dqh
        offs_m = start_m + tl.arange(0, BLOCK_M2)
        m_in = offs_m < n_q
        q_mask = m_in[:, None] & d_in[None, :]
        q = tl.load(q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=q_mask,
                    other=0.0)
        do = tl.load(do_base + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=q_mask,
                     other=0.0)
        lse2 = tl.load(lse_b + head * n_q + offs_m, mask=m_in, other=0.0) * LOG2E
        delta = tl.load(delta_b + head * n_q + offs_m, mask=m_in, other=0.0)
        q = q.to(DOT_DTYPE)
        do = do.to(DOT_DTYPE)
        dq = tl.zeros((BLOCK_M2, BLOCK_D), dtype=tl.float32)
        last_row = tl.minimum(start_m + BLOCK_M2, n_q) - 1
        lo, full_lo, full_hi, hi = visible_ranges(start_m, last_row, n_k, shift, window_left, window_right,
                                                  BLOCK_N2)
        for start_n in range(full_lo, full_hi, BLOCK_N2):
            dq = bwd_dq_tile(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn,
                             stride_vd, offs_m, offs_d, start_n, n_k, shift, window_left, window_right,
                             qk_scale, False, HEAD_DIM, BLOCK_D, DOT_DTYPE, DOT_PRECISION, BLOCK_N2)
        for tile in range(0, edge_tiles(lo, full_lo, full_hi, hi, BLOCK_N2)):
            dq = bwd_dq_tile(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn,
                             stride_vd, offs_m, offs_d, edge_tile(tile, lo, full_lo, full_hi, BLOCK_N2), n_k,
                             shift, window_left, window_right, qk_scale,
                             True, HEAD_DIM, BLOCK_D, DOT_DTYPE, DOT_PRECISION, BLOCK_N2)
        dq *= scale
        tl.store(dq_base + offs_m[:, None] * stride_dqn + offs_d[None, :] * stride_dqd,
                 dq.to(dq_ptr.dtype.element_ty), mask=q_mask)


# (BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2, num_warps, num_stages) of the one launch, by padded D:
# the largest tiles that compile for sm_90 without spills (Triton 3.6, benchmarks/compile_offline.py
# --hopper): D=64 238 registers, D=128 245. FlexAttention's Hopper tiling at D=128 (64 x 128 dK/dV,
# 128 x 64 dQ, 8 warps, 3 stages) spills 28 bytes here; benchmarks/hopper_experiments.py times both.
# D=16/32/256: not tuned.
FUSED_BWD_CONFIGS = {
    16: (32, 128, 128, 32, 4, 3),
    32: (32, 128, 128, 32, 4, 3),
    64: (64, 128, 128, 64, 8, 3),
    128: (32, 128, 128, 32, 8, 2),
    256: (16, 64, 64, 16, 8, 1),
}
FUSED_BWD_FP32_CONFIG = (32, 64, 64, 32, 4, 1)
FUSED_BWD_INTERPRETER_CONFIG = (16, 32, 32, 16, 4, 1)


def fused_backward_config(block_d, dtype):
    if shared.INTERPRETER:
        return FUSED_BWD_INTERPRETER_CONFIG
    return FUSED_BWD_FP32_CONFIG if dtype == torch.float32 else FUSED_BWD_CONFIGS[block_d]


def fused_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, *, window=None, config=None):
    """(dq, dk, dv) like step 03's ``flash_attention_backward``, in one launch after a delta pre-pass.

    Dense (B, H, N, D) inputs, any strides; ``config``: (BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2,
    num_warps, num_stages) instead of the table above.
    """
    plan = step03.attention_plan(q, k, v, causal, scale, window)
    if plan.varlen:
        raise ValueError("the fused backward takes dense inputs")
    dq, dk, dv = (torch.empty_strided(shape, strides, dtype=plan.dtype, device=plan.device)
                  for shape, strides in zip(plan.shapes, plan.alloc_strides))
    if plan.empty or plan.no_keys:
        return dq.zero_(), dk.zero_(), dv.zero_()
    lse = lse.contiguous()
    block_m1, block_n1, block_m2, block_n2, warps, stages = (
        config or fused_backward_config(plan.block_d, plan.dtype))
    delta = torch.empty_like(lse)
    batch, heads, n_q, n_k = plan.batch, plan.heads, plan.n_q, plan.n_k
    step03._bwd_preprocess_kernel[(triton.cdiv(n_q, 64), batch * heads, 1)](
        o, do, delta, *o.stride(), *do.stride(), *plan.lse_strides, heads, n_q,
        HEAD_DIM=plan.head_dim, BLOCK_D=plan.block_d, BLOCK_M=64)
    grid = (triton.cdiv(n_k, block_n1) + plan.group * triton.cdiv(n_q, block_m2), batch * plan.kv_heads, 1)
    fused_backward_kernel[grid](
        q, k, v, do, lse, delta, dq, dk, dv, *do.stride(), *q.stride(), *k.stride(), *v.stride(),
        *dq.stride(), *dk.stride(), *dv.stride(), heads, plan.group, n_q, n_k, plan.scale, plan.qk_scale,
        plan.window_left, plan.window_right, plan.lower_right,
        HEAD_DIM=plan.head_dim, BLOCK_D=plan.block_d, DOT_DTYPE=plan.dot_dtype, DOT_PRECISION=plan.precision,
        BLOCK_M1=block_m1, BLOCK_N1=block_n1, BLOCK_M2=block_m2, BLOCK_N2=block_n2,
        num_warps=warps, num_stages=stages)
    return dq, dk, dv


# ----------------------------------------------------------------------------- correctness
# (B, H, Hkv, Nq, Nk, D, causal): awkward lengths, GQA, causal and not
CHECK_SHAPES = [(1, 2, 2, 1, 1, 64, False), (1, 2, 1, 97, 97, 64, True), (2, 4, 2, 97, 61, 128, False),
                (1, 2, 2, 1025, 1025, 128, True), (1, 4, 1, 1025, 1025, 64, False),
                (1, 2, 2, 128, 128, 64, True)]
CHECK_SHAPES_INTERPRETER = [(1, 2, 2, 1, 1, 64, False), (1, 2, 1, 37, 37, 64, True),
                            (1, 2, 2, 40, 23, 32, False)]


def check_forward(shapes=None, dtypes=(torch.float16, torch.bfloat16), warp_specialize=(False, True),
                  config=None, verbose=True):
    """The TMA forward against the float64 reference: True when every case passes."""
    shapes = shapes or (CHECK_SHAPES_INTERPRETER if shared.INTERPRETER else CHECK_SHAPES)
    passed = True
    for dtype in dtypes:
        for b, h, hkv, n_q, n_k, d, causal in shapes:
            q, k, v = shared.make_qkv(b, h, n_q, d, n_k=n_k, kv_heads=hkv, dtype=dtype)
            ref, ref_lse = shared.reference_attention(q, k, v, causal=causal, return_lse=True)
            atol, rtol = shared.tolerance(dtype)
            for ws in warp_specialize:
                o, lse = tma_attention_forward(q, k, v, causal, config=config, warp_specialize=ws)
                err = (o.double() - ref).abs().max().item()
                ok = bool(((o.double() - ref).abs() <= atol + rtol * ref.abs()).all()) and \
                    (lse.double() - ref_lse).abs().max().item() < 1e-2
                passed &= ok
                if verbose:
                    print(f"  tma fwd ws={ws!s:<5} B={b} H={h} Hkv={hkv} Nq={n_q} Nk={n_k} D={d} "
                          f"causal={causal!s:<5} "
                          f"{str(dtype)[6:]:<8} {'PASS' if ok else 'FAIL'} max err {err:.2e}")
    return passed


def check_backward(shapes=None, dtypes=(torch.float16, torch.bfloat16), config=None, verbose=True):
    """The fused backward against float64 autograd (step 03's rule): True when every case passes."""
    shapes = shapes or (CHECK_SHAPES_INTERPRETER if shared.INTERPRETER else CHECK_SHAPES)
    passed = True
    for dtype in dtypes:
        for b, h, hkv, n_q, n_k, d, causal in shapes:
            q, k, v = shared.make_qkv(b, h, n_q, d, n_k=n_k, kv_heads=hkv, dtype=dtype)
            o, lse = step03.flash_attention_forward(q, k, v, causal=causal)
            do = torch.randn_like(o)
            ours = fused_attention_backward(do, q, k, v, o, lse, causal=causal, config=config)
            errs = shared.compare_gradients(ours, q, k, v, do, causal=causal)
            ok = all(e["ok"] for e in errs)
            passed &= ok
            if verbose:
                print(f"  fused bwd B={b} H={h} Hkv={hkv} Nq={n_q} Nk={n_k} D={d} causal={causal!s:<5} "
                      f"{str(dtype)[6:]:<8} {'PASS' if ok else 'FAIL'} dq/dk/dv err "
                      + " ".join(f"{e['ours']:.1e}" for e in errs))
    return passed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)  # no options: --help says what this is
    print(shared.describe_runtime())
    ok = check_backward()
    try:
        ok &= check_forward()
    except Exception as exc:  # noqa: BLE001  (an interpreter without tensor descriptors)
        if not shared.INTERPRETER:
            raise
        print(f"  tma fwd: not run in this interpreter ({type(exc).__name__}: {str(exc)[:200]})")
    print("ALL PASS" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
