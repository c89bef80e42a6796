"""Hypothesis strategies for attention inputs, for the property tests of every step.

    from attention_strategies import attention_inputs
    case = data.draw(attention_inputs(gqa=True, max_len=300, max_pairs=4096))
    q, k, v = case.tensors()          # fresh random normal data, in the drawn layouts
    fn(q, k, v, causal=case.causal, scale=case.scale)

The strategy draws sizes, dtype, flags and memory layouts, not tensors: a
failing case then prints as a short description that ``case.tensors()``
rebuilds exactly (the data come from ``shared.make_qkv`` with a drawn seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import torch

import shared

# Powers of two and the awkward ones in between: odd (17, 111) and multiples of 8 or 16 that are
# not powers of two (40, 80, 96). Any other dim in range is drawn too, less often.
HEAD_DIMS = (16, 17, 32, 40, 64, 80, 96, 111, 128, 256)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
CAUSAL_VALUES = (False, True, "top_left")


@dataclass(frozen=True)
class AttentionCase:
    """One drawn problem: q (B, H, Nq, D), k and v (B, Hkv, Nk, D), the flags, and how to rebuild it."""

    batch: int
    heads: int
    kv_heads: int
    n_q: int
    n_k: int
    head_dim: int
    dtype: torch.dtype
    causal: bool | str
    scale: float | None
    layouts: tuple[str, str, str]  # q, k, v: names from shared.LAYOUTS
    seed: int

    def tensors(self, device=None):
        """Fresh standard-normal (q, k, v) in the drawn layouts; the same values every call."""
        return shared.make_qkv(self.batch, self.heads, self.n_q, self.head_dim, n_k=self.n_k,
                               kv_heads=self.kv_heads, dtype=self.dtype, device=device, seed=self.seed,
                               layout=self.layouts)


def _at_most(limit, per_unit, cap):
    """The largest count in 1..cap whose product with per_unit stays within limit (None: no limit)."""
    return cap if limit is None else max(1, min(cap, limit // per_unit))


@st.composite
def attention_inputs(draw, *, gqa=False, max_batch=2, max_heads=4, max_len=300, max_rows=None,
                     max_pairs=None, min_head_dim=16, max_head_dim=256, dtypes=DTYPES,
                     causal_values=CAUSAL_VALUES, layouts=tuple(shared.LAYOUTS), scales=None):
    """An ``AttentionCase``.

    gqa: draw kv_heads among the divisors of heads (else kv_heads = heads).
    max_len: cap on Nq and Nk. max_rows caps B*H*Nq (programs of steps 01/02)
    and max_pairs caps B*H*Nq*Nk (scores): the interpreter's cost grows with
    both, so CI keeps them small. Nq or Nk is drawn first at random, so either
    one can reach ``max_len``. scales: a strategy for ``scale`` (default: None,
    i.e. 1/sqrt(D), or a finite float in [-2, 2], negative and 0 included).
    """
    batch = draw(st.integers(1, max_batch))
    heads = draw(st.integers(1, max_heads))
    kv_heads = draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0])) if gqa else heads
    bh = batch * heads
    n_q_cap = _at_most(max_pairs, bh, _at_most(max_rows, bh, max_len))
    if draw(st.booleans()):  # queries first
        n_q = draw(st.integers(1, n_q_cap))
        n_k = draw(st.integers(1, _at_most(max_pairs, bh * n_q, max_len)))
    else:
        n_k = draw(st.integers(1, _at_most(max_pairs, bh, max_len)))
        n_q = draw(st.integers(1, _at_most(max_pairs, bh * n_k, n_q_cap)))
    in_range = [d for d in HEAD_DIMS if min_head_dim <= d <= max_head_dim]
    head_dim = draw(st.sampled_from(in_range) | st.integers(min_head_dim, max_head_dim))
    if scales is None:
        scales = st.none() | st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)
    return AttentionCase(
        batch=batch, heads=heads, kv_heads=kv_heads, n_q=n_q, n_k=n_k, head_dim=head_dim,
        dtype=draw(st.sampled_from(dtypes)),
        causal=draw(st.sampled_from(causal_values)),
        scale=draw(scales),
        layouts=tuple(draw(st.sampled_from(layouts)) for _ in range(3)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
