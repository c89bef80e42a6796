"""Step 03, part 2: ring attention - one sequence over several GPUs, K/V passed round a ring.

Since flash_attention.py: that kernel keeps a whole sequence on one GPU. When the sequence
does not fit one GPU's memory or time budget, each of W GPUs keeps a shard of Q, K and V.
The queries stay put; the K/V shards travel round a ring, one hop per step, so after W
steps every query shard has met every key. Each step is an ordinary call of step 03's
`flash_attention_forward` on (local queries, visiting keys), and the partial results are
merged by their log-sum-exps. The backward sends K/V round the ring again, with the
gradients dK/dV of each block travelling beside it (in fp32) until they come home. Nothing
in this file is a new kernel: it is step 03's kernels, `torch.distributed` and bookkeeping.

You will learn:
  * merging two partial attentions exactly from their outputs and log-sum-exps;
  * the ring: W steps, one K/V shard in flight while the previous one is computed on
    (async isend/irecv issued before the compute, waited for after it);
  * load balance under a causal mask: cut the sequence into 2W chunks and give rank r
    chunks r and 2W-1-r ("zigzag"), so every rank does the same work at every step;
  * which (query chunk, key chunk) pairs are full, diagonal or skipped, and how each step
    becomes a single kernel call;
  * the backward from the forward's final (o, lse): one block at a time, gradients of K/V
    accumulated along the ring and delivered to their owner;
  * where the time goes: compute, the merge, and the transfers the compute hides.

Layout: q (B, H, N_local, D), k/v (B, Hkv, N_local, D), the same N_local on every rank;
GQA (H a multiple of Hkv) works as in step 03. With causal=True the local shards must be
in zigzag order (`shard_sequence(x, rank, W, zigzag=True)`: chunk r then chunk 2W-1-r,
N divisible by 2W); without causal any equal split works (`zigzag=False`: contiguous).

Run it (from this folder; NCCL on GPUs, gloo and Triton's CPU interpreter without):
    torchrun --nproc-per-node=2 ring_attention.py      # check vs one-GPU flash_attention
    torchrun --nproc-per-node=4 ring_attention.py --seq-len 16384
    python ring_attention.py                            # the same check, 2 local processes
    torchrun --nproc-per-node=4 ../benchmarks/ring_attention_bench.py --out results/ring_w4.json
The post is ring_attention.md; the benchmark is benchmarks/ring_attention_bench.py.
"""
import argparse
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

step03 = shared.load_step("03")  # flash_attention_forward / flash_attention_backward

# ----------------------------------------------------------------------------- motivation
# Attention of one query row over a set of keys is fixed by two numbers per row: the output
# o (the softmax-weighted mean of V) and lse = log(sum_j exp(s_j)). Split the keys into two
# sets A and B; with (o_A, lse_A) and (o_B, lse_B) from two separate calls,
#
#     lse = log(exp(lse_A) + exp(lse_B))                     # logaddexp
#     o   = exp(lse_A - lse) * o_A + exp(lse_B - lse) * o_B  # the weights sum to 1
#         = o_A + sigmoid(lse_B - lse_A) * (o_B - o_A)       # one lerp, stable for any lse
#
# is exactly attention over A and B together. Flash-decoding merges key splits of one GPU
# this way; ring attention merges key shards that live on different GPUs:
#
#     rank r holds Q_r, K_r, V_r (1/W of the sequence each)
#     kv = (K_r, V_r); out, lse = empty
#     for step in 0 .. W-1:                         # kv now holds the shard of rank r - step
#         start: send kv to rank r+1, receive the next kv from rank r-1   (async)
#         o_b, lse_b = flash_attention_forward(Q_r, kv)                    (meanwhile)
#         out, lse = merge(out, lse, o_b, lse_b)
#         wait for the transfer; kv = the received shard
#
# Per step a rank sends and receives one K/V shard (2 * B * Hkv * N/W * D elements) while it
# computes 4 * B * H * (N/W)^2 * D FLOPs on the shard it already has. The compute grows with
# (N/W)^2 and the transfer with N/W, so at long sequences the transfer hides completely
# behind the compute (numbers in ring_attention.md).
#
# Causal attention breaks the balance of the plain split: with contiguous shards, rank 0's
# queries see only its own keys, rank W-1's see all of them, and every rank waits for the
# slowest. Cutting the sequence into 2W chunks and giving rank r chunks r and 2W-1-r
# (one early, one late: "zigzag", PyTorch calls it head-tail) makes every step the same
# amount of work on every rank. Local queries (q_r, q_2W-1-r), visiting keys of rank s
# (k_s, k_2W-1-s), and chunk i sees chunk j fully when j < i, on its diagonal when j = i:
#
#     s == r : both diagonal chunk pairs plus (q_2W-1-r, k_r) full: the local causal mask
#              on the concatenated shard is exactly right          -> one causal call 2C x 2C
#     s <  r : both query chunks see k_s fully, neither sees k_2W-1-s -> all queries x first
#              half of the keys, no mask                             -> one call 2C x C
#     s >  r : only q_2W-1-r sees anything, and it sees both key chunks -> second half of the
#              queries x all keys, no mask                           -> one call C x 2C
#
# Every step costs 2 C^2 score entries per head (C = N / 2W), the diagonal step included
# ((2C)^2 / 2), so the W ranks finish each step together.
#
# The backward reuses step 03's `flash_attention_backward` one block at a time. Called with
# the FINAL o and lse (after all merges), it recomputes that block's probabilities as
# exp(S - lse_final), and delta = rowsum(dO * O_final) is the same for every block: it
# returns exactly this block's share of dQ and the block's whole dK, dV from these queries.
# dQ adds up locally. dK/dV of a block need the queries of every rank, so an fp32
# accumulator travels with the block: each rank adds its share and passes it on; after W
# hops it arrives at the block's owner, complete.


