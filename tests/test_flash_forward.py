"""Step 03's forward kernel against the float64 reference, on shapes chosen to break it.

On CPU (CI) the kernel runs in Triton's interpreter with small tiles, so the shapes stay
small; with a GPU the same tests add long, awkward and large shapes and the autotuned path.
fp32 inputs are multiplied in true fp32 (input_precision="ieee"), so they are held to the
shared fp32 tolerance.
"""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

import shared

_PATH = Path(__file__).resolve().parents[1] / "03_advanced_optimizations" / "flash_attention.py"
if hasattr(shared, "load_step"):
    step03 = shared.load_step("03")
else:  # before shared.load_step existed
    _spec = importlib.util.spec_from_file_location("step03_flash_attention", _PATH)
    step03 = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(step03)
flash_attention = step03.flash_attention
flash_attention_forward = step03.flash_attention_forward

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32

# (batch, heads, kv_heads, n_q, n_k, head_dim, causal, dtype): lengths 1, 17, 97, 128 on
# one side at a time, every head dim of the brief, GQA and MQA, both causal settings.
CASES = [
    (1, 1, 1, 1, 1, 16, False, F16),
    (1, 2, 2, 1, 97, 64, True, BF16),  # decoding: causal row 0 sees key 0 only
    (1, 2, 2, 1, 97, 128, False, F16),  # decoding: one query against many keys
    (2, 1, 1, 17, 17, 40, True, F16),
    (1, 2, 2, 97, 5, 80, True, BF16),  # Nq > Nk causal: late rows see every key
    (1, 1, 1, 5, 97, 96, True, F32),  # Nq < Nk causal: top-left, keys past row i hidden
    (1, 1, 1, 9, 33, 111, False, F16),  # 111 pads to 128
    (1, 1, 1, 128, 3, 128, False, F32),
    (1, 1, 1, 3, 128, 64, True, BF16),
    (1, 1, 1, 6, 20, 256, True, F16),
    (1, 4, 2, 17, 24, 64, True, F16),  # GQA
    (2, 4, 1, 11, 19, 32, False, BF16),  # MQA
    (1, 3, 1, 20, 20, 80, True, F32),  # MQA, fp32
]
if shared.HAS_GPU:
    CASES += [
        (2, 3, 3, 1025, 1025, 64, True, F16),
        (2, 3, 3, 1025, 1025, 128, False, BF16),
        (1, 8, 2, 333, 1025, 80, True, F16),
        (2, 4, 4, 2048, 2048, 128, True, BF16),  # autotuned path (Nq * Nk >= 2^20)
        (2, 4, 1, 1, 4097, 128, False, F16),
        (1, 2, 2, 1000, 1000, 256, True, F16),
        (1, 2, 2, 777, 513, 111, False, BF16),
        (1, 2, 2, 300, 300, 96, True, F32),
    ]


def _case_id(case):
    b, h, hkv, nq, nk, d, causal, dtype = case
    return f"B{b}-H{h}-Hkv{hkv}-{nq}x{nk}-D{d}-{'causal' if causal else 'full'}-{str(dtype)[6:]}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_reference(case):
    b, h, hkv, nq, nk, d, causal, dtype = case
    q, k, v = shared.make_qkv(b, h, nq, d, n_k=nk, kv_heads=hkv, dtype=dtype)
    result = shared.test_correctness(flash_attention, q, k, v, causal=causal)
    assert result.passed, str(result)


@pytest.mark.parametrize("causal", [False, True])
def test_lse_matches_float64_logsumexp(causal):
    n_q, n_k, d = (19, 23, 40) if shared.INTERPRETER else (600, 999, 40)
    q, k, v = shared.make_qkv(2, 4, n_q, d, n_k=n_k, kv_heads=2, dtype=F16)
    scale = 0.2
    out, lse = flash_attention_forward(q, k, v, causal=causal, scale=scale)
    assert lse.dtype == torch.float32 and lse.shape == (2, 4, n_q) and lse.is_contiguous()
    kk = k.double().repeat_interleave(2, dim=1)
    scores = (q.double() @ kk.transpose(-1, -2)) * scale
    if causal:
        scores = scores.masked_fill(~shared.test_utils.causal_mask(n_q, n_k, q.device), float("-inf"))
    expected = torch.logsumexp(scores, dim=-1)
    assert (lse.double() - expected).abs().max().item() < 1e-3
    ref = shared.reference_attention(q, k, v, causal=causal, scale=scale)
    assert (out.double() - ref).abs().max().item() < 3e-3


@pytest.mark.parametrize("scale", [0.05, -0.3, 0.0])
def test_custom_negative_and_zero_scale(scale):
    q, k, v = shared.make_qkv(1, 2, 13, 64, n_k=29, dtype=F16)
    result = shared.test_correctness(flash_attention, q, k, v, causal=True, scale=scale)
    assert result.passed, str(result)


def test_non_contiguous_inputs_through_strides():
    # (B, N, H, D) as models produce it, viewed as (B, H, N, D): strides, not copies
    n_q, n_k = (21, 37) if shared.INTERPRETER else (1030, 777)
    q = torch.randn(2, n_q, 4, 64, dtype=F16, device=shared.DEVICE).transpose(1, 2)
    k, v = (torch.randn(2, n_k, 2, 64, dtype=F16, device=shared.DEVICE).transpose(1, 2) for _ in range(2))
    assert not q.is_contiguous() and not k.is_contiguous()
    result = shared.test_correctness(flash_attention, q, k, v, causal=True)
    assert result.passed, str(result)
    # a head-dim slice of a wider tensor: row stride != D
    wide = torch.randn(1, 2, 30, 3 * 40, dtype=BF16, device=shared.DEVICE)
    q, k, v = wide[..., :40], wide[..., 40:80], wide[..., 80:]
    result = shared.test_correctness(flash_attention, q, k, v, causal=False)
    assert result.passed, str(result)


