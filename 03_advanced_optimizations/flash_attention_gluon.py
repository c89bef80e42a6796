"""Step 03, Hopper only: the FlashAttention forward written in Gluon (TMA, mbarriers, async wgmma).

Since flash_attention.py: that kernel is written in `tl`, and the compiler decides how its
loads are pipelined, which tensor-core instruction runs and when a product is waited for.
This file writes the same forward pass one level lower, in Gluon (Triton's layout-explicit
language, shipped with Triton 3.6), so that each of those decisions is in the source:
  * Q, K and V tiles come in by TMA (one instruction per tile, no address arithmetic in the
    threads) into a ring of shared-memory buffers, each guarded by an mbarrier;
  * both products are asynchronous warpgroup MMAs (wgmma), and the loop is software-pipelined
    by hand in the source: the next tile's S = Q K^T is issued before this tile's softmax, and
    the wait for both products comes after it. But ptxas moves that wait (SASS
    `WARPGROUP.DEPBAR.LE gsb0, 0x0`) above the softmax's exp2s, so in the code that runs the
    softmax overlaps no product (checked in the SASS of every variant; see "takeaways");
  * P goes from the softmax to the second product in registers (a dot-operand layout), never
    through shared memory.
It is forward only, Hopper (sm_90) only, fp16/bf16, head dim 64 or 128, Nq == Nk, causal
(top-left) or not, any N. A second kernel (`--kernel ws`, experimental) splits the work as
FlashAttention-3 does: a producer warp for the TMA loads, two consumer warpgroups. A third
(`--kernel fa3order`, experimental) is the first with FlashAttention-3's wait order: one
product retired at a time (wait(1)), the softmax beside P V only. The `tl`
kernel stays the teaching kernel and the fallback for everything else; nothing here falls
back to it silently.

Measured (H100, bf16, B=4, H=32; results/hopper_experiments*.json, README section 7): it runs at
0.79x to 0.88x of cuDNN's speed at head dim 128, 1.04x to 1.12x the `tl` kernel's; at head dim 64 slower
than the `tl` kernel (0.71x to 0.81x of cuDNN against 0.91x to 0.95x). The ws kernel passes
the check and was not timed.

You will learn:
  * Gluon's explicit layouts: the wgmma accumulator layout (NVMMADistributedLayout v3), the
    register operand layout of P (DotOperandLayout), the swizzled shared layout TMA and wgmma
    agree on (NVMMASharedLayout), and the row layout of the softmax statistics (SliceLayout);
  * TMA loads and mbarrier phases: expect bytes, issue, wait on the parity of the slot's use;
  * asynchronous wgmma: a product is a token until `warpgroup_mma_wait` says it is done, and
    where the wait sits is what lets the tensor cores and the softmax run at the same time
    (and why ptxas may refuse a finer schedule: its warning C7514);
  * what FlashAttention-3 adds beyond that (a producer warp, two consumer warpgroups in
    ping-pong) and what of it this file does and does not do (see "takeaways" at the end).

Run it (Hopper GPU; torch with CUDA, Triton 3.6):
    python flash_attention_gluon.py --check           # float64 reference, every case; exit 1 on a failure
    python flash_attention_gluon.py --bench           # TFLOP/s beside step 03's tl kernel and cuDNN
    python flash_attention_gluon.py                   # both
    timeout 300 python flash_attention_gluon.py --kernel ws --check   # the warp-specialized kernel
    python flash_attention_gluon.py --kernel fa3order --check         # FlashAttention-3's wait order
Offline (no GPU: compile for sm_90 and read the PTX; Triton 3.6 on PYTHONPATH):
    TRITON_INTERPRET=0 PYTHONPATH=/path/to/triton36 python flash_attention_gluon.py --compile-only
Without a Hopper GPU, --check and --bench say so in one line and exit 0.
"""
import argparse
import itertools
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

COMPILE_ONLY = "--compile-only" in sys.argv[1:] and __name__ == "__main__"
if COMPILE_ONLY and os.environ.get("TRITON_INTERPRET") != "0":
    sys.exit("--compile-only compiles kernels: set TRITON_INTERPRET=0 (and PYTHONPATH to Triton 3.6)")

import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402  (for tl.constexpr constants, which Gluon kernels read too)

HERE = Path(__file__).resolve().parent
LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) = exp2(x * log2(e)); LOG2E.value on the host
LN2 = tl.constexpr(0.6931471805599453)  # ln(2): a log2-domain logsumexp back to natural log
HEAD_DIMS = (64, 128)
DTYPES = (torch.float16, torch.bfloat16)

# Gluon ships with Triton 3.6 as `triton.experimental.gluon`; the names below are the 3.6 ones.
# An experimental API may move between releases, so a failed import is kept and reported
# when the kernel is asked for, and the rest of this file (--help, the no-GPU path) still works.
try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        mbarrier, tma, warpgroup_mma, warpgroup_mma_init, warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    GLUON_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the installed Triton
    GLUON_IMPORT_ERROR = exc

    class _NoGluon:  # lets the decorators below run; the kernel then refuses to launch
        @staticmethod
        def jit(fn):
            return fn

    gluon = _NoGluon()

# ----------------------------------------------------------------------------- motivation
# The tl kernel reaches 0.80-0.86x cuDNN at D=128 on an H200. Its inner loop is
#     S = tl.dot(q, k^T); softmax(S); acc = tl.dot(p, v, acc)
# and Triton's pipeliner prefetches K/V with cp.async/TMA and makes the dots wgmma, but the
# softmax of a tile and the products still mostly take turns: the tensor cores wait while
# the exp2 units (16 per SM per clock, against 1024 fp16 FMAs/clock/SM of tensor core) work.
# FlashAttention-3 overlaps them. Per query tile (BLOCK_M rows, 8 warps = 2 warpgroups,
# each warpgroup owns 64 rows and issues its own wgmma):
#
#     load Q by TMA; load K_0.., V_0.. by TMA into a ring of STAGES slots
#     S_0 = Q K_0^T                                            # async wgmma, waited
#     for j in 0 .. T-2:                                       # (the last tile: the same, no S_{j+1})
#         issue S_{j+1} = Q K_{j+1}^T  (async)                 # tensor cores busy with S_{j+1}
#         P_j, alpha = online_softmax(S_j)                     #   and O += P_{j-1} V_{j-1}, while
#                                                              #   the threads do the exp2s
#                                                              #   (as written: ptxas moves the
#                                                              #   wait up, see the takeaways)
#         wait(0): both products have finished
#         O = O * alpha;  issue O += P_j V_j  (async)          # still running at the next softmax
#         refill the K slot S_{j+1} came from and the V slot P_{j-1} V_{j-1} read
#     O /= l;  lse = (m + log2 l) * ln 2;  store
#
# Memory traffic is the tl kernel's: Q once, K and V once per query tile, O once.


