"""The helpers themselves: a checker that cannot fail would make every other test worthless."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import shared
from shared import benchmark_utils as bu
from shared import plotting


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_q,n_k,heads,kv_heads", [(7, 7, 2, 2), (5, 11, 4, 2), (11, 5, 3, 1), (1, 9, 2, 2)])
def test_reference_matches_sdpa_in_float64(causal, n_q, n_k, heads, kv_heads):
    q, k, v = shared.make_qkv(2, heads, n_q, 24, n_k=n_k, kv_heads=kv_heads, dtype=torch.float64, device="cpu")
    ref = shared.reference_attention(q, k, v, causal=causal)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=heads != kv_heads)
    torch.testing.assert_close(ref, sdpa, rtol=1e-10, atol=1e-12)


def test_reference_causal_is_top_left_aligned():
    q, k, v = shared.make_qkv(1, 1, 3, 8, n_k=6, dtype=torch.float64, device="cpu")
    out = shared.reference_attention(q, k, v, causal=True)
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0])  # query 0 sees key 0 only


def test_make_qkv_is_random_and_shaped():
    q, k, v = shared.make_qkv(2, 4, 5, 16, n_k=7, kv_heads=2, dtype=torch.float32, device="cpu")
    assert q.shape == (2, 4, 5, 16) and k.shape == v.shape == (2, 2, 7, 16)
    assert q.std() > 0.5 and not torch.equal(k, v)
    q2, _, _ = shared.make_qkv(2, 4, 5, 16, n_k=7, kv_heads=2, dtype=torch.float32, device="cpu")
    assert not torch.equal(q, q2)  # fresh inputs each call


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_correctness_passes_naive_torch(dtype):
    q, k, v = shared.make_qkv(1, 2, 33, 40, n_k=21, dtype=dtype, device="cpu")
    result = shared.test_correctness(shared.naive_torch, q, k, v, causal=True)
    assert result.passed and result["passed"], str(result)
    assert result.max_abs_error <= result.atol and result.rel_error < 1e-2


def _wrong_scale(q, k, v, causal=False, scale=None):
    # 3% off in fp16/fp32; bf16 keeps ~3 significant digits, so its "subtle" is 10%
    factor = 1.10 if q.dtype == torch.bfloat16 else 1.03
    return shared.naive_torch(q, k, v, causal=causal, scale=q.shape[-1] ** -0.5 * factor)


def _drops_last_key(q, k, v, causal=False, scale=None):
    return shared.naive_torch(q, k[:, :, :-1], v[:, :, :-1], causal=causal, scale=scale)


def _nan_row(q, k, v, causal=False, scale=None):
    out = shared.naive_torch(q, k, v, causal=causal, scale=scale)
    out[0, 0, -1, 0] = float("nan")
    return out


def _ignores_causal(q, k, v, causal=False, scale=None):
    return shared.naive_torch(q, k, v, causal=False, scale=scale)


@pytest.mark.parametrize("fn", [_wrong_scale, _drops_last_key, _nan_row, _ignores_causal])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("repeat", range(3))  # fresh random inputs each time: no lucky draw passes
def test_correctness_fails_subtly_wrong_functions(fn, dtype, repeat):
    # 12 keys: one dropped key or the scale error moves some outputs past the tolerance
    q, k, v = shared.make_qkv(1, 2, 12, 32, dtype=dtype, device="cpu")
    result = shared.test_correctness(fn, q, k, v, causal=True)
    assert not result.passed
    assert result.mismatches and "out of tolerance" in result.message
    assert "FAIL" in str(result)


def test_correctness_reports_nan_count():
    q, k, v = shared.make_qkv(1, 1, 4, 16, dtype=torch.float32, device="cpu")
    result = shared.test_correctness(_nan_row, q, k, v)
    assert not result.passed and "1 NaN/Inf" in result.message and math.isinf(result.rel_error)


def test_correctness_catches_wrong_shape_and_dtype():
    q, k, v = shared.make_qkv(1, 2, 8, 16, dtype=torch.float16, device="cpu")
    wrong_shape = shared.test_correctness(lambda q, k, v: shared.naive_torch(q, k, v)[:, :, :-1], q, k, v)
    assert not wrong_shape.passed and "shape" in wrong_shape.message
    wrong_dtype = shared.test_correctness(lambda q, k, v: shared.naive_torch(q, k, v).float(), q, k, v)
    assert not wrong_dtype.passed and "dtype" in wrong_dtype.message
    not_tensor = shared.test_correctness(lambda q, k, v: None, q, k, v)
    assert not not_tensor.passed


def test_correctness_poisons_out_buffer():
    def leaves_last_row(q, k, v, out=None):
        out[:, :, :-1] = shared.naive_torch(q, k, v)[:, :, :-1]
        return out

    q, k, v = shared.make_qkv(1, 2, 9, 16, dtype=torch.float16, device="cpu")
    result = shared.test_correctness(leaves_last_row, q, k, v)
    assert not result.passed and "NaN" in result.message


def test_tolerance_is_dtype_aware():
    assert shared.tolerance(torch.bfloat16)[0] > shared.tolerance(torch.float16)[0]
    with pytest.raises(TypeError, match="no tolerance"):
        shared.tolerance(torch.int32)


def test_flop_and_byte_models():
    assert shared.attention_flops(2, 3, 128, 128, 64) == 4 * 2 * 3 * 128 * 128 * 64
    assert shared.attention_flops(1, 1, 128, 128, 64, causal=True) == 4 * 64 * 128 * 129 / 2
    assert shared.attention_flops(1, 1, 4, 4, 8, mode="bwd") == 2.5 * 4 * 16 * 8
    assert bu.visible_pairs(6, 4, True) == 1 + 2 + 3 + 4 + 4 + 4  # rows past Nk see all keys
    assert bu.visible_pairs(2, 5, True) == 1 + 2
    # forward: read q, k, v and write o once, in bytes of the element size
    assert shared.attention_min_bytes(1, 2, 1, 10, 20, 8, 2) == 2 * (2 * 2 * 10 * 8 + 2 * 20 * 8)


def _fixed_timer(call):
    call()
    return 2.0  # ms


def test_benchmark_rows_carry_fields_and_flops(capsys):
    rows = shared.quick_benchmark({"naive torch": shared.naive_torch}, shapes=[(1, 2, 16, 8)],
                                  causal=(False, True), dtype=torch.float32, timer=_fixed_timer)
    assert len(rows) == 2 and "naive torch" in capsys.readouterr().out
    for row in rows:
        assert {"impl", "batch", "heads", "n_q", "n_k", "head_dim", "causal", "dtype", "mode", "ms",
                "tflops", "gbps", "peak_mem_gib", "status"} <= row.keys()
        flops = shared.attention_flops(1, 2, 16, 16, 8, causal=row["causal"])
        assert row["status"] == "ok" and row["tflops"] == pytest.approx(flops / 2e-3 / 1e12)


def test_benchmark_records_oom_and_moves_on():
    def runs_out(q, k, v, causal=False):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")

    rows = shared.quick_benchmark({"oom": runs_out, "ok": shared.naive_torch}, shapes=[(1, 1, 8, 8)],
                                  dtype=torch.float32, timer=_fixed_timer, verbose=False)
    assert [r["status"] for r in rows] == ["oom", "ok"]


def test_benchmark_backward_mode_runs():
    rows = shared.quick_benchmark({"naive torch": shared.naive_torch}, shapes=[(1, 1, 8, 8)],
                                  dtype=torch.float32, modes=("bwd", "fwd+bwd"), timer=_fixed_timer,
                                  verbose=False)
    assert [r["mode"] for r in rows] == ["bwd", "fwd+bwd"] and all(r["status"] == "ok" for r in rows)
    assert rows[0]["tflops"] == pytest.approx(2.5 * 4 * 64 * 8 / 2e-3 / 1e12)


@pytest.mark.skipif(shared.HAS_GPU, reason="the interpreter path only")
def test_benchmark_skips_timing_without_gpu():
    row = shared.measure(shared.naive_torch, (1, 1, 8, 8))
    assert row["status"].startswith("skipped") and row["ms"] is None


def _fake_rows():
    rows = []
    for impl, speed in (("naive torch", 1.0), ("03 flash", 4.0)):
        for n in (256, 512, 1024):
            ms = (n / 256) ** 2 / speed
            rows.append({"impl": impl, "n_q": n, "n_k": n, "ms": ms, "tflops": speed * 10,
                         "peak_mem_gib": n / 1024 * speed, "status": "ok"})
    rows.append({"impl": "naive torch", "n_q": 2048, "n_k": 2048, "ms": None, "tflops": None,
                 "peak_mem_gib": None, "status": "oom"})
    return rows


def test_results_roundtrip_and_tables(tmp_path):
    rows = _fake_rows()
    path = shared.save_results(tmp_path / "r.json", rows, step="test")
    loaded = shared.load_results(path)
    assert loaded["rows"] == json.loads(json.dumps(rows))
    assert {"gpu", "torch", "triton", "date"} <= loaded["env"].keys() and loaded["meta"]["step"] == "test"
    table = shared.pivot_table(rows, ["naive torch", "03 flash"], ratio_of="03 flash", ratio_to=["naive torch"])
    lines = table.splitlines()
    assert lines[0] == "| N | naive torch | 03 flash | 03 flash vs naive torch |"
    assert "| 256 | 10.0 | 40.0 | 4.00x |" in lines and "| 2048 | OOM | – | – |" in lines
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\nend\n")
    shared.write_between_markers(readme, "t", table)
    text = readme.read_text()
    assert "old" not in text and "4.00x" in text and text.startswith("intro") and text.endswith("end\n")
    with pytest.raises(ValueError, match="markers"):
        shared.write_between_markers(readme, "missing", table)


def test_plots_are_written(tmp_path):
    paths = plotting.plot_all(_fake_rows(), tmp_path, "test", "fake data")
    assert len(paths) == 4
    for p in paths:
        assert p.exists() and p.read_bytes()[:4] == b"\x89PNG"


def test_load_step_rejects_unknown_step():
    with pytest.raises(ValueError, match="unknown step"):
        shared.load_step("99")


def test_correctness_poisons_memory_for_functions_without_out():
    def forgets_last_row(q, k, v):
        out = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
        out[:, :, :-1] = shared.naive_torch(q, k, v)[:, :, :-1]
        return out

    q, k, v = shared.make_qkv(1, 2, 9, 16, dtype=torch.float16)
    assert not shared.test_correctness(forgets_last_row, q, k, v).passed


def test_validation_refuses_tensors_past_32_bit_offsets():
    # meta tensors have shapes and strides but no memory: 2^31 elements cost nothing here
    small = torch.empty(1, 1, 4, 16, dtype=torch.float16, device="meta")
    huge = torch.empty(1, 1, 2**27, 16, dtype=torch.float16, device="meta")
    with pytest.raises(ValueError, match="32-bit offsets"):
        shared.check_attention_inputs(huge, small, small)
    with pytest.raises(ValueError, match="32-bit offsets"):
        shared.check_attention_inputs(small, huge, huge)


# ---------------------------------------------------------------- misuse: one answer in every step

@pytest.mark.parametrize("causal,lower_right,expected", [
    (False, False, None), (True, False, "top_left"), ("top_left", False, "top_left"),
    (np.bool_(True), False, "top_left"), (np.bool_(False), False, None),
    ("lower_right", True, "lower_right"), (True, True, "top_left"), (False, True, None),
])
def test_check_causal_normalises_to_an_alignment(causal, lower_right, expected):
    assert shared.check_causal(causal, lower_right=lower_right) == expected


@pytest.mark.parametrize("causal,lower_right,error,match", [
    ("lower_right", False, ValueError, "only step 03's flash_attention"),
    ("no", False, ValueError, r"accepted: True, False, 'top_left'$"),
    ("no", True, ValueError, "accepted: True, False, 'top_left', 'lower_right'"),
    ("bottom_right", True, ValueError, "not understood"),
    ("", False, ValueError, "not understood"),
    (1, False, TypeError, "got int"),
    (None, True, TypeError, "got NoneType"),
    (1.0, False, TypeError, "got float"),
])
def test_check_causal_refuses_everything_else(causal, lower_right, error, match):
    with pytest.raises(error, match=match):
        shared.check_causal(causal, lower_right=lower_right)


def test_reference_alignments_and_windows():
    q, k, v = shared.make_qkv(1, 1, 4, 8, n_k=6, dtype=torch.float32, device="cpu")
    torch.testing.assert_close(shared.reference_attention(q, k, v, causal="top_left"),
                               shared.reference_attention(q, k, v, causal=True))
    # lower-right: query i sees keys j <= i + Nk - Nq, the last query every key
    visible = torch.ones(4, 6, dtype=torch.bool).tril(diagonal=2)
    assert torch.equal(shared.test_utils.visibility_mask(4, 6, "lower_right"), visible)
    assert torch.equal(shared.test_utils.visibility_mask(4, 6, False, (1, 0)),
                       torch.ones(4, 6, dtype=torch.bool).tril().triu(diagonal=-1))
    scores = (q.double() @ k.double().transpose(-1, -2)) / 8 ** 0.5
    want = torch.softmax(scores.masked_fill(~visible, float("-inf")), -1) @ v.double()
    torch.testing.assert_close(shared.reference_attention(q, k, v, causal="lower_right"), want)
    # rows that see no key: 0, and lse -inf (SDPA returns zeros there)
    out, lse = shared.reference_attention(q, k[:, :, :2], v[:, :, :2], causal="lower_right", return_lse=True)
    assert torch.equal(out[0, 0, :2], torch.zeros(2, 8, dtype=torch.float64))
    assert torch.isneginf(lse[0, 0, :2]).all() and torch.isfinite(lse[0, 0, 2:]).all()
    with pytest.raises(ValueError, match="not understood"):
        shared.reference_attention(q, k, v, causal="bottom")


def test_check_attention_inputs_refuses_grad_unless_differentiable():
    q, k, v = shared.make_qkv(1, 2, 4, 16, requires_grad=True)
    with pytest.raises(ValueError, match="no backward pass.*flash_attention.*torch.no_grad"):
        shared.check_attention_inputs(q, k, v)
    assert shared.check_attention_inputs(q, k, v, differentiable=True) == pytest.approx(0.25)
    with torch.no_grad():
        shared.check_attention_inputs(q, k, v)
    shared.check_attention_inputs(q.detach(), k.detach(), v.detach())


def test_check_attention_inputs_lets_empty_inputs_through():
    q, k, v = shared.make_qkv(1, 2, 0, 16, n_k=5)
    assert shared.check_attention_inputs(q, k, v) == pytest.approx(0.25)
    assert shared.is_empty_attention(q, k)
    q, k, v = shared.make_qkv(2, 0, 3, 16, kv_heads=0)
    shared.check_attention_inputs(q, k, v, allow_gqa=True)  # no query heads need no k/v heads
    q, k, v = shared.make_qkv(1, 2, 3, 16, n_k=1)
    assert not shared.is_empty_attention(q, k)
    with pytest.raises(ValueError, match="multiple of k/v's 0 heads"):
        shared.check_attention_inputs(q, k[:, :0], v[:, :0], allow_gqa=True)


@pytest.mark.parametrize("q_shape,kv_shape", [((1, 2, 0, 16), (1, 2, 5, 16)), ((1, 2, 3, 16), (1, 1, 0, 16)),
                                              ((0, 2, 3, 16), (0, 2, 3, 16)), ((1, 0, 3, 16), (1, 0, 3, 16))])
def test_empty_attention_result_is_what_sdpa_returns(q_shape, kv_shape):
    q = torch.randn(q_shape)
    k, v = torch.randn(kv_shape), torch.randn(kv_shape)
    expected = F.scaled_dot_product_attention(q, k, v, enable_gqa=q.shape[1] != k.shape[1])
    assert shared.is_empty_attention(q, k)
    torch.testing.assert_close(shared.empty_attention_result(q, v), expected, atol=0, rtol=0)
    out = torch.full(expected.shape, float("nan"))
    assert shared.empty_attention_result(q, v, out) is out
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"dtype": torch.int32}, TypeError, "floating type"),
    ({"dtype": torch.bool}, TypeError, "floating type"),
    ({"dtype": "float16"}, TypeError, "floating type"),
    ({"heads": 4, "kv_heads": 3}, ValueError, r"heads \(4\) must be a multiple of kv_heads \(3\)"),
    ({"heads": 4, "kv_heads": 0}, ValueError, "multiple of kv_heads"),
    ({"n_q": -1}, ValueError, "n_q must be >= 0"),
    ({"head_dim": -16}, ValueError, "head_dim must be >= 0"),
    ({"batch": 2.0}, TypeError, "batch must be an int"),
    ({"n_k": True}, TypeError, "n_k must be an int"),
    ({"layout": "strided"}, ValueError, "unknown layout"),
    ({"layout": ("contiguous", "transposed")}, ValueError, "triple"),
])
def test_make_qkv_refuses_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        shared.make_qkv(**{"batch": 1, "heads": 2, "n_q": 3, "head_dim": 16, "device": "cpu", **kwargs})


def test_make_qkv_allows_empty_and_float64():
    q, k, v = shared.make_qkv(0, 2, 3, 16, n_k=0, dtype=torch.float64, device="cpu")
    assert q.shape == (0, 2, 3, 16) and k.shape == v.shape == (0, 2, 0, 16) and q.dtype == torch.float64


def test_make_qkv_layouts_are_views_with_the_promised_strides():
    shape = (2, 3, 5, 40)
    for layout in shared.LAYOUTS:
        q, k, v = shared.make_qkv(2, 3, 5, 40, n_k=7, layout=layout, seed=0, device="cpu")
        assert q.shape == shape and k.shape == v.shape == (2, 3, 7, 40) and q.dtype == torch.float16
        assert (q.abs() > 0).float().mean() > 0.99 and not torch.equal(k, v)  # random normal, never zeros
        assert q.is_contiguous() == (layout == "contiguous"), layout
    q, _, _ = shared.make_qkv(*shape, layout="transposed", device="cpu")
    assert q.stride() == (5 * 3 * 40, 40, 3 * 40, 1)
    q, _, _ = shared.make_qkv(*shape, layout="sliced", device="cpu")
    assert q.stride()[2] == 45 and q.storage_offset() > 0
    _, k, _ = shared.make_qkv(*shape, layout="expanded_batch", device="cpu")
    assert k.stride()[0] == 0 and torch.equal(k[0], k[1])
    _, k, _ = shared.make_qkv(*shape, layout="expanded_heads", device="cpu")
    assert k.stride()[1] == 0 and not torch.equal(k[0], k[1])
    q, k, v = shared.make_qkv(*shape, layout=("transposed", "sliced", "expanded_heads"), device="cpu")
    assert q.stride()[1] == 40 and k.stride()[2] == 45 and v.stride()[1] == 0


def test_make_qkv_layouts_keep_strides_with_requires_grad():
    q, k, v = shared.make_qkv(2, 2, 5, 16, layout="expanded_batch", requires_grad=True, device="cpu")
    assert q.is_leaf and q.requires_grad and q.stride()[0] == 0
    q.sum().backward()
    assert q.grad is not None


@pytest.mark.parametrize("q_shape,kv_shape", [((1, 2, 0, 16), (1, 2, 5, 16)), ((0, 2, 3, 16), (0, 2, 3, 16))])
def test_correctness_of_an_empty_output_passes_with_zero_error(q_shape, kv_shape):
    q = torch.randn(q_shape, dtype=torch.float16)
    k, v = torch.randn(kv_shape, dtype=torch.float16), torch.randn(kv_shape, dtype=torch.float16)
    result = shared.test_correctness(shared.torch_sdpa, q, k, v)
    assert result.passed and result.max_abs_error == 0 and result.rel_error == 0, str(result)
    assert "empty output (nothing to compare)" in str(result) and "inf" not in str(result)
    wrong_shape = shared.test_correctness(lambda q, k, v: torch.empty(1, 2, 0, 15, dtype=q.dtype), q, k, v)
    assert not wrong_shape.passed and "shape" in wrong_shape.message


def test_compare_with_reference_is_the_rule_test_correctness_applies():
    ref = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    atol, rtol = shared.tolerance(torch.float16)
    just_inside = (ref + (atol + rtol * ref.abs()) * 0.9).half()
    assert shared.compare_with_reference(just_inside, ref, torch.float16).passed
    outside = ref.clone().half()
    outside[0, 1] = -2.1
    result = shared.compare_with_reference(outside, ref, torch.float16)
    assert not result.passed and result.mismatches[0][0] == (0, 1)
    assert not shared.compare_with_reference(ref.float(), ref, torch.float16).passed  # wrong dtype


def _never_called(q, k, v, causal=False):
    raise AssertionError("quick_benchmark ran a function before checking its arguments")


@pytest.mark.parametrize("kwargs,error,match", [
    ({"fns": _never_called}, TypeError, "fns must be a non-empty dict"),
    ({"fns": [_never_called]}, TypeError, "fns must be a non-empty dict"),
    ({"fns": {}}, TypeError, "fns must be a non-empty dict"),
    ({"fns": {"ok": _never_called, "bad": "naive torch"}}, TypeError, "'bad' -> str"),
    ({"fns": {1: _never_called}}, TypeError, "str names"),
    ({"shapes": (4, 32, 1024, 64)}, ValueError, r"one shape; pass a list: shapes=\[\(4, 32, 1024, 64\)\]"),
    ({"shapes": [(4, 32, 1024)]}, ValueError, "must be a .batch, heads, seq_len, head_dim. tuple"),
    ({"shapes": [(4, 32, 1024, 64), "4x32x1024x64"]}, ValueError, "must be a"),
    ({"shapes": [(4, 0, 1024, 64)]}, ValueError, "heads must be a positive int"),
    ({"shapes": [(4, 32, 1024.0, 64)]}, ValueError, "n_q must be a positive int"),
    ({"shapes": [{"batch": 1, "heads": 2, "n": 8, "head_dim": 16}]}, ValueError,
     r"missing \['n_q'\], unknown \['n'\]"),
    ({"shapes": [{"batch": 1, "heads": 4, "kv_heads": 3, "n_q": 8, "head_dim": 16}]}, ValueError,
     "multiple of kv_heads"),
    ({"shapes": []}, ValueError, "non-empty list"),
    ({"shapes": 1024}, ValueError, "non-empty list"),
    ({"modes": ("fwd", "backward")}, ValueError, "unknown mode 'backward'"),
    ({"modes": None}, TypeError, "modes must be"),
    ({"causal": "yes"}, TypeError, "causal must be a bool"),
    ({"dtype": torch.int8}, TypeError, "dtype must be"),
])
def test_quick_benchmark_refuses_malformed_arguments_before_running(kwargs, error, match):
    args = {"fns": {"never": _never_called}, "shapes": [(1, 1, 8, 16)], **kwargs}
    with pytest.raises(error, match=match):
        shared.quick_benchmark(**args, timer=_fixed_timer, verbose=False)


def test_quick_benchmark_accepts_shape_dicts_and_lists():
    shapes = [[1, 2, 8, 16], {"batch": 1, "heads": 4, "kv_heads": 2, "n_q": 8, "n_k": 5, "head_dim": 16}]
    rows = shared.quick_benchmark({"naive torch": shared.naive_torch}, shapes=shapes, dtype=torch.float32,
                                  timer=_fixed_timer, verbose=False)
    assert [(r["kv_heads"], r["n_k"], r["status"]) for r in rows] == [(2, 8, "ok"), (2, 5, "ok")]
