"""Input checks every step's launcher runs before it launches a kernel.

A kernel fed a wrong shape reads out of bounds or computes garbage without a
word; a clear ``ValueError``/``TypeError`` up front is the friendlier failure.
"""
import math
import numbers

import torch

from .runtime import INTERPRETER

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_attention_inputs(q, k, v, scale=None, *, allow_gqa=False, min_head_dim=1, max_head_dim=256):
    """Raise TypeError/ValueError naming the problem; return (scale as float)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, heads, seq_len, head_dim), got shape {tuple(t.shape)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; supported: float16, bfloat16, float32")
        span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
        if span >= 2**31:  # the kernels compute element offsets in 32-bit integers
            raise ValueError(f"{name} spans {span} elements; the kernels address at most 2^31 - 1 "
                             "(32-bit offsets): split the batch")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if INTERPRETER and q.device.type != "cpu":
        raise ValueError("the Triton interpreter (no GPU / TRITON_INTERPRET=1) needs CPU tensors")
    if not INTERPRETER and q.device.type != "cuda":
        raise ValueError(f"tensors must be on a CUDA device, got {q.device}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    (batch, heads, n_q, head_dim), (k_batch, kv_heads, n_k, k_dim) = q.shape, k.shape
    if batch != k_batch:
        raise ValueError(f"batch sizes differ: q has {batch}, k/v have {k_batch}")
    if head_dim != k_dim:
        raise ValueError(f"head dims differ: q has {head_dim}, k/v have {k_dim}")
    if allow_gqa:
        if kv_heads == 0 or heads % kv_heads:
            raise ValueError(f"q's {heads} heads must be a multiple of k/v's {kv_heads} heads")
    elif heads != kv_heads:
        raise ValueError(f"head counts differ: q has {heads}, k/v have {kv_heads} "
                         "(grouped-query attention arrives in step 03)")
    if n_q < 1 or n_k < 1 or batch < 1 or heads < 1:
        raise ValueError(f"empty input: q {tuple(q.shape)}, k/v {tuple(k.shape)}")
    if not min_head_dim <= head_dim <= max_head_dim:
        raise ValueError(f"head dim {head_dim} not supported (must be {min_head_dim} to {max_head_dim})")
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def check_grid_rows(batch, heads):
    """Every step puts batch * heads on the grid's second axis, which CUDA caps at 65535."""
    if batch * heads > 65535:
        raise ValueError(f"batch * heads = {batch * heads} exceeds 65535 (the grid limit on axis 1); "
                         "split the batch")


def check_out(out, q, v):
    """Check a caller-supplied output buffer, or allocate one like q with v's head dim."""
    shape = (*q.shape[:-1], v.shape[-1])
    if out is None:
        return torch.empty(shape, dtype=q.dtype, device=q.device)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != q.dtype \
            or out.device != q.device:
        raise ValueError(f"out must be a {q.dtype} tensor of shape {shape} on {q.device}")
    return out
