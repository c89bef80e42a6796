"""Step 03's variants: lower-right causal, sliding windows, rows that see nothing, split-KV
decoding and its merge, packed variable-length sequences, `out=` safety, the host-side plan
cache. Every variant against the float64 reference, forward and gradients.

On CPU the kernels run in Triton's interpreter with 16-row tiles, so lengths of a few dozen
already cross several tiles, windows edges and splits.
"""
import math

import pytest
import torch

import shared

step03 = shared.load_step("03")
flash_attention = step03.flash_attention
flash_attention_forward = step03.flash_attention_forward
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
BIG = shared.HAS_GPU  # longer sequences where a GPU makes them cheap

# (B, H, Hkv, Nq, Nk, D, causal, window, dtype)
MASK_CASES = [
    (1, 2, 1, 7, 40, 64, "lower_right", None, F16),  # KV cache: the last query sees the last key
    (1, 2, 2, 40, 23, 32, "lower_right", None, BF16),  # Nq > Nk: the first 17 rows see nothing
    (2, 2, 1, 45, 45, 64, True, (8, 0), F16),  # sliding window, causal
    (1, 2, 2, 37, 29, 40, False, (5, 3), BF16),  # a band, not causal, top-left
    (1, 1, 1, 33, 50, 16, "lower_right", (10, -1), F32),  # left edge only, lower-right alignment
    (1, 2, 2, 30, 30, 64, False, (-1, 0), F16),  # (-1, 0) is plain causal
    (1, 2, 2, 30, 30, 80, False, (0, 0), BF16),  # each row sees only its own key
    (1, 2, 1, 20, 64, 64, "top_left", (3, 40), F16),  # causal wins over a wider right side
]
if BIG:
    MASK_CASES += [
        (2, 4, 2, 1000, 3000, 128, "lower_right", None, BF16),
        (1, 4, 4, 2048, 2048, 64, True, (256, 0), F16),
        (1, 4, 4, 1500, 900, 96, "lower_right", (100, 100), BF16),
    ]


def _id(case):
    b, h, hkv, nq, nk, d, causal, window, dtype = case
    return f"B{b}-H{h}-Hkv{hkv}-{nq}x{nk}-D{d}-{causal}-w{window}-{str(dtype)[6:]}"


@pytest.mark.parametrize("case", MASK_CASES, ids=_id)
def test_masks_forward_and_gradients(case):
    b, h, hkv, nq, nk, d, causal, window, dtype = case
    q, k, v = shared.make_qkv(b, h, nq, d, n_k=nk, kv_heads=hkv, dtype=dtype)
    result = shared.test_correctness(flash_attention, q, k, v, causal=causal, window=window)
    assert result.passed, str(result)
    for name, e in zip(("dq", "dk", "dv"), step03.gradient_errors(q, k, v, causal=causal, window=window)):
        if dtype == F32:
            assert e["ours"] < 2e-5, (name, e)
        else:
            assert e["ok"], (name, e)


def test_rows_that_see_no_key_are_zero_with_zero_gradients():
    # lower-right with Nq > Nk: rows i < Nq - Nk see no key at all
    q, k, v = shared.make_qkv(1, 2, 24, 32, n_k=8, dtype=F16, requires_grad=True)
    o, lse = flash_attention_forward(q.detach(), k.detach(), v.detach(), causal="lower_right")
    empty = slice(0, 16)
    assert torch.equal(o[:, :, empty], torch.zeros_like(o[:, :, empty]))
    assert torch.isneginf(lse[:, :, empty]).all() and torch.isfinite(lse[:, :, 16:]).all()
    out = flash_attention(q, k, v, causal="lower_right")
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    assert all(torch.isfinite(g).all() for g in (dq, dk, dv))
    assert torch.equal(dq[:, :, empty], torch.zeros_like(dq[:, :, empty]))
    # no key at all: SDPA returns zeros; so do we, with lse -inf
    q, k, v = shared.make_qkv(1, 2, 5, 32, n_k=0, dtype=F16)
    o, lse = flash_attention_forward(q, k, v)
    assert torch.equal(o, torch.zeros_like(o)) and torch.isneginf(lse).all()


