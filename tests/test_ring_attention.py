"""Tests of ring attention (03_advanced_optimizations/ring_attention.py).

Without a GPU: W processes on the CPU, gloo, Triton's interpreter, tiny awkward shapes
(chunk sizes 5, 6 and 10; world sizes 2, 3 and 4). Each rank runs the ring on its shard; the
gathered outputs and gradients must equal one-process flash_attention on the whole
sequence (fp32: to fp32 rounding; fp16: within the series' rule against float64). The
schedule, the zigzag sharding and the merge are also tested on their own, in-process.
"""
import itertools
import math
import sys
import time
from pathlib import Path

import pytest
import torch

import shared

ROOT = Path(__file__).resolve().parents[1]
step03 = shared.load_step("03")


def _load_ring():
    return shared.load_step("03", "ring_attention.py")


ring = _load_ring()

# ----------------------------------------------------------------------------- in-process

@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("zigzag", [True, False])
def test_shard_unshard_round_trip(world_size, zigzag):
    n = 10 * world_size
    x = torch.arange(n * 2 * 3).reshape(1, n, 2, 3).transpose(1, 2)  # (1, 2, N, 3), strided
    shards = [ring.shard_sequence(x, r, world_size, zigzag) for r in range(world_size)]
    assert all(s.shape[2] == x.shape[2] // world_size for s in shards)
    assert torch.equal(ring.unshard_sequence(shards, zigzag), x)
    if zigzag:  # rank r holds chunks r and 2W-1-r of 2W
        c = x.shape[2] // (2 * world_size)
        for r, s in enumerate(shards):
            assert torch.equal(s[:, :, :c], x[:, :, r * c:(r + 1) * c])
            assert torch.equal(s[:, :, c:], x[:, :, (2 * world_size - 1 - r) * c:(2 * world_size - r) * c])


def test_shard_refuses_uneven_lengths():
    with pytest.raises(ValueError, match="divisible by 4"):
        ring.shard_sequence(torch.zeros(1, 1, 10, 16), 0, 2, zigzag=True)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5, 8])
def test_causal_plan_covers_the_triangle_once_and_balances(world_size):
    """Each step's one call covers the visible chunk pairs, once; every step costs 2 C^2 on every rank."""
    c = 6  # chunk length, to count score entries
    covered = set()
    for rank in range(world_size):
        first, second = ring.zigzag_chunks(rank, world_size)
        for step in range(world_size):
            source = (rank - step) % world_size
            q_half, k_half, masked = ring.block_plan(rank, source, causal=True)
            q_chunks = {"all": (first, second), "first": (first,), "second": (second,)}[q_half]
            k_first, k_second = ring.zigzag_chunks(source, world_size)
            k_chunks = {"all": (k_first, k_second), "first": (k_first,), "second": (k_second,)}[k_half]
            pairs = ring.chunk_pairs(rank, source, world_size)
            called = set(itertools.product(q_chunks, k_chunks))
            needed = {p for p, kind in pairs.items() if kind != ring.SKIPPED}
            # the call covers every needed pair; what else it covers is masked (causal) away
            assert needed <= called
            assert masked == any(pairs[p] == ring.DIAGONAL for p in called)
            if not masked:
                assert all(pairs[p] == ring.FULL for p in called)
            # visible score entries of this call: C^2 per full pair, C(C+1)/2 per diagonal pair
            work = sum(c * c if pairs[p] == ring.FULL else c * (c + 1) // 2
                       for p in called if pairs[p] != ring.SKIPPED)
            if not masked:
                assert work == 2 * c * c
            else:  # the diagonal step: (2C)(2C+1)/2 = 2C^2 + C
                assert work == 2 * c * c + c
            assert not (called & covered)  # no pair computed twice, by anyone
            covered |= {p for p in called if pairs[p] != ring.SKIPPED}
    n_chunks = 2 * world_size
    assert covered == {(i, j) for i in range(n_chunks) for j in range(n_chunks) if j <= i}


