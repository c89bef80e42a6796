"""Step 02 against the float64 reference and against step 01, on shapes chosen to break it.

The key loop of step 02 goes a block of BLOCK_N keys at a time, so the
dangerous lengths are the ones around a block edge: BLOCK_N - 1, BLOCK_N,
BLOCK_N + 1 and 2 * BLOCK_N + 1, for each block size the launcher picks. In the
CPU interpreter each program costs milliseconds per key block, so the shapes
keep Nq small when Nk is long; on a GPU the same tests add full square sizes.
"""
import functools
import inspect
import math

import pytest
import torch

import shared

step02 = shared.load_step("02")  # 02_vectorized_attention/vectorized_attention.py, loaded by path
vectorized_attention = step02.vectorized_attention
block_n_for = step02.block_n_for

# (batch, heads, n_q, n_k, head_dim, causal)
SHAPES = [
    (1, 1, 1, 1, 16, False),
    (2, 3, 2, 5, 16, False),  # batch and heads > 1: the (batch, head) split of program_id(1)
    (1, 1, 1, 1, 64, True),
    (1, 2, 17, 17, 40, True),
    (1, 1, 97, 2, 64, False),
    (1, 1, 3, 97, 80, True),
    (1, 1, 3, 97, 80, False),
    (1, 1, 128, 3, 128, True),  # causal with Nq > Nk: late rows see every key
    (1, 1, 2, 128, 16, False),
    (1, 1, 9, 31, 111, False),
    (1, 1, 4, 6, 256, True),
    (1, 1, 2, 1025, 96, False),  # many blocks
]
if shared.HAS_GPU:
    SHAPES += [(2, 3, 97, 97, 64, True), (1, 4, 1025, 1025, 128, False), (2, 2, 333, 1025, 80, True),
               (1, 2, 1025, 97, 40, True), (1, 2, 1025, 1025, 256, True)]


def _edge_shapes():
    """Key lengths at and around one and two blocks, for the block sizes of D = 64, 128 and 256 (32, 16, 8)."""
    shapes = []
    for head_dim in (64, 128, 256):  # BLOCK_N = 32, 16, 8
        bn = block_n_for(head_dim)
        shapes += [(1, 1, 3, n_k, head_dim, False) for n_k in (bn - 1, bn, bn + 1, 2 * bn + 1)]
    # causal rows that end just before, at and just after a block edge: Nq = Nk = 2 * BLOCK_N + 1
    bn = block_n_for(256)
    shapes.append((1, 1, 2 * bn + 1, 2 * bn + 1, 256, True))
    if shared.HAS_GPU:
        bn = block_n_for(64)
        shapes.append((2, 2, 2 * bn + 1, 2 * bn + 1, 64, True))
    return shapes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape, dtype):
    batch, heads, n_q, n_k, head_dim, causal = shape
    q, k, v = shared.make_qkv(batch, heads, n_q, head_dim, n_k=n_k, dtype=dtype)
    result = shared.test_correctness(vectorized_attention, q, k, v, causal=causal)  # NaN-poisoned out=
    assert result.passed, str(result)


@pytest.mark.parametrize("shape", _edge_shapes(), ids=str)
def test_block_edges(shape):
    batch, heads, n_q, n_k, head_dim, causal = shape
    q, k, v = shared.make_qkv(batch, heads, n_q, head_dim, n_k=n_k, dtype=torch.float16)
    result = shared.test_correctness(vectorized_attention, q, k, v, causal=causal)
    assert result.passed, str(result)


def test_block_edges_bfloat16():
    bn = block_n_for(128)
    q, k, v = shared.make_qkv(1, 1, 2, 2 * bn + 1, 128, dtype=torch.bfloat16)
    result = shared.test_correctness(vectorized_attention, q, k, v)
    assert result.passed, str(result)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_agrees_with_step01(dtype, causal):
    basic_attention = shared.load_step("01").basic_attention
    # step 01 costs milliseconds per key step in the interpreter: keep Nq * Nk small
    n_q, n_k = (19, 19) if causal else (4, 70)
    q, k, v = shared.make_qkv(1, 1, n_q, 64, n_k=n_k, dtype=dtype)
    out01 = basic_attention(q, k, v, causal=causal)
    out02 = vectorized_attention(q, k, v, causal=causal)
    atol, rtol = (1e-5, 1e-5) if dtype == torch.float32 else shared.tolerance(dtype)
    torch.testing.assert_close(out02, out01, atol=atol, rtol=rtol)