# ----------------------------------------------------------------------------- zigzag sharding
def zigzag_chunks(rank, world_size):
    """The two chunk indices rank holds when the sequence is cut into 2W chunks."""
    return rank, 2 * world_size - 1 - rank


def shard_sequence(x, rank, world_size, zigzag=True, dim=2):
    """Rank's shard of a whole-sequence tensor: chunks (r, 2W-1-r) concatenated, or the r-th of W."""
    n = x.shape[dim]
    parts = 2 * world_size if zigzag else world_size
    if n % parts:
        raise ValueError(f"sequence length {n} is not divisible by {parts} "
                         f"({'2 x ' if zigzag else ''}world size {world_size})")
    size = n // parts
    if not zigzag:
        return x.narrow(dim, rank * size, size).contiguous()
    first, second = zigzag_chunks(rank, world_size)
    return torch.cat([x.narrow(dim, first * size, size), x.narrow(dim, second * size, size)], dim)


def unshard_sequence(shards, zigzag=True, dim=2):
    """The whole sequence from every rank's shard (a list in rank order): shard_sequence undone."""
    if not zigzag:
        return torch.cat(list(shards), dim)
    world_size = len(shards)
    pieces = [None] * (2 * world_size)
    for rank, shard in enumerate(shards):
        first, second = zigzag_chunks(rank, world_size)
        pieces[first], pieces[second] = shard.chunk(2, dim)
    return torch.cat(pieces, dim)


def gather_sequence(x, group=None, zigzag=True, dim=2):
    """On every rank: the whole sequence, all-gathered from the local shards (tests, benchmark)."""
    group, _, world_size = _group_info(group)
    if world_size == 1:
        return unshard_sequence([x], zigzag, dim)
    shards = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(shards, x.contiguous(), group=group)
    return unshard_sequence(shards, zigzag, dim)


# ----------------------------------------------------------------------------- the schedule
FULL, DIAGONAL, SKIPPED = "full", "diagonal", "skipped"
ALL, FIRST, SECOND = "all", "first", "second"  # which half of a local shard


def chunk_pairs(rank, source, world_size):
    """{(query chunk, key chunk): FULL / DIAGONAL / SKIPPED} for rank's queries on source's keys (causal)."""
    kinds = {}
    for qc in zigzag_chunks(rank, world_size):
        for kc in zigzag_chunks(source, world_size):
            kinds[(qc, kc)] = DIAGONAL if qc == kc else FULL if kc < qc else SKIPPED
    return kinds


def block_plan(rank, source, causal):
    """(query half, key half, masked): the one kernel call that covers rank's queries on source's keys.

    Derived in the motivation above; tests/test_ring_attention.py checks it against
    `chunk_pairs` for every (rank, source) of several world sizes.
    """
    if not causal:
        return ALL, ALL, False
    if source == rank:
        return ALL, ALL, True  # the local causal mask on the two concatenated chunks
    if source < rank:
        return ALL, FIRST, False  # every local query sees the visitor's early chunk only
    return SECOND, ALL, False  # only the late query chunk sees anything: both key chunks


def _half(kind, n_local):
    half = n_local // 2
    return {ALL: slice(None), FIRST: slice(0, half), SECOND: slice(half, None)}[kind]


