"""Steps 01 and 02 refuse malformed input with a clear ValueError/TypeError, never a crash.

Both launchers share one contract (equal head counts, head dims up to 256), so
one table of bad inputs serves both; step 03's own checks (GQA, head dims
16..256) are in test_flash_forward.py. Misuse is handled the same way in every
step: a causal flag that is not a bool or a known alignment raises; inputs
that require grad raise (these kernels have no backward); empty inputs return
what SDPA returns.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import shared

KERNELS = {"01": shared.load_step("01").basic_attention, "02": shared.load_step("02").vectorized_attention}


def _qkv(**overrides):
    shapes = {"q": (1, 2, 8, 16), "k": (1, 2, 8, 16), "v": (1, 2, 8, 16)}
    shapes.update({k: v for k, v in overrides.items() if k in shapes})
    dtype = overrides.get("dtype", torch.float16)
    return [torch.randn(s, device=shared.DEVICE).to(dtype) for s in shapes.values()]


@pytest.mark.parametrize("step", KERNELS)
@pytest.mark.parametrize("overrides,error,match", [
    ({"q": (2, 2, 8, 16)}, ValueError, "batch sizes differ"),
    ({"q": (1, 3, 8, 16)}, ValueError, "head counts differ"),
    ({"q": (1, 4, 8, 16)}, ValueError, "head counts differ"),  # GQA-shaped: step 03 only
    ({"k": (1, 2, 9, 16)}, ValueError, "same shape"),
    ({"q": (1, 2, 8, 32)}, ValueError, "head dims differ"),
    ({"q": (2, 8, 16)}, ValueError, "4-D"),
    ({"k": (1, 2, 8, 16, 1), "v": (1, 2, 8, 16, 1)}, ValueError, "4-D"),
    ({"q": (1, 2, 8, 512), "k": (1, 2, 8, 512), "v": (1, 2, 8, 512)}, ValueError, "head dim 512"),
    ({"q": (1, 2, 8, 257), "k": (1, 2, 8, 257), "v": (1, 2, 8, 257)}, ValueError, "head dim 257"),
    # empty inputs are still checked: a wrong shape is wrong whatever its size
    ({"q": (1, 2, 0, 512), "k": (1, 2, 0, 512), "v": (1, 2, 0, 512)}, ValueError, "head dim 512"),
    ({"q": (0, 2, 8, 16)}, ValueError, "batch sizes differ"),
    ({"q": (1, 0, 8, 16)}, ValueError, "head counts differ"),
    ({"k": (1, 2, 0, 16)}, ValueError, "same shape"),
    ({"q": (1, 65536, 1, 16), "k": (1, 65536, 1, 16), "v": (1, 65536, 1, 16)}, ValueError, "grid limit"),
    ({"dtype": torch.int32}, TypeError, "dtype torch.int32"),
    ({"dtype": torch.float64}, TypeError, "supported"),
], ids=str)
def test_bad_input_raises_clear_errors(step, overrides, error, match):
    q, k, v = _qkv(**overrides)
    with pytest.raises(error, match=match):
        KERNELS[step](q, k, v)


@pytest.mark.parametrize("step", KERNELS)
def test_mixed_dtypes_bad_scale_bad_out_and_non_tensors(step):
    attention = KERNELS[step]
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="share one dtype"):
        attention(q, k.float(), v)
    with pytest.raises(TypeError, match="share one dtype"):
        attention(q, k, v.bfloat16())
    with pytest.raises(TypeError, match="scale"):
        attention(q, k, v, scale="0.1")
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite"):
            attention(q, k, v, scale=bad)
    with pytest.raises(TypeError, match="torch.Tensor"):
        attention(q.tolist(), k, v)
    with pytest.raises(ValueError, match="out must be"):
        attention(q, k, v, out=torch.empty(3, device=shared.DEVICE))
    with pytest.raises(ValueError, match="out must be"):
        attention(q, k, v, out=torch.empty_like(q, dtype=torch.float32))


@pytest.mark.parametrize("step", KERNELS)
@pytest.mark.parametrize("causal,error,match", [
    ("no", ValueError, "accepted: True, False, 'top_left'"),  # truthy: used to run causal attention
    ("yes", ValueError, "not understood"),
    ("True", ValueError, "not understood"),
    ("lower_right", ValueError, "only step 03's flash_attention"),
    (1, TypeError, "causal must be a bool"),
    (None, TypeError, "causal must be a bool"),
    (0.0, TypeError, "causal must be a bool"),
    (torch.tensor(True), TypeError, "causal must be a bool"),
], ids=str)
def test_causal_must_be_a_bool_or_a_known_alignment(step, causal, error, match):
    q, k, v = _qkv()
    with pytest.raises(error, match=match):
        KERNELS[step](q, k, v, causal=causal)


@pytest.mark.parametrize("step", KERNELS)
def test_causal_accepts_top_left_and_numpy_bools(step):
    attention = KERNELS[step]
    q, k, v = shared.make_qkv(1, 1, 3, 16, n_k=5)
    causal = attention(q, k, v, causal=True)
    torch.testing.assert_close(attention(q, k, v, causal="top_left"), causal, atol=0, rtol=0)
    torch.testing.assert_close(attention(q, k, v, causal=np.bool_(True)), causal, atol=0, rtol=0)
    torch.testing.assert_close(attention(q, k, v, causal=np.bool_(False)), attention(q, k, v), atol=0, rtol=0)


@pytest.mark.parametrize("step", KERNELS)
@pytest.mark.parametrize("needs_grad", ["q", "k", "v"])
def test_inputs_that_require_grad_are_refused_at_call_time(step, needs_grad):
    attention = KERNELS[step]
    q, k, v = shared.make_qkv(1, 1, 3, 16)
    inputs = {"q": q, "k": k, "v": v}
    inputs[needs_grad].requires_grad_(True)
    with pytest.raises(ValueError, match="no backward pass.*step 03's flash_attention"):
        attention(*inputs.values())
    with torch.no_grad():  # inference on parameters that require grad: allowed, no graph wanted
        out = attention(*inputs.values())
    assert not out.requires_grad


# (q shape, k/v shape): no query rows (Nq, batch or heads = 0) give an empty
# result; no keys (Nk = 0) give zeros, causal or not. Both are what SDPA returns.
EMPTY_CASES = [
    ((1, 2, 0, 16), (1, 2, 5, 16)),
    ((1, 2, 3, 16), (1, 2, 0, 16)),
    ((1, 2, 0, 16), (1, 2, 0, 16)),
    ((0, 2, 3, 16), (0, 2, 4, 16)),
    ((1, 0, 3, 16), (1, 0, 4, 16)),
]


@pytest.mark.parametrize("step", KERNELS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("q_shape,kv_shape", EMPTY_CASES, ids=str)
def test_empty_inputs_return_what_sdpa_returns(step, causal, q_shape, kv_shape):
    q = torch.randn(q_shape, device=shared.DEVICE, dtype=torch.float16)
    k, v = (torch.randn(kv_shape, device=shared.DEVICE, dtype=torch.float16) for _ in range(2))
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal).half()
    out = KERNELS[step](q, k, v, causal=causal)
    assert out.shape == expected.shape and out.dtype == q.dtype
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    into = torch.full(expected.shape, float("nan"), device=shared.DEVICE, dtype=torch.float16)
    assert KERNELS[step](q, k, v, causal=causal, out=into) is into  # no keys: out is zeroed, not left NaN
    torch.testing.assert_close(into, expected, atol=0, rtol=0)