def test_custom_scale_and_non_contiguous_inputs():
    # (B, N, H, D) as models produce it, viewed as (B, H, N, D): strides, not copies
    q, k, v = (torch.randn(2, n, 3, 40, dtype=torch.float16, device=shared.DEVICE).transpose(1, 2)
               for n in (7, 19, 19))
    assert not q.is_contiguous()
    result = shared.test_correctness(vectorized_attention, q, k, v, causal=True, scale=0.3)
    assert result.passed, str(result)


def test_sliced_head_dim_and_unit_strides_elsewhere():
    # the first 40 lanes of 64-wide rows: row stride 64, not 40; keys longer than one block
    base = [torch.randn(1, 2, n, 64, dtype=torch.bfloat16, device=shared.DEVICE) for n in (5, 150, 150)]
    q, k, v = (t[..., :40] for t in base)
    result = shared.test_correctness(vectorized_attention, q, k, v)
    assert result.passed, str(result)


def test_writes_into_given_out():
    q, k, v = shared.make_qkv(1, 1, 5, 16, dtype=torch.float16)
    out = torch.full_like(q, float("nan"))
    assert vectorized_attention(q, k, v, out=out) is out and torch.isfinite(out).all()


# Bad-input errors: tests/test_input_checks.py (shared with step 01).


@pytest.mark.parametrize("head_dim,expected", [(1, 128), (16, 128), (17, 64), (40, 32), (64, 32), (80, 16),
                                               (128, 16), (129, 8), (256, 8)])
def test_block_n_rule(head_dim, expected):
    bn = block_n_for(head_dim)
    assert bn == expected
    block_d = 2 ** math.ceil(math.log2(head_dim))
    assert bn * block_d <= step02.TILE_ELEMENTS or bn == step02.MIN_BLOCK_N


def test_traffic_model_same_bytes_as_step01_fewer_loads():
    step01 = shared.load_step("01")
    for head_dim, n_k in ((64, 1024), (128, 4096), (80, 97)):
        bn = block_n_for(head_dim)
        t01 = step01.traffic_per_row(n_k, head_dim, 2)
        t02 = step02.traffic_per_row(n_k, head_dim, 2)
        assert t02["bytes"] == t01["bytes"]  # every row still reads all of K and V
        assert t02["loads"] == 2 * math.ceil(n_k / bn) + 1  # a K tile and a V tile per block, plus q
        assert t02["stores"] == 1
    assert step02.traffic_per_row(1024, 64, 2)["loads"] == 2 * 32 + 1  # BLOCK_N = 32 at D = 64
    assert step02.traffic_per_row(1024, 64, 2, causal_row=0)["loads"] == 2 * 1 + 1
    assert step02.traffic_per_row(1024, 64, 2, causal_row=32)["loads"] == 2 * 2 + 1  # 33 keys: 2 blocks of 32
    assert step02.traffic_per_row(1024, 64, 2, block_n=16)["loads"] == 2 * 64 + 1


def test_requested_bytes_sums_rows():
    full = step02.requested_bytes(step02.traffic_per_row, 2, 3, 10, 10, 64, 2, causal=False)
    causal = step02.requested_bytes(step02.traffic_per_row, 2, 3, 10, 10, 64, 2, causal=True)
    assert full == 2 * 3 * 10 * (2 * 10 + 2) * 64 * 2
    assert causal == 2 * 3 * sum((2 * (i + 1) + 2) * 64 * 2 for i in range(10))