def test_poisoned_out_is_fully_written():
    q, k, v = shared.make_qkv(2, 3, 19, 40, n_k=7, dtype=F16)
    out = torch.full_like(q, float("nan"))
    assert flash_attention(q, k, v, causal=True, out=out) is out
    assert torch.isfinite(out).all()


@pytest.mark.skipif(not shared.HAS_GPU, reason="the tuned configs are GPU-only")
@pytest.mark.parametrize("config", [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 8, 4),
                                    (16, 64, 4, 3), (16, 128, 4, 3), (64, 64, 4, 2)])
def test_every_candidate_config_on_gpu(config):
    q, k, v = shared.make_qkv(2, 4, 1000, 128, n_k=1100, kv_heads=2, dtype=F16)

    def fn(q, k, v, causal=False, scale=None):
        return flash_attention_forward(q, k, v, causal=causal, scale=scale, config=config)[0]
    for causal in (False, True):
        result = shared.test_correctness(fn, q, k, v, causal=causal)
        assert result.passed, str(result)


def _qkv(q=(1, 2, 8, 16), k=(1, 2, 8, 16), v=(1, 2, 8, 16), dtype=F16):
    return [torch.randn(s, device=shared.DEVICE).to(dtype) for s in (q, k, v)]


@pytest.mark.parametrize("args, kwargs, error, message", [
    (_qkv(q=(2, 8, 16)), {}, ValueError, "must be 4-D"),
    (_qkv(q=(1, 2, 8, 32)), {}, ValueError, "head dims differ"),
    (_qkv(k=(1, 2, 9, 16)), {}, ValueError, "k and v must have the same shape"),
    (_qkv(k=(2, 2, 8, 16), v=(2, 2, 8, 16)), {}, ValueError, "batch sizes differ"),
    (_qkv(q=(1, 3, 8, 16)), {}, ValueError, "multiple of"),
    (_qkv(q=(1, 2, 8, 8), k=(1, 2, 8, 8), v=(1, 2, 8, 8)), {}, ValueError, "head dim 8 not supported"),
    (_qkv(q=(1, 2, 8, 512), k=(1, 2, 8, 512), v=(1, 2, 8, 512)), {}, ValueError,
     "head dim 512 not supported"),
    (_qkv(dtype=torch.float64), {}, TypeError, "supported: float16"),
    (_qkv(), {"scale": float("nan")}, ValueError, "scale must be finite"),
    (_qkv(), {"scale": "big"}, TypeError, "scale must be a real number"),
    (_qkv(), {"causal": "yes"}, ValueError, "causal='yes' is not understood"),
    (_qkv(), {"causal": 1}, TypeError, "causal must be a bool"),
    (_qkv(), {"window": (3, -2)}, ValueError, "window sides must be >= -1"),
    (_qkv(), {"window": 5}, TypeError, "window must be a pair of ints"),
    (_qkv(), {"window": (2.0, 1)}, TypeError, "window must be a pair of ints"),
])
def test_bad_inputs_raise_clear_errors(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        flash_attention(*args, **kwargs)


@pytest.mark.parametrize("q_shape, k_shape", [((1, 2, 0, 16), (1, 2, 8, 16)), ((0, 2, 5, 16), (0, 2, 8, 16)),
                                              ((1, 2, 5, 16), (1, 2, 0, 16))])
def test_empty_inputs_follow_sdpa(q_shape, k_shape):
    """No query rows: an empty result; no keys: zeros (a weighted sum over nothing), as SDPA."""
    q, k, v = _qkv(q=q_shape, k=k_shape, v=k_shape)
    out = flash_attention(q, k, v, causal=True)
    assert out.shape == q.shape and not out.any()
    leaves = [t.requires_grad_(True) for t in (q, k, v)]
    grads = torch.autograd.grad(flash_attention(*leaves).float().sum(), leaves, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)


def test_mixed_dtypes_and_integer_tensors_raise():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="share one dtype"):
        flash_attention(q, k.to(BF16), v)
    with pytest.raises(TypeError, match="dtype torch.int32"):
        flash_attention(q.to(torch.int32), k, v)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        flash_attention(q.tolist(), k, v)
    with pytest.raises(ValueError, match="out must be"):
        flash_attention(q, k, v, out=torch.empty(1, 2, 8, 15, dtype=F16, device=shared.DEVICE))


@pytest.mark.skipif(shared.HAS_GPU, reason="only the CPU interpreter refuses CUDA tensors")
def test_wrong_device_raises():
    if not torch.cuda.is_available():
        q, k, v = _qkv()
        meta = [t.to("meta") for t in (q, k, v)]
        with pytest.raises(ValueError, match="CPU tensors"):
            flash_attention(*meta)


def test_math_helper_constants():
    assert math.isclose(step03.LOG2E.value * step03.LN2.value, 1.0, rel_tol=1e-15)


def test_too_many_batch_heads_raises():
    q = torch.empty(1, 1, 1, 16, dtype=F16, device=shared.DEVICE).expand(300, 300, 1, 16)
    with pytest.raises(ValueError, match="exceeds 65535"):
        flash_attention(q, q, q)