# ----------------------------------------------------------------------------- merge by lse
def _merge(out, lse, block_out, block_lse):
    """Fold one block's (o, lse) into the running (out, lse), in place; returns (out, lse).

    out (B, H, n, D) fp32 and lse (B, H, n) fp32 may be views (a half of the shard); the
    arithmetic is step 03's ``merge_attention_states`` (weights exp(lse_side - lse), -inf safe).
    """
    o, merged_lse = step03.merge_attention_states(out, lse, block_out, block_lse)
    return out.copy_(o), lse.copy_(merged_lse)


# ----------------------------------------------------------------------------- the ring
def _group_info(group):
    """(group, rank, world size); without an initialised process group, a world of one."""
    if group is None and not dist.is_initialized():
        return None, 0, 1
    group = dist.group.WORLD if group is None else group
    return group, dist.get_rank(group), dist.get_world_size(group)


class _Ring:
    """Neighbours on the ring and one call to start a hop: send to rank+1, receive from rank-1."""

    def __init__(self, group, rank, world_size):
        self.group = group
        self.next = dist.get_global_rank(group, (rank + 1) % world_size)
        self.prev = dist.get_global_rank(group, (rank - 1) % world_size)

    def start(self, send, recv, tag):
        """Post both transfers and return at once (NCCL: on its own stream; gloo: background)."""
        ops = [dist.P2POp(dist.isend, send, self.next, self.group, tag),
               dist.P2POp(dist.irecv, recv, self.prev, self.group, tag)]
        return dist.batch_isend_irecv(ops)

    @staticmethod
    def wait(requests):
        for request in requests:  # NCCL: the compute stream waits, the host does not
            request.wait()


KV_TAG, DKV_TAG = 0, 1  # gloo matches messages by tag; NCCL ignores tags and keeps order


def _check_local(q, k, v, causal, scale):
    scale = shared.check_attention_inputs(q, k, v, scale, allow_gqa=True, min_head_dim=16,
                                          max_head_dim=256)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if causal and (q.shape[2] != k.shape[2] or q.shape[2] % 2):
        raise ValueError("causal ring attention needs zigzag shards: the same even local length for "
                         f"q and k/v (chunk r then chunk 2W-1-r), got {q.shape[2]} and {k.shape[2]}")
    return scale


def ring_attention_forward(q, k, v, causal=False, scale=None, group=None):
    """(o, lse) of the local query shard over the keys of every rank in `group`.

    q (B, H, n, D), k/v (B, Hkv, n, D): this rank's shards (zigzag order when causal).
    o is like q; lse (B, H, n) fp32 is the natural-log log-sum-exp over all visible keys.
    Every rank of the group must call it together, with the same shapes.
    """
    scale = _check_local(q, k, v, causal, scale)
    group, rank, world_size = _group_info(group)
    ring = _Ring(group, rank, world_size) if world_size > 1 else None
    n = q.shape[2]
    kv = torch.stack((k, v))  # (2, B, Hkv, n, D): one message per hop; a copy we may overwrite
    kv_next = torch.empty_like(kv) if world_size > 1 else None
    out = lse = None
    for step in range(world_size):
        source = (rank - step) % world_size  # whose K/V shard kv holds now
        if step + 1 < world_size:
            requests = ring.start(kv, kv_next, KV_TAG)  # the next shard travels while we compute
        q_half, k_half, masked = block_plan(rank, source, causal)
        rows, keys = _half(q_half, n), _half(k_half, n)
        o_b, lse_b = step03.flash_attention_forward(q[:, :, rows], kv[0, :, :, keys], kv[1, :, :, keys],
                                                    causal=masked, scale=scale)
        if out is None:  # step 0 covers every local row (diagonal or full)
            out, lse = o_b.float(), lse_b
        else:
            _merge(out[:, :, rows], lse[:, :, rows], o_b, lse_b)
        if step + 1 < world_size:
            ring.wait(requests)
            kv, kv_next = kv_next, kv
    return out.to(q.dtype), lse