@pytest.mark.parametrize("loop_stages", [1, 2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
def test_pipelined_key_loop_matches_reference(loop_stages, causal):
    """LOOP_STAGES = k runs the key loop as tl.range(..., num_stages=k) (benchmarks/step02_range_stages.py).

    On a GPU this checks the pipelined kernels Triton compiles; the interpreter ignores
    num_stages, so there it checks the switch itself. Shapes cross block edges.
    """
    bn = block_n_for(64)
    n_q, n_k = (bn + 1, bn + 1) if causal else (5, 2 * bn + 1)

    def pipelined(q, k, v, causal=False, scale=None, out=None):
        scale = shared.check_attention_inputs(q, k, v, scale, max_head_dim=256)
        out = shared.check_out(out, q, v)
        step02.launch(q, k, v, out, scale, causal, loop_stages=loop_stages)
        return out

    q, k, v = shared.make_qkv(1, 2, n_q, 64, n_k=n_k, dtype=torch.float16)
    result = shared.test_correctness(pipelined, q, k, v, causal=causal)
    assert result.passed, str(result)


paired = functools.partial(vectorized_attention, pair_rows=True)
# (batch, heads, n_q, n_k, head_dim, dtype, causal): Nq = 1 (one row, its own partner), 2 (one pair),
# 3 (a pair and the middle row alone), Nq < Nk and Nq > Nk; D = 80 is not a power of two (BLOCK_N = 16);
# without the mask, pairing only halves the grid (the experiment's control).
PAIRED_SHAPES = [(1, 1, 1, 1, 64, torch.float16, True), (1, 2, 2, 2, 80, torch.bfloat16, True),
                 (2, 1, 3, 3, 64, torch.bfloat16, True), (1, 1, 3, 3, 80, torch.float16, True),
                 (1, 1, 4, 40, 80, torch.bfloat16, True), (1, 1, 7, 2, 64, torch.float16, True),
                 (1, 1, 5, 41, 80, torch.float16, False)]


def _check_paired(batch, heads, n_q, n_k, head_dim, dtype, causal):
    """pair_rows=True against the float64 reference, written into a NaN-filled out= (so a row left
    unwritten, or written by two programs with different values, fails); returns the output."""
    q, k, v = shared.make_qkv(batch, heads, n_q, head_dim, n_k=n_k, dtype=dtype)
    out = paired(q, k, v, causal=causal, out=torch.full_like(q, float("nan")))
    result = shared.compare_with_reference(out, shared.reference_attention(q, k, v, causal=causal), dtype)
    assert result.passed, str(result)
    return q, k, v, out


@pytest.mark.parametrize("shape", PAIRED_SHAPES, ids=str)
def test_paired_rows_match_reference_and_default(shape):
    """pair_rows=True (benchmarks/step02_paired_rows.py): program i computes rows i and Nq - 1 - i.

    Bit for bit the default kernel's result too: each row goes through the same operations in turn.
    """
    q, k, v, out = _check_paired(*shape)
    assert torch.equal(out, vectorized_attention(q, k, v, causal=shape[-1]))


def test_paired_rows_odd_length_across_blocks():
    """Nq = Nk = 97 at D = 64 (BLOCK_N = 32): 48 pairs and the middle row 48 alone; rows end in all four
    key blocks. Reference only: the interpreter takes about 30 ms a row."""
    _check_paired(1, 1, 97, 97, 64, torch.float16, True)


def test_default_path_is_one_row_per_program():
    """Pairing is off unless asked for: the launcher's and the kernel's defaults, and the grid."""
    assert inspect.signature(vectorized_attention).parameters["pair_rows"].default is False
    assert inspect.signature(step02.launch).parameters["pair_rows"].default is False
    kernel = step02.vectorized_attention_kernel
    kernel = getattr(kernel, "fn", kernel)  # the Python function under the JIT or interpreter wrapper
    assert inspect.signature(kernel).parameters["PAIR_ROWS"].default is False
    grids = []
    real_kernel = step02.vectorized_attention_kernel

    class Recorder:  # records the grid, then launches the real kernel
        def __getitem__(self, grid):
            grids.append(grid)
            return real_kernel[grid]

    q, k, v = shared.make_qkv(1, 2, 3, 16, dtype=torch.float16)
    try:
        step02.vectorized_attention_kernel = Recorder()
        vectorized_attention(q, k, v, causal=True)
        vectorized_attention(q, k, v, causal=True, pair_rows=True)
    finally:
        step02.vectorized_attention_kernel = real_kernel
    assert grids == [(3, 2), (2, 2)]  # Nq rows; ceil(Nq / 2) pairs (the middle row alone)
