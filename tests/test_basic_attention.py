"""Step 01 against the float64 reference, on shapes chosen to break it.

In the CPU interpreter every key step of every program costs milliseconds, so
the shapes keep Nq * Nk small; on a GPU the same tests add full square sizes.
"""
import pytest
import torch

import shared

step01 = shared.load_step("01")
basic_attention = step01.basic_attention

# (batch, heads, n_q, n_k, head_dim, causal)
SHAPES = [
    (1, 1, 1, 1, 16, False),
    (1, 1, 1, 1, 64, True),
    (1, 2, 17, 17, 40, True),
    (2, 1, 97, 2, 64, False),
    (1, 1, 3, 97, 80, True),
    (1, 1, 128, 2, 128, True),
    (1, 1, 2, 128, 16, False),
    (1, 1, 9, 31, 111, False),
    (1, 1, 4, 6, 256, True),
]
if shared.HAS_GPU:
    SHAPES += [(2, 3, 97, 97, 64, True), (1, 4, 1025, 1025, 128, False), (2, 2, 333, 1025, 80, True),
               (1, 2, 1025, 97, 40, True)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape, dtype):
    batch, heads, n_q, n_k, head_dim, causal = shape
    q, k, v = shared.make_qkv(batch, heads, n_q, head_dim, n_k=n_k, dtype=dtype)
    result = shared.test_correctness(basic_attention, q, k, v, causal=causal)
    assert result.passed, str(result)


def test_custom_scale_and_non_contiguous_inputs():
    # (B, N, H, D) as models produce it, viewed as (B, H, N, D): strides, not copies
    q, k, v = (torch.randn(2, n, 3, 40, dtype=torch.float16, device=shared.DEVICE).transpose(1, 2)
               for n in (7, 19, 19))
    assert not q.is_contiguous()
    result = shared.test_correctness(basic_attention, q, k, v, causal=True, scale=0.3)
    assert result.passed, str(result)


def test_writes_into_given_out():
    q, k, v = shared.make_qkv(1, 1, 5, 16, dtype=torch.float16)
    out = torch.full_like(q, float("nan"))
    assert basic_attention(q, k, v, out=out) is out and torch.isfinite(out).all()


# Bad-input errors: tests/test_input_checks.py (shared with step 02).


def test_traffic_model_counts_every_key_once_per_row():
    t = step01.traffic_per_row(n_k=1024, head_dim=64, element_size=2)
    assert t["loads"] == 2 * 1024 + 1  # a K row and a V row per key, plus q
    assert t["bytes"] == (2 * 1024 + 2) * 64 * 2  # + the output row written
    assert step01.traffic_per_row(1024, 64, 2, causal_row=9)["loads"] == 2 * 10 + 1