# ----------------------------------------------------------------------------- kernel
@gluon.jit
def query_tile(seqlen, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr):
    """(off_m, row0): this program's first query row within its head, and the head's first row
    in the flattened (B*H*N, D) tensors (program_id(1) = batch * H + h)."""
    if CAUSAL:  # longest rows first: the diagonal tiles' short programs fill the tail of the grid
        pid_m = gl.num_programs(0) - 1 - gl.program_id(0)
    else:
        pid_m = gl.program_id(0)
    return pid_m * BLOCK_M, gl.program_id(1) * seqlen


@gluon.jit
def visible_key_tiles(off_m, seqlen, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    """(mask_from, n_tiles): key tiles ending at or below mask_from need no mask; n_tiles >= 1
    tiles are visible (every row sees key 0; causal: none past the last row's diagonal)."""
    if CAUSAL:
        hi = gl.minimum(seqlen, off_m + BLOCK_M)
        mask_from = gl.minimum(seqlen, off_m + 1)
    else:
        hi = seqlen
        mask_from = seqlen
    return mask_from, gl.cdiv(hi, BLOCK_N)


@gluon.jit
def init_ring_barriers(q_bar, k_bars, v_bars, STAGES: gl.constexpr):
    """Count 1 each: the expect() arrives once, then the TMA's bytes complete the phase."""
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_bars.index(i), count=1)
        mbarrier.init(v_bars.index(i), count=1)


@gluon.jit
def invalidate_ring_barriers(q_bar, k_bars, v_bars, STAGES: gl.constexpr):
    mbarrier.invalidate(q_bar)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(k_bars.index(i))
        mbarrier.invalidate(v_bars.index(i))


@gluon.jit
def load_kv_tile(desc, row, bars, smem, slot, pred):
    """TMA: one (BLOCK_N, D) tile of K or V into ring slot `slot`; its mbarrier counts the bytes."""
    bar = bars.index(slot)
    mbarrier.expect(bar, desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(desc, [row, 0], bar, smem.index(slot), pred=pred)


@gluon.jit
def online_softmax(s, m_i, l_i, start_n, mask_from, seqlen, off_m, qk_scale,
                   CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                   s_layout: gl.constexpr):
    """One tile of the online softmax, log2 domain; returns (P fp32, alpha, m, l).

    Only tiles that reach past `mask_from` (the causal diagonal, or the ragged end where a TMA
    tile runs into the next head's keys) pay for a mask: the test is one scalar branch.
    """
    if start_n + BLOCK_N > mask_from:
        cols = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        visible = gl.expand_dims(cols < seqlen, 0)
        if CAUSAL:  # top-left: row i sees keys j <= i
            rows = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
            visible = visible & (gl.expand_dims(cols, 0) <= gl.expand_dims(rows, 1))
        s = gl.where(visible, s, float("-inf"))  # the scale is > 0, so -inf stays -inf
    # Row max of the raw products, scaled once per row; then one FMA per score: s * c - m.
    # Every row sees key 0 in the first tile, so m is finite from then on (no -inf - -inf).
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)  # how much the old state shrinks: 0 on the first tile
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, alpha, m_new, l_i


