"""Steps 01 and 02 refuse malformed input with a clear ValueError/TypeError, never a crash.

Both launchers share one contract (equal head counts, head dims up to 256), so
one table of bad inputs serves both; step 03's own checks (GQA, head dims
16..256) are in test_flash_forward.py.
"""
import pytest
import torch

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
    ({"q": (1, 2, 0, 16)}, ValueError, "empty"),
    ({"k": (1, 2, 0, 16), "v": (1, 2, 0, 16)}, ValueError, "empty"),
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
