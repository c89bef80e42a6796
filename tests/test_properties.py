"""Property tests: every step against the float64 reference, on inputs Hypothesis draws.

Batch, heads, lengths 1 to a few hundred, head dims 16 to 256 (odd ones too),
fp16/bf16/fp32, causal or not, scales (negative and 0 too) and memory layouts
(transposed, sliced, stride-0 expanded views): each draw must pass
``shared.test_correctness`` under the series' tolerance rule. The misuse rules
(causal flags, empty inputs) are drawn too.

Two Hypothesis profiles, picked by HYPOTHESIS_PROFILE (default "gpu" with a GPU, else "ci"):
  ci   derandomized (the same examples on every run), few examples and small sizes,
       because the interpreter costs milliseconds per program and per loop iteration;
  gpu  random examples, many of them, lengths up to 1024:
       HYPOTHESIS_PROFILE=gpu python -m pytest tests/test_properties.py
A failure prints the drawn AttentionCase; its ``tensors()`` rebuilds the inputs.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shared
from attention_strategies import attention_inputs  # tests/attention_strategies.py

settings.register_profile("ci", max_examples=16, derandomize=True, deadline=None, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("gpu", max_examples=300, deadline=None, database=None, print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "gpu" if shared.HAS_GPU else "ci")
SETTINGS = settings.get_profile(PROFILE)

# The steps under test, with the strategy's arguments per profile. In the interpreter each
# program (one query row here) costs ~10 ms and each loop iteration ~5 ms: one per key in
# step 01, one per block of 8 to 128 keys in step 02. The CI caps on rows (B*H*Nq) and pairs
# (B*H*Nq*Nk) keep the whole file well under a minute; lengths still reach 96 and 300.
STEP03_CAUSAL = (False, True, "top_left", "lower_right")
STEPS = {
    "01": {"fn": shared.load_step("01").basic_attention,
           "ci": dict(max_rows=24, max_pairs=96), "gpu": dict(max_batch=3, max_heads=6, max_len=1024)},
    "02": {"fn": shared.load_step("02").vectorized_attention,
           "ci": dict(max_rows=48, max_pairs=1536), "gpu": dict(max_batch=3, max_heads=6, max_len=1024)},
    "03": {"fn": shared.load_step("03").flash_attention,
           "ci": dict(gqa=True, max_rows=96, max_pairs=4096, causal_values=STEP03_CAUSAL),
           "gpu": dict(gqa=True, max_batch=3, max_heads=8, max_len=1024, causal_values=STEP03_CAUSAL)},
}


@pytest.mark.parametrize("step", STEPS)
@settings(SETTINGS)
@given(data=st.data())
def test_matches_float64_reference(step, data):
    case = data.draw(attention_inputs(**STEPS[step][PROFILE]), label="case")
    q, k, v = case.tensors()
    result = shared.test_correctness(STEPS[step]["fn"], q, k, v, causal=case.causal, scale=case.scale)
    assert result.passed, f"{case}\n{result}"


@pytest.mark.parametrize("step", STEPS)
@settings(SETTINGS)
@given(causal=st.text(max_size=12) | st.integers() | st.floats() | st.none() | st.just(b"top_left"))
def test_causal_must_be_a_bool_or_an_alignment(step, causal):
    q, k, v = shared.make_qkv(1, 1, 2, 16)
    if causal == "top_left":
        return
    with pytest.raises(ValueError if isinstance(causal, str) else TypeError, match="causal"):
        STEPS[step]["fn"](q, k, v, causal=causal)


@pytest.mark.parametrize("step", STEPS)
@settings(SETTINGS)
@given(sizes=st.lists(st.integers(0, 3), min_size=4, max_size=4).filter(lambda s: 0 in s),
       head_dim=st.integers(16, 64), causal=st.booleans())
def test_empty_inputs_give_what_sdpa_gives(step, sizes, head_dim, causal):
    batch, heads, n_q, n_k = sizes
    q, k, v = shared.make_qkv(batch, heads, n_q, head_dim, n_k=n_k, dtype=torch.float32)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = STEPS[step]["fn"](q, k, v, causal=causal)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


@settings(SETTINGS, max_examples=8 if PROFILE == "ci" else 100)
@given(data=st.data())
def test_step03_gradients_match_float64(data):
    """Step 03's gradients, with a drawn sliding window too, under the series' gradient rule."""
    limits = dict(max_rows=48, max_pairs=1536) if PROFILE == "ci" else dict(max_len=512)
    case = data.draw(attention_inputs(gqa=True, causal_values=STEP03_CAUSAL, **limits), label="case")
    window = data.draw(st.none() | st.tuples(st.integers(-1, 40), st.integers(-1, 20)), label="window")
    q, k, v = case.tensors()
    errors = shared.load_step("03").gradient_errors(q, k, v, causal=case.causal, scale=case.scale, window=window)
    for name, e in zip(("dq", "dk", "dv"), errors):
        assert e["ok"] or (case.dtype == torch.float32 and e["ours"] < 1e-4), (name, e, case, window)