@gluon.jit
def flash_attention_gluon_kernel(
    q_desc, k_desc, v_desc,  # TMA descriptors over (B*H*N, D): tiles (BLOCK_M, D), (BLOCK_N, D), (BLOCK_N, D)
    o_ptr, lse_ptr,  # outputs: o (B, H, N, D) contiguous like q's dtype, lse (B, H, N) float32
    seqlen,  # N, queries and keys per (batch, head)
    qk_scale,  # softmax scale * log2(e)
    CAUSAL: gl.constexpr,  # top-left causal mask (key j visible to query i iff j <= i)
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
    STAGES: gl.constexpr,  # K/V ring depth (each slot holds one K tile and one V tile)
    num_warps: gl.constexpr,  # 4 (one warpgroup, BLOCK_M = 64) or 8 (two, BLOCK_M = 128)
):
    dtype: gl.constexpr = q_desc.dtype
    off_m, row0 = query_tile(seqlen, CAUSAL, BLOCK_M)

    # ---- layouts ---------------------------------------------------------------------------
    # wgmma accumulators: warps stacked along M (16 rows per warp, 64 per warpgroup);
    # instruction shape [m=16, n=tile width, k=16 for 16-bit inputs].
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    # P as wgmma's A operand from registers: the S accumulator's fragments, two 16-bit values
    # per 32-bit register, so the conversion below moves no data.
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)  # one value per query row (m, l, alpha)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)

    # ---- shared memory: Q, the K and V rings, and their mbarriers -----------------------------
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    init_ring_barriers(q_bar, k_bars, v_bars, STAGES)

    # ---- which key tiles this query tile sees ------------------------------------------------
    mask_from, n_tiles = visible_key_tiles(off_m, seqlen, CAUSAL, BLOCK_M, BLOCK_N)

    # ---- prologue: Q, then the first STAGES tiles of K and V -----------------------------------
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [row0 + off_m, 0], q_bar, q_smem)
    for i in gl.static_range(STAGES):
        load_kv_tile(k_desc, row0 + i * BLOCK_N, k_bars, k_smem, i, i < n_tiles)
        load_kv_tile(v_desc, row0 + i * BLOCK_N, v_bars, v_smem, i, i < n_tiles)

    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=s_rows)  # running row max, log2 units
    l_i = gl.full([BLOCK_M], 0.0, gl.float32, layout=s_rows)  # running row sum
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)  # use_acc=False ignores its values
    # The accumulator lives as a wgmma token across iterations: O += P V is still running when
    # an iteration ends. warpgroup_mma_init wraps the zeros so the loop carries one type.
    acc = warpgroup_mma_init(gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout))

    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_bars.index(0), 0)
    s_tok = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s_tok, ))
    # K_0's slot is free again: refill it with K_STAGES.
    load_kv_tile(k_desc, row0 + STAGES * BLOCK_N, k_bars, k_smem, 0, STAGES < n_tiles)

    # ---- main loop: tile j's softmax between tile j+1's Q K^T and tile j's P V ---------------
    # Ring slot of tile t: t % STAGES; its mbarrier completes once per use, so the phase
    # (parity) to wait for is (t // STAGES) & 1: 0 on the first use, 1 on the second, ...
    for j in range(0, n_tiles - 1):
        start_n = j * BLOCK_N
        nxt = (j + 1) % STAGES
        mbarrier.wait(k_bars.index(nxt), ((j + 1) // STAGES) & 1)
        s_tok = warpgroup_mma(q_smem, k_smem.index(nxt).permute((1, 0)), s_zero, use_acc=False, is_async=True)

        p, alpha, m_i, l_i = online_softmax(s, m_i, l_i, start_n, mask_from, seqlen, off_m, qk_scale,
                                            CAUSAL, BLOCK_M, BLOCK_N, s_layout)

        # In the source, that softmax runs while two products are in flight: P_{j-1} V_{j-1}
        # (issued by the previous iteration) and Q K_{j+1}^T. ptxas, though, moves this wait
        # above the softmax's exp2s (the SASS shows WARPGROUP.DEPBAR before every MUFU.EX2), so
        # nothing overlaps. Retire both: O is rescaled next, and S_{j+1} is the next input.
        # (Waiting for one at a time, wait(1) then wait(1), is the
        # finer schedule, but ptxas 12.x then serializes every wgmma of the kernel, warning
        # C7514 about "non wgmma instructions reading accumulator registers" inside a pipeline
        # stage; our reading: it cannot tell which group a wait(1) retired across the back edge.)
        s, o = warpgroup_mma_wait(0, deps=(s_tok, acc))
        o = o * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
        cur = j % STAGES
        mbarrier.wait(v_bars.index(cur), (j // STAGES) & 1)
        p_op = gl.convert_layout(p.to(dtype), p_layout)
        acc = warpgroup_mma(p_op, v_smem.index(cur), o, is_async=True)  # in flight into the next softmax

        # Refill the slots those two products read: K's slot `nxt` and V's slot of tile j-1 (when
        # j = 0 there was no tile -1: the prologue already loaded V_{STAGES-1}).
        load_kv_tile(k_desc, row0 + (j + 1 + STAGES) * BLOCK_N, k_bars, k_smem, nxt,
                     j + 1 + STAGES < n_tiles)
        prev = (j + STAGES - 1) % STAGES
        load_kv_tile(v_desc, row0 + (j - 1 + STAGES) * BLOCK_N, v_bars, v_smem, prev,
                     (j >= 1) & (j - 1 + STAGES < n_tiles))

    # ---- last tile: no next Q K^T to overlap ----------------------------------------------------
    j_last = n_tiles - 1
    p, alpha, m_i, l_i = online_softmax(s, m_i, l_i, j_last * BLOCK_N, mask_from, seqlen, off_m, qk_scale,
                                        CAUSAL, BLOCK_M, BLOCK_N, s_layout)
    o = warpgroup_mma_wait(0, deps=(acc, ))
    o = o * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
    cur = j_last % STAGES
    mbarrier.wait(v_bars.index(cur), (j_last // STAGES) & 1)
    acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v_smem.index(cur), o, is_async=True)
    o = warpgroup_mma_wait(0, deps=(acc, ))

    invalidate_ring_barriers(q_bar, k_bars, v_bars, STAGES)

    # ---- epilogue: O / l, the natural-log lse, masked stores ------------------------------------
    store_rows(o, m_i, l_i, o_ptr, lse_ptr, row0, off_m, seqlen, BLOCK_M, HEAD_DIM, num_warps)


@gluon.jit
def store_rows(o, m_i, l_i, o_ptr, lse_ptr, row0, off_m, seqlen,
               BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr, num_warps: gl.constexpr):
    """O / l and the natural-log lse of rows off_m.. of this head; rows past N are not stored.

    Rows past N were computed (their TMA rows belong to the next head, or were zero-filled)
    but must not be written: a TMA store of the whole tile would overwrite the next head's rows.
    """
    o = o / gl.expand_dims(gl.convert_layout(l_i, gl.SliceLayout(1, o.type.layout)), 1)
    lse = (m_i + gl.log2(l_i)) * LN2  # log2 domain -> natural log
    lse_rows = off_m + gl.arange(0, BLOCK_M, layout=m_i.type.layout)
    gl.store(lse_ptr + row0 + lse_rows, lse, mask=lse_rows < seqlen)
    # A coalesced layout for the store: 8 contiguous 16-bit values (16 bytes) per thread.
    TPW_D: gl.constexpr = HEAD_DIM // 8
    out_layout: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 8], threads_per_warp=[32 // TPW_D, TPW_D],
                                                warps_per_cta=[num_warps, 1], order=[1, 0])
    o_out = gl.convert_layout(o.to(o_ptr.dtype.element_ty), out_layout)
    rows = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, out_layout))
    cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, out_layout))
    offs = gl.expand_dims((row0 + rows).to(gl.int64) * HEAD_DIM, 1) + gl.expand_dims(cols, 0)
    gl.store(o_ptr + offs, o_out, mask=gl.expand_dims(rows < seqlen, 1))