def ring_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, group=None):
    """(dq, dk, dv) of the local shards, given the forward's final o and lse.

    K/V go round the ring again; beside each block travels its fp32 (dK, dV) accumulator,
    one hop behind, to which every rank adds its queries' share. After the last hop each
    rank receives the complete gradients of its own K/V shard.
    """
    scale = _check_local(q, k, v, causal, scale)
    group, rank, world_size = _group_info(group)
    ring = _Ring(group, rank, world_size) if world_size > 1 else None
    n = q.shape[2]
    kv = torch.stack((k, v))
    kv_next = torch.empty_like(kv) if world_size > 1 else None
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dkv = torch.zeros(kv.shape, dtype=torch.float32, device=q.device)  # travels with the block
    dkv_next = torch.empty_like(dkv) if world_size > 1 else None
    dkv_requests = None
    for step in range(world_size):
        source = (rank - step) % world_size
        if step + 1 < world_size:
            kv_requests = ring.start(kv, kv_next, KV_TAG)
        q_half, k_half, masked = block_plan(rank, source, causal)
        rows, keys = _half(q_half, n), _half(k_half, n)
        dq_b, dk_b, dv_b = step03.flash_attention_backward(
            do[:, :, rows], q[:, :, rows], kv[0, :, :, keys], kv[1, :, :, keys], o[:, :, rows],
            lse[:, :, rows], causal=masked, scale=scale)
        dq[:, :, rows] += dq_b
        if dkv_requests is not None:  # this block's accumulator, from rank - 1 (sent a step ago)
            ring.wait(dkv_requests)
            dkv, dkv_next = dkv_next, dkv
        dkv[0, :, :, keys] += dk_b
        dkv[1, :, :, keys] += dv_b
        if world_size > 1:  # on to rank + 1; it arrives while rank + 1 computes its next block
            dkv_requests = ring.start(dkv, dkv_next, DKV_TAG)
        if step + 1 < world_size:
            ring.wait(kv_requests)
            kv, kv_next = kv_next, kv
    if dkv_requests is not None:  # the last hop brings our own block's gradients home
        ring.wait(dkv_requests)
        dkv = dkv_next
    return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype)


class RingAttention(torch.autograd.Function):
    """Ring attention as an autograd node: saves the local q, k, v, o, lse; the backward is a second ring."""

    @staticmethod
    def forward(ctx, q, k, v, causal=False, scale=None, group=None):
        o, lse = ring_attention_forward(q, k, v, causal=causal, scale=scale, group=group)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale, ctx.group = causal, scale, group
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = ring_attention_backward(do, q, k, v, o, lse, causal=ctx.causal, scale=ctx.scale,
                                             group=ctx.group)
        return dq, dk, dv, None, None, None


# ----------------------------------------------------------------------------- launcher
def ring_attention(q, k, v, causal=False, scale=None, group=None):
    """Attention of this rank's query shard over the whole sequence, sharded across `group`.

    q (B, H, n, D), k and v (B, Hkv, n, D) are this rank's shards, the same n on every rank
    (causal: zigzag order, chunks r and 2W-1-r of 2W; see `shard_sequence`). Returns this
    rank's output shard, like q. Every rank of the group (default: the whole world; a world
    of one without torch.distributed) must call it together. Differentiable: the backward
    is a second ring (`RingAttention`).
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return RingAttention.apply(q, k, v, causal, scale, group)
    return ring_attention_forward(q, k, v, causal=causal, scale=scale, group=group)[0]


# ----------------------------------------------------------------------------- correctness
def check(n, heads=4, kv_heads=2, head_dim=64, dtype=torch.float16, group=None, seed=0):
    """Ring vs one-device flash_attention on the whole sequence, forward and gradients.

    Every rank builds the same whole-sequence inputs (same seed), runs the ring on its shards
    and compares its output shard and gradient shards with the shards of a one-device run.
    Returns {(causal, name): (max abs error, bound)} and whether all are within their bounds:
    twice the one-device result's own error against float64, plus W + 1 roundings of the
    largest value (each of the W block results reaches the fp32 merge or accumulator already
    rounded to the input dtype, and the sum is rounded once more).
    """
    group, rank, world_size = _group_info(group)
    device = shared.DEVICE if shared.INTERPRETER else torch.device("cuda", torch.cuda.current_device())
    q, k, v = shared.make_qkv(1, heads, n, head_dim, kv_heads=kv_heads, dtype=dtype, device=device,
                              seed=seed)
    do = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device, dtype)
    rounding = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}[dtype]
    errors, passed = {}, True
    for causal in (False, True):
        one = [t.detach().requires_grad_(True) for t in (q, k, v)]
        o_one = step03.flash_attention(*one, causal=causal)
        grads_one = torch.autograd.grad(o_one, one, do)
        exact = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
        o_exact = shared.reference_attention(*exact, causal=causal)
        grads_exact = torch.autograd.grad(o_exact, exact, do.double())

        local = [shard_sequence(t, rank, world_size, zigzag=causal).requires_grad_(True) for t in (q, k, v)]
        o_ring = ring_attention(*local, causal=causal, group=group)
        grads_ring = torch.autograd.grad(o_ring, local, shard_sequence(do, rank, world_size, causal))
        for name, got, one_dev, ref in zip(("out", "dq", "dk", "dv"), (o_ring, *grads_ring),
                                           (o_one, *grads_one), (o_exact, *grads_exact)):
            want = shard_sequence(one_dev, rank, world_size, causal).double()
            ref = shard_sequence(ref, rank, world_size, causal)
            err = (got.double() - ref).abs().max().item()
            largest = ref.abs().max().item()
            bound = 2 * (want - ref).abs().max().item() + (world_size + 1) * rounding * largest + 1e-5
            errors[(causal, name)] = (err, bound)
            passed &= err <= bound
    return errors, passed


def _init_distributed(rank=None, world_size=None, init_method=None):
    """A process group from torchrun's environment (or the arguments): NCCL on GPUs, gloo without."""
    if shared.INTERPRETER:
        backend, device_id = "gloo", None
    else:
        local_rank = int(os.environ.get("LOCAL_RANK", rank or 0))
        torch.cuda.set_device(local_rank)
        backend, device_id = "nccl", torch.device("cuda", local_rank)
    kwargs = {} if rank is None else dict(rank=rank, world_size=world_size, init_method=init_method)
    dist.init_process_group(backend, device_id=device_id, **kwargs)