def test_keys_outside_the_window_are_never_read():
    """NaN in K and V wherever no query tile can see: a kernel that loaded those tiles would
    return NaN (0 * NaN = NaN even where the mask zeroes P), forward or backward. (Keys in a
    tile that is partly visible are loaded and masked, so the poison stops a tile short.)"""
    n_q, n_k, left = (16, 600, 20) if not BIG else (64, 8192, 300)
    q, k, v = shared.make_qkv(1, 2, n_q, 64, n_k=n_k, dtype=F16)
    first_visible = n_k - n_q - left - 128  # 128: the widest key tile
    v[:, :, :first_visible] = float("nan")
    k[:, :, :first_visible] = float("nan")
    leaves = [t.requires_grad_(True) for t in (q, k, v)]
    for splits in (None, 3):
        o, lse = flash_attention_forward(q.detach(), k.detach(), v.detach(), causal="lower_right",
                                         window=(left, 0), num_splits=splits)
        assert torch.isfinite(o).all() and torch.isfinite(lse).all()
    out = flash_attention(*leaves, causal="lower_right", window=(left, 0))
    grads = torch.autograd.grad(out, leaves, torch.randn_like(out))
    assert all(torch.isfinite(g).all() for g in grads)
    assert not grads[1][:, :, :first_visible].any() and not grads[2][:, :, :first_visible].any()
    ref = shared.reference_attention(*[t.detach()[:, :, first_visible:] if i else t.detach()
                                       for i, t in enumerate(leaves)], causal="lower_right",
                                     window=(left, 0))
    assert (out.detach().double() - ref).abs().max().item() < 5e-3


@pytest.mark.parametrize("splits", [1, 2, 3, 7])
@pytest.mark.parametrize("n_q, hkv", [(1, 2), (3, 4), (5, 1)])
def test_split_kv_decoding_matches_reference(splits, n_q, hkv):
    n_k = 4000 if BIG else 70
    q, k, v = shared.make_qkv(2, 4, n_q, 64, n_k=n_k, kv_heads=hkv, dtype=BF16)
    o, lse = flash_attention_forward(q, k, v, causal="lower_right", num_splits=splits)
    ref, ref_lse = shared.reference_attention(q, k, v, causal="lower_right", return_lse=True)
    atol, rtol = shared.tolerance(BF16)
    assert ((o.double() - ref).abs() <= atol + rtol * ref.abs()).all()
    assert (lse.double() - ref_lse).abs().max().item() < 1e-3


def test_merge_attention_states():
    q, k, v = shared.make_qkv(2, 3, 9, 32, n_k=50, dtype=F32)
    cut = 17
    o_a, lse_a = flash_attention_forward(q, k[:, :, :cut], v[:, :, :cut])
    o_b, lse_b = flash_attention_forward(q, k[:, :, cut:], v[:, :, cut:])
    o, lse = step03.merge_attention_states(o_a, lse_a, o_b, lse_b)
    ref, ref_lse = shared.reference_attention(q, k, v, return_lse=True)
    assert (o.double() - ref).abs().max().item() < 1e-5
    assert (lse.double() - ref_lse).abs().max().item() < 1e-5
    # a side that saw nothing (lse -inf) takes no weight; both: zeros and -inf, never NaN
    none = torch.full_like(lse_a, float("-inf"))
    o1, lse1 = step03.merge_attention_states(o_a, lse_a, torch.zeros_like(o_b), none)
    assert torch.equal(o1, o_a) and torch.equal(lse1, lse_a)
    o2, lse2 = step03.merge_attention_states(torch.zeros_like(o_a), none, torch.zeros_like(o_b), none)
    assert not o2.any() and torch.isneginf(lse2).all()
    with pytest.raises(ValueError, match="must match"):
        step03.merge_attention_states(o_a, lse_a, o_b[:, :1], lse_b)
    with pytest.raises(TypeError, match="float32"):
        step03.merge_attention_states(o_a, lse_a.double(), o_b, lse_b)


def _packed(lengths, heads, head_dim, dtype, requires_grad=False):
    t = torch.randn(sum(lengths), heads, head_dim, device=shared.DEVICE).to(dtype)
    return t.requires_grad_(requires_grad)


def _cu(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=shared.DEVICE)


VARLEN_CASES = [  # (lengths_q, lengths_k, H, Hkv, D, causal, window, dtype)
    ([5, 1, 17], [9, 3, 17], 4, 2, 64, True, None, BF16),
    ([20, 7], [20, 7], 2, 2, 40, False, None, F16),
    ([12, 30, 2], [12, 30, 2], 2, 1, 32, True, (5, 0), F16),
    ([3, 9], [11, 20], 2, 2, 64, "lower_right", None, F16),
]
if BIG:
    VARLEN_CASES += [([100, 3000, 1, 777], [100, 3000, 1, 777], 8, 2, 128, True, None, BF16),
                     ([1, 1, 1], [5000, 300, 9000], 8, 2, 128, "lower_right", None, BF16)]