# ----------------------------------------------------------------------------- kernel, FA3's wait order
# The same math as flash_attention_gluon_kernel, products issued and retired in the order of
# FlashAttention-3's consumer loop (hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp), one group at a
# time. P_j and alpha_j come from the previous iteration's softmax:
#
#     S_0 = Q K_0^T, waited;  P_0, alpha_0 = online_softmax(S_0)
#     for j in 0 .. T-2:
#         wait(0): P_{j-1} V_{j-1} is done (nothing in flight when j = 0)
#         issue S_{j+1} = Q K_{j+1}^T                      # group 1
#         O = O * alpha_j;  issue O += P_j V_j             # group 2; the rescale overlaps group 1
#         wait(1): S_{j+1} is done (groups retire in order), P_j V_j still runs
#         P_{j+1}, alpha_{j+1} = online_softmax(S_{j+1})   # overlaps P_j V_j
#     wait(0);  O = O * alpha_{T-1};  O += P_{T-1} V_{T-1}, waited
#
# Every wait retires the same groups on every path into it, and ptxas keeps the wgmmas
# asynchronous (no C7514). The wait(0) is at the top of the iteration, not after the softmax
# where FlashAttention-3 writes it: ptxas moves a wgmma wait up its basic block past the
# arithmetic before it, and after a softmax it lands before the exp2s (in the SASS of the
# default kernel too, `cuobjdump -sass`); the loop's back edge keeps it in place.
@gluon.jit
def after_issue(x):
    """x (fp32) through a volatile `mov`: it stays after the asm before it (a wgmma issue), and so does
    what reads it; the compilers are otherwise free to move arithmetic above an issue."""
    return gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=gl.float32, is_pure=False, pack=1)