def test_merge_equals_attention_over_the_union():
    """Two key sets with their own (o, lse): the merge is attention over both; -inf rows take the other's."""
    torch.manual_seed(0)
    b, h, n, d = 1, 2, 7, 5
    s_a, s_b = torch.randn(b, h, n, 4, dtype=torch.float64), torch.randn(b, h, n, 3, dtype=torch.float64)
    v_a, v_b = torch.randn(b, h, 4, d, dtype=torch.float64), torch.randn(b, h, 3, d, dtype=torch.float64)
    s_a[:, :, 2] = float("-inf")  # row 2 sees nothing in A
    s_b[:, :, 4] = float("-inf")  # row 4 sees nothing in B
    s_a[:, :, 6] = s_b[:, :, 6] = float("-inf")  # row 6 sees nothing at all

    def partial(s, v):
        lse = torch.logsumexp(s, -1)
        p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
        return p @ v, lse

    (o_a, lse_a), (o_b, lse_b) = partial(s_a, v_a), partial(s_b, v_b)
    o_all, lse_all = partial(torch.cat([s_a, s_b], -1), torch.cat([v_a, v_b], -2))
    out, lse = ring._merge(o_a.clone(), lse_a.clone(), o_b.float(), lse_b)
    torch.testing.assert_close(out, o_all, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lse, lse_all)
    assert torch.all(out[:, :, 6] == 0) and torch.all(lse[:, :, 6] == float("-inf"))
    # into a view (half of the rows), as the ring does for the late query chunk
    full_o, full_lse = o_a.clone(), lse_a.clone()
    ring._merge(full_o[:, :, 3:], full_lse[:, :, 3:], o_b[:, :, 3:].float(), lse_b[:, :, 3:])
    torch.testing.assert_close(full_o[:, :, 3:], o_all[:, :, 3:], atol=1e-6, rtol=1e-6)
    assert torch.equal(full_o[:, :, :3], o_a[:, :, :3])


@pytest.mark.parametrize("causal", [False, True])
def test_world_of_one_is_flash_attention(causal):
    """Without torch.distributed the ring has one step: the same numbers as flash_attention."""
    q, k, v = shared.make_qkv(1, 2, 12, 16, kv_heads=1, dtype=torch.float32, requires_grad=True, seed=3)
    do = torch.randn_like(q)
    got = ring.ring_attention(q, k, v, causal=causal)
    want = step03.flash_attention(q, k, v, causal=causal)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    for g, w in zip(torch.autograd.grad(got, (q, k, v), do), torch.autograd.grad(want, (q, k, v), do)):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)


def test_causal_needs_even_local_length():
    q, k, v = shared.make_qkv(1, 2, 7, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="zigzag"):
        ring.ring_attention(q, k, v, causal=True)


# ----------------------------------------------------------------------------- W processes, gloo
# (name, N, H, Hkv, D, dtype, causal, scale): chunk sizes N / 2W that are not tile multiples
CASES = {
    2: [("fp32-full", 24, 2, 1, 16, torch.float32, False, None),
        ("fp32-causal", 24, 2, 1, 16, torch.float32, True, None),
        ("fp32-causal-N40-scale", 40, 2, 2, 16, torch.float32, True, 0.3),
        ("fp16-full", 24, 2, 1, 16, torch.float16, False, None),
        ("fp16-causal", 24, 2, 1, 16, torch.float16, True, None)],
    3: [("fp32-full", 30, 2, 1, 16, torch.float32, False, None),
        ("fp32-causal", 30, 2, 1, 16, torch.float32, True, None),
        ("fp16-causal", 30, 4, 2, 16, torch.float16, True, None)],
    4: [("fp32-causal", 40, 2, 1, 16, torch.float32, True, None)],
}


def _inputs(n, heads, kv_heads, d, dtype, seed):
    q, k, v = shared.make_qkv(1, heads, n, d, kv_heads=kv_heads, dtype=dtype, seed=seed)
    do = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 100)).to(dtype)
    return q, k, v, do


def _worker(rank, world_size, init_file, out_file):
    import torch.distributed as dist

    if shared.HAS_GPU:  # one GPU per rank, NCCL
        torch.cuda.set_device(rank)
        backend, device = "nccl", torch.device("cuda", rank)
    else:  # CPU tensors, the interpreter, gloo
        backend, device = "gloo", torch.device("cpu")
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    results = {}
    for i, (name, n, heads, kv_heads, d, dtype, causal, scale) in enumerate(CASES[world_size]):
        q, k, v, do = (t.to(device) for t in _inputs(n, heads, kv_heads, d, dtype, seed=i))
        local = [ring.shard_sequence(t, rank, world_size, zigzag=causal).requires_grad_(True)
                 for t in (q, k, v)]
        out = ring.ring_attention(*local, causal=causal, scale=scale)
        grads = torch.autograd.grad(out, local, ring.shard_sequence(do, rank, world_size, zigzag=causal))
        results[name] = [ring.gather_sequence(t.detach(), zigzag=causal).cpu() for t in (out, *grads)]
    if rank == 0:
        torch.save(results, out_file)
    dist.barrier()
    dist.destroy_process_group()