@pytest.mark.parametrize("case", VARLEN_CASES, ids=lambda c: f"q{c[0]}-k{c[1]}-{c[5]}-w{c[6]}")
def test_varlen_forward_and_gradients(case):
    lengths_q, lengths_k, h, hkv, d, causal, window, dtype = case
    assert step03.check_varlen_case(lengths_q, lengths_k, h, hkv, d, causal, window, dtype, grads=True)


def test_varlen_sequences_do_not_leak_into_each_other():
    lengths = [13, 21, 8]
    cu = _cu(lengths)
    q, k, v = (_packed(lengths, 2, 32, F16) for _ in range(3))
    before = step03.flash_attention_varlen(q, k, v, cu, cu, max(lengths), max(lengths), causal=True)
    k2, v2 = k.clone(), v.clone()
    k2[13:34] = torch.randn_like(k2[13:34])  # change the middle sequence only
    v2[13:34] = torch.randn_like(v2[13:34])
    after = step03.flash_attention_varlen(q, k2, v2, cu, cu, max(lengths), max(lengths), causal=True)
    assert torch.equal(before[:13], after[:13]) and torch.equal(before[34:], after[34:])
    assert not torch.equal(before[13:34], after[13:34])


def test_varlen_returns_lse_in_flash_attentions_layout():
    lengths = [6, 11]
    cu = _cu(lengths)
    q, k, v = (_packed(lengths, 3, 16, F32) for _ in range(3))
    o, lse = step03.flash_attention_varlen(q, k, v, cu, cu, 11, 11, return_lse=True)
    assert lse.shape == (3, 17) and lse.dtype == torch.float32
    for b in range(2):
        s = slice(int(cu[b]), int(cu[b + 1]))
        _, ref_lse = shared.reference_attention(*(t[s].transpose(0, 1)[None] for t in (q, k, v)), return_lse=True)
        assert (lse[:, s].double() - ref_lse[0]).abs().max().item() < 1e-5


def _varlen_args(**changes):
    lengths = [4, 6]
    args = dict(q=_packed(lengths, 2, 16, F16), k=_packed(lengths, 2, 16, F16), v=_packed(lengths, 2, 16, F16),
                cu_seqlens_q=_cu(lengths), cu_seqlens_k=_cu(lengths), max_seqlen_q=6, max_seqlen_k=6)
    args.update(changes)
    return args


@pytest.mark.parametrize("changes, error, message", [
    (dict(cu_seqlens_q=torch.tensor([1, 4, 10], dtype=torch.int32)), ValueError, "must start at 0"),
    (dict(cu_seqlens_q=torch.tensor([0, 7, 4, 10], dtype=torch.int32)), ValueError, "never decrease"),
    (dict(cu_seqlens_q=torch.tensor([0, 4, 10])), TypeError, "int32"),
    (dict(cu_seqlens_k=torch.tensor([0, 4, 9], dtype=torch.int32)), ValueError, "ends at 9"),
    (dict(max_seqlen_q=5), ValueError, "longer than max_seqlen"),
    (dict(max_seqlen_k=-1), TypeError, "non-negative int"),
    (dict(cu_seqlens_k=torch.tensor([0, 10], dtype=torch.int32), max_seqlen_k=10), ValueError,
     "describe 2 and 1 sequences"),
    (dict(q=torch.randn(10, 16)), ValueError, "3-D"),
    (dict(window=(-2, 0)), ValueError, "window sides"),
    (dict(causal="bottom_right"), ValueError, "not understood"),
])
def test_varlen_bad_inputs_raise_clear_errors(changes, error, message):
    args = _varlen_args()
    for key in ("cu_seqlens_q", "cu_seqlens_k"):
        if key in changes:
            changes[key] = changes[key].to(shared.DEVICE)
    args.update(changes)
    with pytest.raises(error, match=message):
        step03.flash_attention_varlen(**args)


def test_out_must_not_overlap_the_inputs():
    q, k, v = shared.make_qkv(1, 2, 8, 16, dtype=F16)
    with pytest.raises(ValueError, match="overlaps q"):
        flash_attention(q, k, v, out=q)
    buf = torch.randn(1, 2, 16, 16, dtype=F16, device=shared.DEVICE)
    k2, v2 = buf[:, :, :8], buf[:, :, 8:]  # k and v share one buffer
    with pytest.raises(ValueError, match="overlaps k"):
        flash_attention(q, k2, v2, out=buf[:, :, 4:12])
    out = torch.full_like(q, float("nan"))
    assert flash_attention(q, k, v, out=out) is out and torch.isfinite(out).all()


