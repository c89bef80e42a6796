"""Gradients of an attention implementation against float64 autograd.

    from shared.gradients import compare_gradients
    errors = compare_gradients((dq, dk, dv), q, k, v, do, causal=True)
    assert all(e["ok"] for e in errors)

The rule every differentiable step is held to: its error against float64 autograd is at
most twice plain PyTorch's error in the same dtype, plus one rounding of the result to
that dtype (the final rounding is an error no implementation can beat; it dominates where
a gradient is a plain sum, e.g. dV with one key).
"""
import torch

from .baselines import naive_torch
from .runtime import INTERPRETER
from .test_utils import reference_attention

# One rounding of a result to its dtype: half an ulp at 1.0 when rounding to nearest, as the
# GPU does. Triton's CPU interpreter (3.6 and 3.8) converts fp32 to bf16 by truncation, a
# whole ulp (1 - 2^-10 becomes 0.99609375, not 1.0): there the bf16 term is one ulp.
ROUNDING = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-7 if INTERPRETER else 2.0**-8,
            torch.float32: 2.0**-24}


def reference_gradients(q, k, v, do, dtype, causal=False, scale=None, window=None):
    """(dq, dk, dv) by autograd through attention computed in ``dtype``.

    float64 gives the exact answer; q's own dtype gives "plain PyTorch": naive matmul-softmax-
    matmul where SDPA's masks suffice, the reference's masked formula otherwise.
    """
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
    if dtype != torch.float64 and window is None and causal in (False, True, "top_left"):
        out = naive_torch(*leaves, causal=bool(causal), scale=scale)
    else:
        out = reference_attention(*leaves, causal=causal, scale=scale, window=window, compute_dtype=dtype)
    return torch.autograd.grad(out, leaves, do.to(dtype))


def compare_gradients(ours, q, k, v, do, causal=False, scale=None, window=None):
    """Three dicts (dq, dk, dv): "ours" and "torch" max abs errors vs float64, "bound", "ok"."""
    exact = reference_gradients(q, k, v, do, torch.float64, causal, scale, window)
    same_dtype = reference_gradients(q, k, v, do, q.dtype, causal, scale, window)
    result = []
    for got, plain, e in zip(ours, same_dtype, exact):
        err_ours = (got.to(torch.float64) - e).abs().max().item() if e.numel() else 0.0
        err_torch = (plain.to(torch.float64) - e).abs().max().item() if e.numel() else 0.0
        largest = e.abs().max().item() if e.numel() else 0.0
        bound = 2 * err_torch + ROUNDING[q.dtype] * largest + 1e-5
        result.append({"ours": err_ours, "torch": err_torch, "bound": bound, "ok": err_ours <= bound})
    return result