def _run_ring(world_size, tmp_dir, timeout_s=240):
    """Run _worker on world_size processes; return rank 0's gathered results.

    Without a GPU the processes are forked: they inherit the imported torch, triton and step
    03 (about 5 s a process to import again on a small CPU). CUDA cannot be forked: spawn.
    """
    import torch.multiprocessing as mp

    if shared.HAS_GPU and torch.cuda.device_count() < world_size:
        pytest.skip(f"needs {world_size} GPUs")
    out_file = tmp_dir / f"ring_w{world_size}.pt"
    init_file = str(tmp_dir / f"init_w{world_size}")
    context = mp.start_processes(_worker, args=(world_size, init_file, str(out_file)), nprocs=world_size,
                                 join=False, start_method="spawn" if shared.HAS_GPU else "fork")
    deadline = time.time() + timeout_s
    while not context.join(timeout=1):
        if time.time() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f"ring attention on {world_size} processes took over {timeout_s} s (deadlock?)")
    return torch.load(out_file)


@pytest.fixture(scope="module", params=sorted(CASES), ids=lambda w: f"W{w}")
def ring_results(request, tmp_path_factory):
    world_size = request.param
    return world_size, _run_ring(world_size, tmp_path_factory.mktemp(f"ring_w{world_size}"))


def test_ring_matches_one_process_flash_attention(ring_results):
    """Output and dq, dk, dv of the sharded run, gathered, against one process on the whole sequence."""
    world_size, results = ring_results
    failures = []
    for i, (name, n, heads, kv_heads, d, dtype, causal, scale) in enumerate(CASES[world_size]):
        q, k, v, do = (t.to(shared.DEVICE) for t in _inputs(n, heads, kv_heads, d, dtype, seed=i))
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        o = step03.flash_attention(*leaves, causal=causal, scale=scale)
        one = [o, *torch.autograd.grad(o, leaves, do)]
        exact_leaves = [t.double().requires_grad_(True) for t in (q, k, v)]
        o64 = shared.reference_attention(*exact_leaves, causal=causal, scale=scale)
        exact = [o64, *torch.autograd.grad(o64, exact_leaves, do.double())]
        for label, got, want, ref in zip(("out", "dq", "dk", "dv"), results[name], one, exact):
            got = got.to(want.device)
            assert got.shape == want.shape and got.dtype == want.dtype, (name, label)
            err_ring = (got.double() - ref).abs().max().item()
            err_one = (want.double() - ref).abs().max().item()
            if dtype == torch.float32:  # both exact fp32 products: agree to fp32 rounding
                ok = (got - want).abs().max().item() <= 2e-5 and err_ring <= 2e-5
            else:  # the series' rule: twice the one-process error plus one rounding of the output
                ok = err_ring <= 2 * err_one + 2.0**-11 * ref.abs().max().item() + 1e-5
            if not ok:
                failures.append(f"W={world_size} {name} {label}: ring err {err_ring:.2e}, "
                                f"one-process err {err_one:.2e}, |ring - one| "
                                f"{(got.double() - want.double()).abs().max().item():.2e}")
    assert not failures, "\n".join(failures)


def test_ring_gradients_are_finite_and_not_trivial(ring_results):
    """Guards against a silently zero dK/dV (an accumulator that never came home)."""
    _, results = ring_results
    for name, tensors in results.items():
        for t in tensors:
            assert torch.isfinite(t).all() and t.abs().max().item() > 1e-3, name


def test_causal_work_is_the_same_on_every_rank():
    """The point of zigzag: per step, visible score entries per rank; contiguous shards for contrast."""
    w, c = 4, 8  # 2W chunks of C positions
    n = 2 * w * c

    def work(positions_q, positions_k):
        return sum(1 for i in positions_q for j in positions_k if j <= i)

    def positions(rank, zigzag):
        if zigzag:
            a, b = ring.zigzag_chunks(rank, w)
            return list(range(a * c, (a + 1) * c)) + list(range(b * c, (b + 1) * c))
        return list(range(rank * n // w, (rank + 1) * n // w))

    for zigzag in (True, False):
        totals = [sum(work(positions(r, zigzag), positions((r - s) % w, zigzag)) for s in range(w))
                  for r in range(w)]
        if zigzag:
            assert len(set(totals)) == 1
        else:
            assert max(totals) > 3 * min(totals)  # rank W-1 does 7x rank 0's work at W=4
    assert math.isclose(sum(totals), n * (n + 1) / 2)


def test_zigzag_is_pytorchs_head_tail_layout():
    """The benchmark compares with context parallelism on the same shards: check the layouts agree."""
    balancer = pytest.importorskip("torch.distributed.tensor.experimental._attention")._HeadTailLoadBalancer
    for world_size in (2, 3, 4):
        n = 2 * world_size * 3
        theirs = balancer(n, world_size, "cpu")._generate_indices()[0].long()
        ours = torch.cat([ring.shard_sequence(torch.arange(n).view(1, 1, n, 1), r, world_size).flatten()
                          for r in range(world_size)])
        assert torch.equal(theirs, ours)