def test_fused_atomic_dq_has_no_nan_from_padded_keys():
    """A padded key (loaded as 0) used to get P = exp2(0 - lse), which overflows once the
    log-sum-exp is below about -88, and inf * 0 then poisoned every dQ row."""
    q = torch.full((1, 1, 40, 16), 8.0, device=shared.DEVICE)
    k = torch.full((1, 1, 40, 16), -1.0, device=shared.DEVICE) + 0.01 * torch.randn(1, 1, 40, 16,
                                                                                    device=shared.DEVICE)
    v = torch.randn(1, 1, 40, 16, device=shared.DEVICE)
    o, lse = flash_attention_forward(q, k, v, scale=1.0)
    assert lse.max().item() < -88  # the regime that overflowed
    do = torch.randn_like(o)
    fused = step03.flash_attention_backward(do, q, k, v, o, lse, scale=1.0, dq_atomic=True)
    separate = step03.flash_attention_backward(do, q, k, v, o, lse, scale=1.0)
    for a, b in zip(fused, separate):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_plan_cache_keeps_layouts_apart():
    """One plan per (shapes, strides, dtype, flags): alternating layouts and misaligned views
    must each get the right answer, never a stale plan's."""
    base = torch.randn(2 * 19 * 3 * 64 + 8, dtype=F16, device=shared.DEVICE)
    contiguous = shared.make_qkv(2, 3, 19, 64, dtype=F16)
    transposed = [torch.randn(2, 19, 3, 64, dtype=F16, device=shared.DEVICE).transpose(1, 2) for _ in range(3)]
    misaligned = [base[1:1 + 2 * 3 * 19 * 64].view(2, 3, 19, 64)] * 3  # data starts 2 bytes past alignment
    for _ in range(2):
        for q, k, v in (contiguous, transposed, misaligned):
            for causal in (False, True):
                assert shared.test_correctness(flash_attention, q, k, v, causal=causal).passed
    assert len(step03._PLANS) >= 3


def test_output_and_gradients_follow_the_input_layout():
    """(B, N, H, D) views in, (B, N, H, D) memory out, as SDPA does: the model's transpose back is free."""
    x = [torch.randn(2, 11, 3, 32, dtype=F16, device=shared.DEVICE, requires_grad=True) for _ in range(3)]
    q, k, v = (t.transpose(1, 2) for t in x)
    out = flash_attention(q, k, v, causal=True)
    assert out.transpose(1, 2).is_contiguous()
    out.float().sum().backward()
    assert all(t.grad.is_contiguous() for t in x)


@pytest.mark.skipif(not shared.HAS_GPU, reason="needs a 6 GB view: GPU only")
def test_backward_with_a_view_spanning_2_31_elements():
    """dO as a narrow view of a large buffer (as torch.cat's backward hands over): batch offsets
    past 2^31 elements need the kernels' 64-bit base offsets."""
    q, k, v = shared.make_qkv(3, 1, 128, 64, dtype=F16)
    big = torch.randn(3, 1, 128, 2**23, dtype=F16, device=shared.DEVICE)  # 3 * 2^30 elements
    do = big[..., :64]
    o, lse = flash_attention_forward(q, k, v, causal=True)
    got = step03.flash_attention_backward(do, q, k, v, o, lse, causal=True)
    want = step03.flash_attention_backward(do.contiguous(), q, k, v, o, lse, causal=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-3, rtol=1e-3)


@pytest.mark.skipif(not shared.HAS_GPU, reason="a KV cache of 2^31 elements: GPU only")
def test_kv_cache_of_2_31_elements_decodes():
    """batch 64, 8 K/V heads, 32k keys, head dim 128 is exactly 2^31 elements per tensor."""
    q = torch.randn(64, 32, 1, 128, dtype=BF16, device=shared.DEVICE)
    k = torch.randn(64, 8, 32768, 128, dtype=BF16, device=shared.DEVICE)
    v = torch.randn_like(k)
    out = flash_attention(q, k, v, causal="lower_right")
    for b in (0, 63):  # the last batch entry sits past 2^31 elements
        ref = shared.reference_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], causal="lower_right")
        assert (out[b:b + 1].double() - ref).abs().max().item() < 2e-2
    assert math.isfinite(out.float().sum().item())