def _check_main(args, rank=None, world_size=None, init_method=None):
    _init_distributed(rank, world_size, init_method)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    n = args.seq_len or (8 * world_size if shared.INTERPRETER else 4096 * world_size)
    if rank == 0:
        print(shared.describe_runtime())
        print(f"Ring attention on {world_size} ranks ({dist.get_backend()}), B=1 H={args.heads} "
              f"Hkv={args.kv_heads} N={n} D={args.head_dim} {args.dtype}, against one-device "
              f"flash_attention on the whole sequence (rule: ring error vs float64 <= 2 x one-device error "
              f"+ (W + 1) roundings of the largest value):")
    errors, passed = check(n, args.heads, args.kv_heads, args.head_dim, getattr(torch, args.dtype))
    everyone = [None] * world_size
    dist.all_gather_object(everyone, (errors, passed))
    if rank == 0:
        for r, (errs, ok) in enumerate(everyone):
            for causal in (False, True):
                cells = "  ".join(f"{name} {errs[(causal, name)][0]:.1e} (<= {errs[(causal, name)][1]:.1e})"
                                  for name in ("out", "dq", "dk", "dv"))
                print(f"  rank {r} causal={causal!s:<5} {cells}")
        print("PASS" if all(ok for _, ok in everyone) else "FAIL: the ring does not match one device")
    all_passed = all(ok for _, ok in everyone)
    dist.destroy_process_group()
    return 0 if all_passed else 1


def _spawned(rank, args, world_size, init_method, codes):
    codes[rank] = _check_main(args, rank, world_size, init_method)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=0,
                        help="whole sequence length (default: 4096 x W on GPUs, 8 x W in the interpreter)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64 if not shared.INTERPRETER else 16)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--world-size", type=int, default=2,
                        help="without torchrun: how many local processes to start (default 2)")
    args = parser.parse_args(argv)
    if "RANK" in os.environ:  # started by torchrun
        return _check_main(args)
    import torch.multiprocessing as mp

    if not shared.INTERPRETER and torch.cuda.device_count() < args.world_size:
        print(f"needs {args.world_size} GPUs, found {torch.cuda.device_count()}; use --world-size")
        return 1
    codes = mp.Manager().list([1] * args.world_size)
    mp.spawn(_spawned, args=(args, args.world_size, f"tcp://127.0.0.1:{_free_port()}", codes),
             nprocs=args.world_size)
    return max(codes)


# ----------------------------------------------------------------------------- takeaways
# * The merge is exact: two partial attentions and their log-sum-exps give the attention over
#   the union of their keys. Everything else here is scheduling.
# * The ring moves K/V, never Q or O: per step 2 * n * Hkv * D elements travel against
#   4 * n^2 * H * D FLOPs of compute, so long shards hide the transfer (GQA shrinks it more).
# * Causal masks need load balancing: zigzag chunks give every rank the same work at every
#   step, and every step is one unmasked kernel call, except the first (one causal call).
# * The backward needs nothing new from the kernel: a block's gradients computed with the final
#   o and lse are exactly its share; dK/dV ride the ring home in fp32.
# * Measured scaling, and the comparison with PyTorch's context parallelism: ring_attention.md.

if __name__ == "__main__":
    sys.exit(main())
