"""Input checks every step's launcher runs before it launches a kernel.

A kernel fed a wrong shape reads out of bounds or computes garbage without a
word; a clear ``ValueError``/``TypeError`` up front is the friendlier failure.
"""
import math
import numbers

import numpy as np
import torch

from .runtime import INTERPRETER

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def kv_heads_fit(heads, kv_heads):
    """True when ``kv_heads`` K/V heads can serve ``heads`` query heads: a multiple (GQA), or 0 for 0."""
    return heads % kv_heads == 0 if kv_heads else heads == 0


def check_causal(causal, *, lower_right=False):
    """The causal flag as an alignment: None (no mask), "top_left" or "lower_right".

    Accepts a bool (``True`` means "top_left", SDPA's ``is_causal``) or one of the
    strings; ``lower_right`` says whether the caller implements that alignment.
    Anything else raises: a truthy ``causal="no"`` must not quietly mask.
    """
    if isinstance(causal, (bool, np.bool_)):
        return "top_left" if causal else None
    if not isinstance(causal, str):
        raise TypeError(f"causal must be a bool or an alignment string such as 'top_left', "
                        f"got {type(causal).__name__}")
    if causal == "top_left" or (causal == "lower_right" and lower_right):
        return causal
    if causal == "lower_right":
        raise ValueError("causal='lower_right' is not supported here: only step 03's flash_attention "
                         "supports lower-right alignment (use True or 'top_left')")
    accepted = "True, False, 'top_left'" + (", 'lower_right'" if lower_right else "")
    raise ValueError(f"causal={causal!r} is not understood; accepted: {accepted}")


def check_attention_inputs(q, k, v, scale=None, *, allow_gqa=False, min_head_dim=1, max_head_dim=256,
                           differentiable=False, offsets64=False):
    """Raise TypeError/ValueError naming the problem; return (scale as float).

    Empty inputs (batch, heads, Nq or Nk = 0) pass, as in SDPA: the launcher
    then returns ``empty_attention_result`` instead of launching.
    ``differentiable=False`` (a forward-only kernel) refuses inputs that need a
    gradient, which the result could not carry. ``offsets64``: the kernel adds each
    (batch, head)'s offset in 64-bit integers, so only the span of one (batch, head) slice
    must stay below 2^31 elements, not the whole tensor's.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, heads, seq_len, head_dim), got shape {tuple(t.shape)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; supported: float16, bfloat16, float32")
        dims = slice(2, 4) if offsets64 else slice(0, 4)
        span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape[dims], t.stride()[dims]))
        if span >= 2**31:  # the kernels compute element offsets in 32-bit integers
            where = "one (batch, head) slice of " if offsets64 else ""
            raise ValueError(f"{where}{name} spans {span} elements; the kernels address at most "
                             "2^31 - 1 (32-bit offsets): split the batch")
    if not differentiable and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad
                                                           or v.requires_grad):
        raise ValueError("q, k or v requires grad, but this kernel has no backward pass, so its result "
                         "would carry no gradient: use step 03's flash_attention, which is "
                         "differentiable, or call it under torch.no_grad()")
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
        if not kv_heads_fit(heads, kv_heads):
            raise ValueError(f"q's {heads} heads must be a multiple of k/v's {kv_heads} heads")
    elif heads != kv_heads:
        raise ValueError(f"head counts differ: q has {heads}, k/v have {kv_heads} "
                         "(grouped-query attention arrives in step 03)")
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


def is_empty_attention(q, k):
    """True when there is nothing to launch: no query rows (batch, heads or Nq is 0) or no keys."""
    return q.numel() == 0 or k.numel() == 0


def empty_attention_result(q, v, out=None):
    """What SDPA returns when ``is_empty_attention``, without launching a kernel.

    No query rows: an empty (B, H, Nq, D) tensor. No keys: zeros, since the
    weighted sum over no values is 0 (causal or not). Written into ``out`` when given.
    """
    return check_out(out, q, v).zero_()


def check_out(out, q, v, *, inputs=(), offsets64=False):
    """Check a caller-supplied output buffer, or allocate one like q with v's head dim.

    ``inputs``: tensors ``out`` must not overlap (a kernel reading q while writing its
    result over q computes garbage). ``offsets64`` as in ``check_attention_inputs``.
    """
    shape = (*q.shape[:-1], v.shape[-1])
    if out is None:
        return torch.empty(shape, dtype=q.dtype, device=q.device)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != q.dtype \
            or out.device != q.device:
        raise ValueError(f"out must be a {q.dtype} tensor of shape {shape} on {q.device}")
    dims = range(2, out.dim()) if offsets64 else range(out.dim())
    if 1 + sum((out.shape[i] - 1) * abs(out.stride(i)) for i in dims) >= 2**31:
        raise ValueError("out spans 2^31 elements or more; the kernels address at most 2^31 - 1")
    for name, t in zip("qkv", inputs):
        if overlaps(out, t):
            raise ValueError(f"out overlaps {name}'s memory: the kernel would overwrite its own input; "
                             "pass a separate buffer")
    return out


def overlaps(a, b):
    """True when the memory ranges two tensors span intersect (a conservative test)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False

    def extent(t):
        start = t.data_ptr()
        span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
        return start, start + span * t.element_size()

    (a0, a1), (b0, b1) = extent(a), extent(b)
    return a0 < b1 and b0 < a1
