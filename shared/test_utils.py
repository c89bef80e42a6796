"""The one reference attention, random inputs, and the correctness check every step uses.

    from shared import test_correctness
    result = test_correctness(my_attention, q, k, v, causal=True)
    print(result)           # PASS/FAIL, max abs error, relative error, first mismatches
    assert result.passed

Semantics follow ``torch.nn.functional.scaled_dot_product_attention``:
q is ``(B, H, Nq, D)``, k and v are ``(B, Hkv, Nk, D)`` with ``H % Hkv == 0``
(grouped-query attention shares each K/V head between ``H // Hkv`` query heads),
``scale`` defaults to ``1/sqrt(D)``, and ``causal`` masks key ``j`` from query
``i`` when ``j > i`` (top-left alignment, also when Nq != Nk).
"""
from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field

import torch

from .runtime import DEVICE
from .validation import check_causal, kv_heads_fit

# Elementwise |out - ref| <= atol + rtol * |ref|. Half types carry ~3 (bf16) or
# ~4 (fp16) significant digits; the output is rounded to them, and the tensor-core
# kernels (step 03) also round P to that type before the P @ V product. The
# float32 figure leaves room for TF32 matrix products.
TOLERANCES = {
    torch.float16: (3e-3, 3e-3),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float32: (2e-3, 2e-3),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for outputs of this dtype."""
    if dtype not in TOLERANCES:
        raise TypeError(f"no tolerance defined for {dtype}; use float16, bfloat16 or float32")
    return TOLERANCES[dtype]


def causal_mask(n_q: int, n_k: int, device=None) -> torch.Tensor:
    """Boolean (Nq, Nk) mask, True where query i may see key j (j <= i, top-left aligned)."""
    return visibility_mask(n_q, n_k, causal=True, device=device)


def visibility_mask(n_q: int, n_k: int, causal=False, window=None, device=None, rows=None) -> torch.Tensor:
    """Boolean (Nq, Nk) mask, True where query i may see key j.

    ``causal``: False, True or "top_left" (key j <= i, SDPA's ``is_causal``), or
    "lower_right" (j <= i + Nk - Nq: the last query sees the last key, as in a KV cache).
    ``window=(left, right)``: key j visible iff i' - left <= j <= i' + right, where i' is
    i, or i + Nk - Nq when causal is "lower_right"; -1 leaves a side unbounded; with
    causal, the causal bound wins on the right. ``rows``: only these query rows (an index
    tensor), for long sequences whose full mask would not fit in memory.
    """
    i = torch.arange(n_q, device=device)
    i = (i if rows is None else i[rows])[:, None]
    j = torch.arange(n_k, device=device)[None, :]
    if causal == "lower_right":
        i = i + (n_k - n_q)
    visible = torch.ones(i.shape[0], n_k, dtype=torch.bool, device=device)
    if causal:
        visible &= j <= i
    if window is not None:
        left, right = window
        if left >= 0:
            visible &= j >= i - left
        if right >= 0:
            visible &= j <= i + right
    return visible


def reference_attention(q, k, v, causal=False, scale=None, compute_dtype=torch.float64, window=None,
                        return_lse=False):
    """softmax(q k^T * scale [+ mask]) v, computed in ``compute_dtype``.

    Returns a tensor of ``compute_dtype`` (not rounded back to q's dtype), so
    that a comparison measures the kernel's error, not the reference's. ``causal``
    and ``window`` as in ``visibility_mask``. A query that sees no key gets 0 (as
    SDPA returns), and with ``return_lse`` a log-sum-exp of -inf: ``(out, lse)``.
    """
    _check_layout(q, k, v)
    check_causal(causal, lower_right=True)  # a bad flag raises, never masks quietly
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q, k, v = (t.to(compute_dtype) for t in (q, k, v))
    group = q.shape[1] // max(k.shape[1], 1)  # 0 k/v heads come with 0 query heads
    if group > 1:  # GQA/MQA: each K/V head serves `group` consecutive query heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    if causal or window is not None:
        visible = visibility_mask(q.shape[2], k.shape[2], causal, window, q.device)
        scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse.masked_fill(lse == float("-inf"), 0.0)[..., None])
    out = probs @ v
    return (out, lse) if return_lse else out


def _check_layout(q, k, v):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"expected 4-D (B, H, N, D) tensors, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or not kv_heads_fit(q.shape[1], k.shape[1]):
        raise ValueError(f"q {tuple(q.shape)} does not fit k/v {tuple(k.shape)}")


# Memory layouts ``make_qkv`` can return, each a (B, H, N, D) view that a kernel
# must read through its strides: what models and user code really pass.
LAYOUTS = {
    "contiguous": "a fresh (B, H, N, D) tensor",
    "transposed": "a (B, N, H, D) buffer viewed as (B, H, N, D), as projections produce it",
    "sliced": "a slice of a longer, wider buffer: storage offset, row stride above D",
    "expanded_batch": "one (1, H, N, D) tensor broadcast over the batch: batch stride 0",
    "expanded_heads": "one (B, 1, N, D) tensor broadcast over the heads: head stride 0",
}
QKV_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _random_view(gen, batch, heads, n, head_dim, layout, dtype, device):
    """Standard-normal (B, H, N, D) values in the given layout (see LAYOUTS)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {sorted(LAYOUTS)}")
    buffer_shape, view = {
        "contiguous": ((batch, heads, n, head_dim), lambda t: t),
        "transposed": ((batch, n, heads, head_dim), lambda t: t.transpose(1, 2)),
        "sliced": ((batch, heads, n + 3, head_dim + 5), lambda t: t[:, :, 2:n + 2, 1:head_dim + 1]),
        "expanded_batch": ((1, heads, n, head_dim), lambda t: t.expand(batch, -1, -1, -1)),
        "expanded_heads": ((batch, 1, n, head_dim), lambda t: t.expand(-1, heads, -1, -1)),
    }[layout]
    # Round the buffer to the dtype before taking the view: .to() on a strided view
    # would return a contiguous copy.
    buffer = torch.randn(buffer_shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    return view(buffer)


def make_qkv(batch=2, heads=3, n_q=97, head_dim=64, n_k=None, kv_heads=None,
             dtype=torch.float16, device=None, seed=None, requires_grad=False, layout="contiguous"):
    """Fresh random q (B, H, Nq, D), k and v (B, Hkv, Nk, D).

    Standard-normal entries: never zeros, which would hide unwritten outputs
    and wrong indexing. Pass ``seed`` only to reproduce a failure. ``layout``
    is one of ``LAYOUTS``, or a (q, k, v) triple of them. Sizes may be 0
    (empty tensors); ``heads`` must be a multiple of ``kv_heads``.
    """
    device = DEVICE if device is None else device
    n_k = n_q if n_k is None else n_k
    kv_heads = heads if kv_heads is None else kv_heads
    sizes = {"batch": batch, "heads": heads, "n_q": n_q, "head_dim": head_dim, "n_k": n_k,
             "kv_heads": kv_heads}
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(size).__name__}")
        if size < 0:
            raise ValueError(f"{name} must be >= 0, got {size}")
    if not kv_heads_fit(heads, kv_heads):
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    if dtype not in QKV_DTYPES:
        raise TypeError(f"dtype must be a floating type (float16, bfloat16, float32, float64), got {dtype}")
    layouts = (layout,) * 3 if isinstance(layout, str) else tuple(layout)
    if len(layouts) != 3:
        raise ValueError(f"layout must be one name or a (q, k, v) triple, got {layout!r}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(torch.seed() if seed is None else seed)

    def one(h, n, lay):
        t = _random_view(gen, batch, h, n, head_dim, lay, dtype, device)
        # detach(): a view of a strided buffer becomes a leaf with the same strides
        return t.detach().requires_grad_(requires_grad) if requires_grad else t

    return one(heads, n_q, layouts[0]), one(kv_heads, n_k, layouts[1]), one(kv_heads, n_k, layouts[2])


@dataclass
class CorrectnessResult:
    """What ``test_correctness`` found. Truthy when it passed; ``result["passed"]`` works too."""

    passed: bool
    max_abs_error: float
    rel_error: float  # ||out - ref|| / ||ref||
    atol: float
    rtol: float
    message: str = ""
    mismatches: list = field(default_factory=list)  # (index, got, expected), first few

    def __bool__(self):
        return self.passed

    def __getitem__(self, key):
        return getattr(self, key)

    def __str__(self):
        head = "PASS" if self.passed else "FAIL"
        text = (f"{head}: max abs err {self.max_abs_error:.2e}, rel err {self.rel_error:.2e} "
                f"(atol {self.atol:g}, rtol {self.rtol:g})")
        if self.message:
            text += f" - {self.message}"
        for index, got, expected in self.mismatches:
            text += f"\n    at {index}: got {got:.6g}, expected {expected:.6g}"
        return text


def _accepts(fn, name):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _poison_allocator(like: torch.Tensor):
    """Fill the memory the next allocation of this size will likely reuse with NaN.

    An implementation that forgets to write part of its output then returns NaN
    there instead of stale values that might happen to look right.
    """
    torch.full_like(like, float("nan"))


def test_correctness(fn, q, k, v, causal=False, scale=None, atol=None, rtol=None,
                     max_mismatches=5, compute_dtype=torch.float64, window=None):
    """Run ``fn(q, k, v, ...)`` and compare it with ``reference_attention``.

    ``causal`` and ``scale`` are passed on only when set, so a plain
    ``fn(q, k, v)`` can be checked too. When ``fn`` takes an ``out=`` argument,
    it gets a NaN-filled buffer, so any element it leaves unwritten fails.
    """
    expected_shape = (*q.shape[:-1], v.shape[-1])
    kwargs = {}
    if causal:
        kwargs["causal"] = causal
    if scale is not None:
        kwargs["scale"] = scale
    if window is not None:
        kwargs["window"] = window
    if _accepts(fn, "out"):
        kwargs["out"] = torch.full(expected_shape, float("nan"), dtype=q.dtype, device=q.device)
    else:
        _poison_allocator(torch.empty(expected_shape, dtype=q.dtype, device=q.device))

    out = fn(q, k, v, **kwargs)
    ref = reference_attention(q.detach(), k.detach(), v.detach(), causal=causal, scale=scale,
                              compute_dtype=compute_dtype, window=window)
    return compare_with_reference(out, ref, q.dtype, atol, rtol, max_mismatches)


def compare_with_reference(out, ref, dtype, atol=None, rtol=None, max_mismatches=5):
    """The series' error rule: |out - ref| <= atol + rtol * |ref| everywhere, no NaN/Inf.

    ``out`` must be a tensor of ``ref``'s shape and of ``dtype`` (the inputs'
    dtype, which also picks the default ``tolerance``). Returns a ``CorrectnessResult``.
    """
    default_atol, default_rtol = tolerance(dtype)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol

    def fail(message, max_abs=float("inf"), rel=float("inf"), mismatches=()):
        return CorrectnessResult(False, max_abs, rel, atol, rtol, message, list(mismatches))

    if not isinstance(out, torch.Tensor):
        return fail(f"returned {type(out).__name__}, not a tensor")
    if out.shape != ref.shape:
        return fail(f"shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
    if out.dtype != dtype:
        return fail(f"dtype {out.dtype}, expected {dtype}")
    if out.numel() == 0:  # an error figure over no elements would be inf (a max) or 0/0
        return CorrectnessResult(True, 0.0, 0.0, atol, rtol, "empty output (nothing to compare)")

    got = out.detach().to(ref.dtype)
    err = (got - ref).abs()
    finite = torch.isfinite(got)
    bad = ~finite | (err > atol + rtol * ref.abs())
    max_abs = err[finite].max().item() if finite.any() else float("inf")
    rel = ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item() if finite.all() else float("inf")
    if not bad.any():
        return CorrectnessResult(True, max_abs, rel, atol, rtol)

    first = bad.nonzero()[:max_mismatches].tolist()
    mismatches = [(tuple(i), got[tuple(i)].item(), ref[tuple(i)].item()) for i in first]
    n_bad, n_nonfinite = int(bad.sum()), int((~finite).sum())
    message = f"{n_bad} of {bad.numel()} elements out of tolerance"
    if n_nonfinite:
        message += f", {n_nonfinite} NaN/Inf"
    return fail(message, max_abs, rel, mismatches)


test_correctness.__test__ = False  # a helper, not a pytest test, when imported into test files


# Shapes every step checks on each run: awkward lengths (1, 17, 97, 128), unequal
# query/key lengths, head dims that are not powers of two, causal and not.
# (batch, heads, n_q, n_k, head_dim, causal). The quick set keeps Nq * Nk small
# because the CPU interpreter costs milliseconds per key step of step 01; each
# awkward length still appears on the query side and on the key side.
CHECK_SHAPES_QUICK = [
    (1, 1, 1, 1, 16, False),
    (1, 2, 97, 3, 64, True),
    (1, 1, 4, 97, 40, False),
    (1, 1, 17, 17, 80, True),
    (2, 1, 3, 128, 128, False),
]
CHECK_SHAPES_FULL = CHECK_SHAPES_QUICK + [
    (2, 3, 97, 97, 64, True),
    (2, 4, 128, 128, 128, False),
    (1, 2, 1025, 1025, 64, True),
    (2, 2, 1, 1025, 128, False),
    (1, 4, 333, 257, 96, True),
]


def run_checks(fn, shapes, dtypes=(torch.float16, torch.bfloat16), label=None, **fn_kwargs):
    """Check ``fn`` on every (shape, dtype); print one line each; return True if all pass."""
    label = label or getattr(fn, "__name__", "fn")
    all_passed = True
    for batch, heads, n_q, n_k, head_dim, causal in shapes:
        for dtype in dtypes:
            q, k, v = make_qkv(batch, heads, n_q, head_dim, n_k=n_k, dtype=dtype)
            result = test_correctness(fn, q, k, v, causal=causal, **fn_kwargs)
            all_passed &= result.passed
            shape = f"B={batch} H={heads} Nq={n_q} Nk={n_k} D={head_dim}"
            print(f"  {label:<22} {shape:<32} causal={causal!s:<5} {str(dtype)[6:]:<8} {result}")
    return all_passed