@gluon.jit
def flash_attention_gluon_fa3order_kernel(
    q_desc, k_desc, v_desc, o_ptr, lse_ptr, seqlen, qk_scale,  # as flash_attention_gluon_kernel
    CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
    STAGES: gl.constexpr, num_warps: gl.constexpr,
):
    dtype: gl.constexpr = q_desc.dtype
    off_m, row0 = query_tile(seqlen, CAUSAL, BLOCK_M)

    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)

    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    init_ring_barriers(q_bar, k_bars, v_bars, STAGES)
    mask_from, n_tiles = visible_key_tiles(off_m, seqlen, CAUSAL, BLOCK_M, BLOCK_N)

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [row0 + off_m, 0], q_bar, q_smem)
    for i in gl.static_range(STAGES):
        load_kv_tile(k_desc, row0 + i * BLOCK_N, k_bars, k_smem, i, i < n_tiles)
        load_kv_tile(v_desc, row0 + i * BLOCK_N, v_bars, v_smem, i, i < n_tiles)

    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=s_rows)
    l_i = gl.full([BLOCK_M], 0.0, gl.float32, layout=s_rows)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    # O += P V is a token across the back edge, as in the default kernel.
    acc = warpgroup_mma_init(gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout))

    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_bars.index(0), 0)
    s_tok = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s_tok, ))
    load_kv_tile(k_desc, row0 + STAGES * BLOCK_N, k_bars, k_smem, 0, STAGES < n_tiles)
    p, alpha, m_i, l_i = online_softmax(s, m_i, l_i, 0, mask_from, seqlen, off_m, qk_scale,
                                        CAUSAL, BLOCK_M, BLOCK_N, s_layout)

    for j in range(0, n_tiles - 1):
        nxt = (j + 1) % STAGES
        cur = j % STAGES
        # P_{j-1} V_{j-1} (none when j = 0) is the only group in flight: retire it here, at the top
        # of the iteration rather than at the end of the last one, where ptxas hoists the wait
        # above the softmax (it schedules a wgmma wait like an instruction with no inputs).
        o = warpgroup_mma_wait(0, deps=(acc, ))
        prev = (j + STAGES - 1) % STAGES
        load_kv_tile(v_desc, row0 + (j - 1 + STAGES) * BLOCK_N, v_bars, v_smem, prev,
                     (j >= 1) & (j - 1 + STAGES < n_tiles))  # V_{j-1} read: its slot takes V_{j-1+STAGES}
        p_op = gl.convert_layout(p.to(dtype), p_layout)
        mbarrier.wait(k_bars.index(nxt), ((j + 1) // STAGES) & 1)
        s_tok = warpgroup_mma(q_smem, k_smem.index(nxt).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        # The rescale reads alpha through a volatile asm so that LLVM does not hoist it above the
        # Q K^T issue: it runs while that product does.
        o = o * gl.expand_dims(after_issue(gl.convert_layout(alpha, o_rows)), 1)
        mbarrier.wait(v_bars.index(cur), (j // STAGES) & 1)
        acc = warpgroup_mma(p_op, v_smem.index(cur), o, is_async=True)
        # Two groups in flight, S_{j+1}'s first: wait(1) retires it and leaves P_j V_j running.
        s = warpgroup_mma_wait(1, deps=(s_tok, ))
        load_kv_tile(k_desc, row0 + (j + 1 + STAGES) * BLOCK_N, k_bars, k_smem, nxt,
                     j + 1 + STAGES < n_tiles)  # K_{j+1} read: its slot takes K_{j+1+STAGES}
        p, alpha, m_i, l_i = online_softmax(s, m_i, l_i, (j + 1) * BLOCK_N, mask_from, seqlen, off_m, qk_scale,
                                            CAUSAL, BLOCK_M, BLOCK_N, s_layout)

    j_last = n_tiles - 1
    cur = j_last % STAGES
    o = warpgroup_mma_wait(0, deps=(acc, ))
    o = o * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
    mbarrier.wait(v_bars.index(cur), (j_last // STAGES) & 1)
    acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v_smem.index(cur), o, is_async=True)
    o = warpgroup_mma_wait(0, deps=(acc, ))

    invalidate_ring_barriers(q_bar, k_bars, v_bars, STAGES)
    store_rows(o, m_i, l_i, o_ptr, lse_ptr, row0, off_m, seqlen, BLOCK_M, HEAD_DIM, num_warps)


# ----------------------------------------------------------------------------- kernel, warp-specialized
# FlashAttention-3's division of labour, in three partitions of one program (128 query rows):
#
#     producer   (1 warp):        Q once; then for each key tile t: wait until ring slot t % STAGES
#                                 is empty, TMA K_t and V_t into it (ready barriers count the bytes)
#     consumer 0 (4 warps = 1 WG): rows   0..63 : the loop above, on ready/empty barriers
#     consumer 1 (4 warps = 1 WG): rows  64..127: the same, on the same K/V slots
#
# A slot is "empty" again when both consumers have retired the product that read it: its empty
# barrier is initialised with count 2 and each consumer arrives once per use. The producer is
# one warp because issuing a TMA copy is one instruction; it needs few registers (setmaxnreg
# gives the consumers the rest). The two warpgroups run independently, so while one is in
# its softmax the other's products can keep the tensor cores busy; FA3 also forces them to
# alternate (ping-pong, with named barriers), which this kernel leaves to the warp scheduler.


@gluon.jit
def ws_producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty, v_empty,
                row0, off_m, n_tiles, BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [row0 + off_m, 0], q_bar, q_smem)
    for t in range(0, n_tiles):
        slot = t % STAGES
        # Use u = t // STAGES of this slot needs use u-1 released: the empty barrier's (u-1)-th
        # completion, parity (u - 1) & 1. The first STAGES tiles find their slots empty.
        reuse = t >= STAGES
        phase = ((t // STAGES) + 1) & 1
        mbarrier.wait(k_empty.index(slot), phase, pred=reuse)
        load_kv_tile(k_desc, row0 + t * BLOCK_N, k_ready, k_smem, slot, True)
        mbarrier.wait(v_empty.index(slot), phase, pred=reuse)
        load_kv_tile(v_desc, row0 + t * BLOCK_N, v_ready, v_smem, slot, True)


@gluon.jit
def ws_consumer(q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty, v_empty, o_ptr, lse_ptr,
                row0, off_m, seqlen, qk_scale, n_tiles,
                WG: gl.constexpr,  # which warpgroup: rows off_m + 64 * WG ..
                CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr):
    ROWS: gl.constexpr = 64  # one warpgroup's rows: 4 warps x 16
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)

    my_m = off_m + WG * ROWS
    q_mine = q_smem.slice(WG * ROWS, ROWS)  # this warpgroup's 64 rows of the Q tile
    # Both consumers walk the program's n_tiles tiles (each slot needs both releases); with
    # a causal mask consumer 0 may meet one tile it sees none of: masked, p = 0, no harm.
    if CAUSAL:
        mask_from = gl.minimum(seqlen, my_m + 1)
    else:
        mask_from = seqlen

    m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=s_rows)
    l_i = gl.full([ROWS], 0.0, gl.float32, layout=s_rows)
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)
    acc = warpgroup_mma_init(gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout))

    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_ready.index(0), 0)
    s_tok = warpgroup_mma(q_mine, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s_tok, ))
    mbarrier.arrive(k_empty.index(0), count=1)  # K_0 read: this consumer's half of the release

    for j in range(0, n_tiles - 1):
        nxt = (j + 1) % STAGES
        mbarrier.wait(k_ready.index(nxt), ((j + 1) // STAGES) & 1)
        s_tok = warpgroup_mma(q_mine, k_smem.index(nxt).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        p, alpha, m_i, l_i = online_softmax(s, m_i, l_i, j * BLOCK_N, mask_from, seqlen, my_m, qk_scale,
                                            CAUSAL, ROWS, BLOCK_N, s_layout)
        s, o = warpgroup_mma_wait(0, deps=(s_tok, acc))
        # Both products retired: release K_{j+1}'s slot and V_{j-1}'s (none when j = 0).
        mbarrier.arrive(k_empty.index(nxt), count=1)
        mbarrier.arrive(v_empty.index((j + STAGES - 1) % STAGES), count=1, pred=j >= 1)
        o = o * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
        cur = j % STAGES
        mbarrier.wait(v_ready.index(cur), (j // STAGES) & 1)
        acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v_smem.index(cur), o, is_async=True)

    j_last = n_tiles - 1
    p, alpha, m_i, l_i = online_softmax(s, m_i, l_i, j_last * BLOCK_N, mask_from, seqlen, my_m, qk_scale,
                                        CAUSAL, ROWS, BLOCK_N, s_layout)
    o = warpgroup_mma_wait(0, deps=(acc, ))
    o = o * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
    cur = j_last % STAGES
    mbarrier.wait(v_ready.index(cur), (j_last // STAGES) & 1)
    acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v_smem.index(cur), o, is_async=True)
    o = warpgroup_mma_wait(0, deps=(acc, ))
    # (The last slots need no release: the producer has issued every tile by now.)
    store_rows(o, m_i, l_i, o_ptr, lse_ptr, row0, my_m, seqlen, ROWS, HEAD_DIM, 4)


@gluon.jit
def flash_attention_gluon_ws_kernel(
    q_desc, k_desc, v_desc, o_ptr, lse_ptr, seqlen, qk_scale,  # as flash_attention_gluon_kernel
    CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
    STAGES: gl.constexpr,
    num_warps: gl.constexpr,  # 4: the default partition is consumer 0; the others are added warps
):
    gl.static_assert(BLOCK_M == 128, "two consumer warpgroups of 64 rows")
    dtype: gl.constexpr = q_desc.dtype
    off_m, row0 = query_tile(seqlen, CAUSAL, BLOCK_M)
    n_tiles = visible_key_tiles(off_m, seqlen, CAUSAL, BLOCK_M, BLOCK_N)[1]

    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)  # the producer's expect(); TMA's bytes finish it
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # one arrive from each consumer
        mbarrier.init(v_empty.index(i), count=2)

    # Each partition gets its arguments as a tuple; constexprs travel as such (WG: 0 or 1).
    gl.warp_specialize([
        (ws_consumer, (q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty, v_empty, o_ptr, lse_ptr,
                       row0, off_m, seqlen, qk_scale, n_tiles, 0, CAUSAL, BLOCK_N, HEAD_DIM, STAGES)),
        (ws_consumer, (q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty, v_empty, o_ptr, lse_ptr,
                       row0, off_m, seqlen, qk_scale, n_tiles, 1, CAUSAL, BLOCK_N, HEAD_DIM, STAGES)),
        (ws_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty,
                       v_empty, row0, off_m, n_tiles, BLOCK_N, STAGES)),
    ], [4, 1], [WS_CONSUMER_REGS, WS_PRODUCER_REGS])


# ----------------------------------------------------------------------------- launcher
def forward_config(head_dim):
    """(BLOCK_M, BLOCK_N, STAGES, num_warps). Two warpgroups of 64 rows per program; the ring
    is as deep as ~227 KB of shared memory allows (a slot holds a K and a V tile)."""
    if head_dim == 64:
        return (128, 128, 3, 8)  # Q 16 KB + 3 x (16 + 16) KB
    return (128, 128, 2, 8)  # Q 32 KB + 2 x (32 + 32) KB


# A second tile shape the benchmark times beside the default (column "gluon n64"): narrower
# key tiles, half the S registers, one more ring slot. Which one wins is the GPU's to say.
ALT_CONFIG = (128, 64, 3, 8)
# The warp-specialized kernel: registers per thread asked for the added partitions (setmaxnreg):
# consumer 1 gets what consumer 0 (the default partition) has, the TMA warp little.
WS_CONSUMER_REGS = tl.constexpr(232)
WS_PRODUCER_REGS = tl.constexpr(40)


def gluon_unavailable_reason(device=None):
    """None when this kernel can run here, else why not (one line)."""
    if GLUON_IMPORT_ERROR is not None:
        return f"Gluon (triton.experimental.gluon, Triton 3.6) did not import: {GLUON_IMPORT_ERROR}"
    if not torch.cuda.is_available() or shared.INTERPRETER:
        return "it needs a Hopper (sm_90) CUDA GPU, and there is none here (Gluon has no CPU interpreter)"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) != (9, 0):
        return f"it needs a Hopper GPU (sm_90), this one is sm_{major}{minor}"
    return None


def check_inputs(q, k, v, causal, scale):
    """Raise TypeError/ValueError for what this kernel does not do (no silent fallback)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, N, D), got shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        raise TypeError(f"q, k, v must all be float16 or all bfloat16, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"this kernel needs q, k, v of one shape (no GQA, Nq == Nk), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}; use flash_attention.py")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"head dim must be one of {HEAD_DIMS}, got {q.shape[-1]}; use flash_attention.py")
    if causal not in (False, True):
        raise ValueError(f"causal must be True (top-left) or False, got {causal!r}")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if not (q.device == k.device == v.device) or q.device.type != "cuda":
        raise ValueError(f"q, k, v must be on one CUDA device, got {q.device}, {k.device}, {v.device}")


def ws_config(head_dim):
    """The warp-specialized kernel's (BLOCK_M, BLOCK_N, STAGES, num_warps): num_warps = 4 is the
    default partition (consumer 0); consumer 1 (4 warps) and the producer (1 warp) come on top."""
    return (128, 64, 3, 4) if head_dim == 64 else (128, 64, 3, 4)


KERNELS = ("pipelined", "ws", "fa3order")  # flash_attention_gluon_kernel, ..._ws_kernel, ..._fa3order_kernel


def make_launch(q, k, v, causal=False, scale=None, config=None, kernel="pipelined"):
    """(kernel, grid, args, meta) for these inputs, without launching (the offline compile uses it)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    batch, heads, n, d = q.shape
    block_m, block_n, stages, warps = config or (ws_config(d) if kernel == "ws" else forward_config(d))
    gdt = gl.float16 if q.dtype == torch.float16 else gl.bfloat16
    q2, k2, v2 = (t.contiguous().view(batch * heads * n, d) for t in (q, k, v))  # no copy if contiguous
    q_layout = gl.NVMMASharedLayout.get_default_for([block_m, d], gdt)
    kv_layout = gl.NVMMASharedLayout.get_default_for([block_n, d], gdt)
    q_desc = TensorDescriptor.from_tensor(q2, [block_m, d], q_layout)  # out-of-bounds rows read as 0
    k_desc = TensorDescriptor.from_tensor(k2, [block_n, d], kv_layout)
    v_desc = TensorDescriptor.from_tensor(v2, [block_n, d], kv_layout)
    o = torch.empty((batch, heads, n, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, n), dtype=torch.float32, device=q.device)
    qk_scale = (d ** -0.5 if scale is None else float(scale)) * LOG2E.value
    grid = (triton.cdiv(n, block_m), batch * heads)
    args = (q_desc, k_desc, v_desc, o, lse, n, qk_scale)
    meta = dict(CAUSAL=bool(causal), BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d, STAGES=stages,
                num_warps=warps)
    jit_fn = {"pipelined": flash_attention_gluon_kernel, "ws": flash_attention_gluon_ws_kernel,
              "fa3order": flash_attention_gluon_fa3order_kernel}[kernel]
    return jit_fn, grid, args, meta, (o, lse)


def flash_attention_gluon_forward(q, k, v, causal=False, scale=None, *, config=None, kernel="pipelined"):
    """(o, lse) like step 03's ``flash_attention_forward``, from the Gluon kernel.

    q, k, v: (B, H, N, D), one shape (Nq == Nk, no GQA), fp16 or bf16, D in {64, 128}, on a
    Hopper GPU. ``causal=True`` is top-left (SDPA's ``is_causal``). ``o``: (B, H, N, D)
    contiguous, q's dtype; ``lse``: float32 (B, H, N), natural log of sum_j exp(scale q_i.k_j).
    Non-contiguous inputs are copied once (the TMA descriptors want (B*H*N, D) rows).
    ``kernel``: "pipelined" (flash_attention_gluon_kernel, the default), "fa3order"
    (flash_attention_gluon_fa3order_kernel: FlashAttention-3's wait order, same tiles) or "ws"
    (the warp-specialized flash_attention_gluon_ws_kernel).
    """
    check_inputs(q, k, v, causal, scale)
    reason = gluon_unavailable_reason(q.device)
    if reason:
        raise RuntimeError(f"flash_attention_gluon: {reason}")
    if q.numel() == 0:
        b, h, n, d = q.shape
        lse = torch.full((b, h, n), float("-inf"), dtype=torch.float32, device=q.device)
        return torch.zeros_like(q), lse
    jit_fn, grid, args, meta, out = make_launch(q, k, v, causal, scale, config, kernel)
    jit_fn[grid](*args, **meta)
    return out


def flash_attention_gluon(q, k, v, causal=False, scale=None):
    """Attention output only (B, H, N, D): ``flash_attention_gluon_forward(...)[0]``."""
    return flash_attention_gluon_forward(q, k, v, causal, scale)[0]


# ----------------------------------------------------------------------------- correctness
CHECK_LENGTHS = (1, 97, 1025, 4096)


def check(kernel="pipelined"):
    """Every (N, D, causal, dtype) of the brief against the float64 reference; lse too."""
    print(f"Correctness of the Gluon forward ({kernel}) against the float64 reference (B=2, H=3):")
    passed = True
    # The benchmark times both tile shapes of the pipelined kernel, so both are checked.
    configs = (None, ALT_CONFIG) if kernel in ("pipelined", "fa3order") else (None, )
    cases = itertools.product(configs, CHECK_LENGTHS, HEAD_DIMS, (False, True), DTYPES)
    for config, n, d, causal, dtype in cases:
        label = (f"{'default' if config is None else f'{config[0]}x{config[1]}':<8} N={n:<5} D={d:<4} "
                 f"causal={causal!s:<5} {str(dtype)[6:]:<8}")
        q, k, v = shared.make_qkv(2, 3, n, d, dtype=dtype)
        shared.test_utils._poison_allocator(torch.empty_like(q))  # unwritten output -> NaN
        try:  # one failure must not hide the other cases' results
            o, lse = flash_attention_gluon_forward(q, k, v, causal=causal, config=config, kernel=kernel)
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001
            passed = False
            print(f"  {label} FAIL {type(exc).__name__}: {str(exc)[:1500]}")
            continue
        ref, ref_lse = shared.reference_attention(q, k, v, causal=causal, return_lse=True)
        result = shared.compare_with_reference(o, ref, dtype)
        lse_err = (lse.double() - ref_lse).abs().max().item()
        ok = result.passed and lse_err < 1e-2 and lse.shape == ref_lse.shape
        passed &= ok
        print(f"  {label} {'PASS' if ok else 'FAIL'} lse err {lse_err:.1e}  out: {result}")
    # Inputs the kernel must refuse, loudly.
    q, k, v = shared.make_qkv(1, 2, 64, 96, dtype=torch.float16)
    refusals = [("D=96", (q, k, v)), ("float32", tuple(t.float() for t in shared.make_qkv(1, 2, 64, 64))),
                ("GQA", shared.make_qkv(1, 4, 64, 64, kv_heads=2, dtype=torch.float16))]
    for name, (a, b, c) in refusals:
        try:
            flash_attention_gluon_forward(a, b, c)
            print(f"  refuses {name}: FAIL (it ran)")
            passed = False
        except (TypeError, ValueError) as exc:
            print(f"  refuses {name}: PASS ({type(exc).__name__}: {str(exc)[:80]})")
    return passed


# ----------------------------------------------------------------------------- benchmark
def benchmark(out_dir, lengths=(4096, 16384), head_dims=HEAD_DIMS, dtypes=DTYPES, causals=(False, True),
              kernel="pipelined"):
    """Time Gluon, step 03's tl forward and cuDNN (SDPA) on (4, 32, N, D); print TFLOP/s and ratios.

    Columns "gluon" and "gluon n64": the chosen kernel's default and 128x64 tiles (pipelined or
    fa3order); with ``kernel="ws"`` the warp-specialized kernel in both (its one tile shape)."""
    import triton.testing

    tl_forward = shared.load_step("03").flash_attention_forward
    cudnn = shared.sdpa_backend("cudnn")
    alt = None if kernel == "ws" else ALT_CONFIG
    impls = {"gluon": lambda q, k, v, c: flash_attention_gluon_forward(q, k, v, causal=c, kernel=kernel),
             "gluon n64": lambda q, k, v, c: flash_attention_gluon_forward(q, k, v, causal=c, config=alt,
                                                                         kernel=kernel),
             "03 tl": lambda q, k, v, c: tl_forward(q, k, v, causal=c),
             "sdpa cudnn": lambda q, k, v, c: cudnn(q, k, v, causal=c)}
    rows = []
    print(f"\nForward, B=4 H=32, TFLOP/s (do_bench median); ratios to cuDNN. {shared.env_line()}")
    print(f"  {'dtype':<9}{'D':>4}{'N':>7} {'causal':<7}" + "".join(f"{name:>12}" for name in impls)
          + f"{'gluon/cudnn':>13}{'n64/cudnn':>11}{'tl/cudnn':>10}")
    for dtype in dtypes:
        for d in head_dims:
            for n in lengths:
                for causal in causals:
                    q, k, v = shared.make_qkv(4, 32, n, d, dtype=dtype)
                    flops = shared.attention_flops(4, 32, n, n, d, causal)
                    tflops = {}
                    for name, fn in impls.items():
                        try:
                            ms = triton.testing.do_bench(lambda: fn(q, k, v, causal), warmup=10, rep=40)
                            tflops[name] = flops / ms * 1e-9
                        except Exception as exc:  # noqa: BLE001  (a baseline missing on this machine)
                            print(f"  ({name} failed: {type(exc).__name__}: {str(exc)[:120]})")
                            tflops[name] = None
                        rows.append(dict(impl=name, batch=4, heads=32, n_q=n, n_k=n, head_dim=d,
                                         causal=causal, dtype=str(dtype)[6:], mode="fwd", tflops=tflops[name],
                                         ms=None if tflops[name] is None else flops / tflops[name] * 1e-9))
                    ratio = {name: (tflops[name] / tflops["sdpa cudnn"]
                                    if tflops[name] and tflops["sdpa cudnn"] else float("nan"))
                             for name in ("gluon", "gluon n64", "03 tl")}
                    print(f"  {str(dtype)[6:]:<9}{d:>4}{n:>7} {causal!s:<7}"
                          + "".join(f"{tflops[name] or float('nan'):>12.1f}" for name in impls)
                          + f"{ratio['gluon']:>13.2f}{ratio['gluon n64']:>11.2f}{ratio['03 tl']:>10.2f}")
                    del q, k, v
    name = "forward_gluon.json" if kernel == "pipelined" else f"forward_gluon_{kernel}.json"
    path = shared.save_results(out_dir / name, rows, step="03_advanced_optimizations", kernel=kernel,
                               command=" ".join(["python flash_attention_gluon.py", *sys.argv[1:]]))
    print(f"wrote {path}")
    return rows


# ----------------------------------------------------------------------------- offline compile
def compile_only(dump=None, only=None):
    """Compile every variant for sm_90 with no GPU; print registers, spills, smem, instruction counts."""
    import re
    import subprocess

    if GLUON_IMPORT_ERROR is not None:
        print(f"Gluon did not import: {GLUON_IMPORT_ERROR}")
        return 1
    triton.runtime.driver.set_active(shared.runtime.OfflineDriver(90))
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    failures = 0
    print(f"Triton {triton.__version__}, target sm_90a (compiled, never run)")
    for d in HEAD_DIMS:
        for dtype in DTYPES:
            variants = [("pipelined", causal, config) for config in (None, ALT_CONFIG)
                        for causal in (False, True)]
            variants += [("fa3order", causal, config) for config in (None, ALT_CONFIG) for causal in (False, True)]
            variants += [("ws", False, None), ("ws", True, None)]
            for kernel_name, causal, config in variants:
                q, k, v = (torch.empty(2, 3, 1025, d, dtype=dtype) for _ in range(3))
                label = f"{kernel_name:<9} D={d} {str(dtype)[6:]:<8} causal={causal!s:<5}"
                if only and only not in " ".join(label.split()):
                    continue
                try:
                    kernel, grid, args, meta, _ = make_launch(q, k, v, causal, config=config,
                                                              kernel=kernel_name)
                    compiled = kernel.warmup(*args, grid=grid, **meta)
                except Exception as exc:  # noqa: BLE001  (report every failure)
                    failures += 1
                    print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:3000]}")
                    continue
                ptx = compiled.asm["ptx"]
                usage = subprocess.run([str(ptxas), "-arch=sm_90a", "-v", "-o", os.devnull, "-"], input=ptx,
                                       capture_output=True, text=True).stderr
                regs = re.search(r"Used (\d+) registers", usage)
                spill = re.search(r"(\d+) bytes spill stores", usage)
                counts = {name: len(re.findall(pattern, ptx)) for name, pattern in (
                    ("wgmma", r"wgmma\.mma_async"), ("wait_group", r"wgmma\.wait_group"),
                    ("tma", r"cp\.async\.bulk\.tensor"), ("mbar_wait", r"mbarrier\.try_wait"),
                    ("mbar_expect", r"mbarrier\.arrive\.expect_tx"), ("ex2", r"ex2\.approx"))}
                serial = "wgmma SERIALIZED" if "serialized" in usage else ""
                print(f"ok   {label} {meta['BLOCK_M']}x{meta['BLOCK_N']} stages={meta['STAGES']} "
                      f"warps={meta['num_warps']} regs={regs.group(1) if regs else '?'} "
                      f"spills={spill.group(1) if spill else '?'}B smem={compiled.metadata.shared}B "
                      + " ".join(f"{k}={n}" for k, n in counts.items()) + f" {serial}")
                for line in usage.splitlines():
                    if "warning" in line.lower() or "performance" in line.lower():
                        print(f"     ptxas: {line.strip()}")
                if dump:
                    dump.mkdir(parents=True, exist_ok=True)
                    mask = "causal" if causal else "full"
                    stem = dump / f"gluon_{kernel_name}_d{d}_{str(dtype)[6:]}_{mask}_n{meta['BLOCK_N']}"
                    stem.with_suffix(".ttgir").write_text(compiled.asm["ttgir"])
                    stem.with_suffix(".ptx").write_text(ptx)
    return 1 if failures else 0


# ----------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="the correctness check (alone, unless --bench)")
    parser.add_argument("--bench", action="store_true", help="the benchmark (always after the check)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384],
                        help="sequence lengths to time")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where forward_gluon.json goes (default: scratch/03_advanced_optimizations/)")
    parser.add_argument("--kernel", choices=KERNELS, default="pipelined",
                        help="pipelined (default); fa3order: the same tiles with FlashAttention-3's wait "
                             "order (experimental); or ws: the warp-specialized kernel (experimental: ptxas "
                             "serializes its wgmmas; run it under `timeout`)")
    parser.add_argument("--compile-only", action="store_true",
                        help="no GPU: compile every variant for sm_90 (TRITON_INTERPRET=0, Triton 3.6)")
    parser.add_argument("--dump", type=Path, default=None,
                        help="with --compile-only: write .ttgir and .ptx here")
    parser.add_argument("--only", default=None,
                        help="with --compile-only: only variants whose label has this, e.g. 'D=128 float16'")
    args = parser.parse_args(argv)
    if args.compile_only:
        return compile_only(args.dump, args.only)
    reason = gluon_unavailable_reason()
    if reason:
        print(f"flash_attention_gluon.py checks and times a Hopper kernel: {reason} (nothing to do).")
        return 0
    print(shared.describe_runtime())
    start = time.time()
    do_bench = args.bench or not args.check  # the check runs every time, before any timing
    if not check(args.kernel):
        print("FAILED: the Gluon kernel does not match the reference; not benchmarking.")
        return 1
    if do_bench:
        # Results from this script are never the committed ones unless asked: scratch by default.
        out_dir = shared.output_dir(args.out_dir, HERE / "results", official=False,
                                    why="the Gluon kernel's runs")
        benchmark(out_dir, tuple(args.lengths), kernel=args.kernel)
    print(f"done in {time.time() - start:.0f} s")
    return 0


# ----------------------------------------------------------------------------- takeaways
# What the pipelined kernel has of FlashAttention-3: TMA loads into a ring with mbarriers,
# async wgmma for both products, P in registers. The intra-warpgroup overlap is written in the
# source (the next Q K^T and the previous P V in flight during each softmax), but ptxas hoists
# the wait_group 0 above the softmax, so the SASS has none of it. `--kernel fa3order` puts the
# wait at the top of the next iteration, behind the loop's back edge, where ptxas leaves it:
# its softmax overlaps P V in the SASS. What the pipelined kernel does not have: the finer
# wait(1) schedule (ptxas then serializes every wgmma of the kernel with warning C7514;
# `--compile-only` prints it if a change brings it back; `--kernel fa3order` has it, in
# FlashAttention-3's order, which compiles without the warning);
# FA3's ping-pong of two consumer warpgroups (ordered by named barriers); a persistent tile
# scheduler; FP8.
#
# The warp-specialized kernel (`--kernel ws`) adds the producer warp and two independent
# consumer warpgroups with empty/ready barriers, as FA3 does, and it compiles - but with
# Triton 3.6 and its ptxas every wgmma of it is serialized (warning C7512, "insufficient
# register resources", whatever the setmaxnreg split): the register budget of a
# warp-specialized function is where the compiler, not the algorithm, sets the limit. It is
# kept runnable (STYLE lesson 13) and unproven: run it under `timeout`.

if __name__ == "__main__":
    sys.exit(main())
