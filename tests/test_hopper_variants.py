"""The Hopper experiments' variants (03_advanced_optimizations/flash_attention_tma.py) against the
float64 reference, and benchmarks/hopper_experiments.py's no-GPU behaviour.

In the interpreter the TMA forward's tensor descriptors become plain block loads and stores, and
`warp_specialize` does nothing, so these tests check the arithmetic and the indexing (flattened
rows, ragged last tiles, GQA), not TMA itself: the GPU script checks that before it times anything.
"""
import importlib.util

import pytest
import torch

import shared

tma = shared.load_step("03", "flash_attention_tma.py")
step03 = shared.load_step("03")
F16, BF16 = torch.float16, torch.bfloat16


@pytest.mark.parametrize("case", [
    (1, 2, 1, 29, 29, 64, True, None, F16),  # GQA, causal, a ragged last tile
    (1, 2, 2, 23, 41, 32, "lower_right", (7, -1), BF16),  # KV-cache alignment and a window
    (2, 2, 2, 1, 1, 80, False, None, F16),  # one row, a head dim that is not a power of two
], ids=str)
def test_fused_backward_matches_float64(case):
    b, h, hkv, n_q, n_k, d, causal, window, dtype = case
    q, k, v = shared.make_qkv(b, h, n_q, d, n_k=n_k, kv_heads=hkv, dtype=dtype)
    o, lse = step03.flash_attention_forward(q, k, v, causal=causal, window=window)
    do = torch.randn_like(o)
    ours = tma.fused_attention_backward(do, q, k, v, o, lse, causal=causal, window=window)
    errors = shared.compare_gradients(ours, q, k, v, do, causal=causal, window=window)
    assert all(e["ok"] for e in errors), errors


@pytest.mark.parametrize("case", [
    (1, 2, 1, 37, 37, 64, True, F16, False),  # GQA, causal, ragged: O stored with a mask
    (1, 2, 2, 32, 23, 32, False, BF16, True),  # Nq a multiple of the tile: O stored by descriptor
    (2, 2, 2, 1, 1, 16, False, F16, False),  # one row, one key
], ids=str)
def test_tma_forward_matches_float64(case):
    b, h, hkv, n_q, n_k, d, causal, dtype, warp_specialize = case
    q, k, v = shared.make_qkv(b, h, n_q, d, n_k=n_k, kv_heads=hkv, dtype=dtype)
    o, lse = tma.tma_attention_forward(q, k, v, causal, warp_specialize=warp_specialize)
    ref, ref_lse = shared.reference_attention(q, k, v, causal=causal, return_lse=True)
    atol, rtol = shared.tolerance(dtype)
    assert ((o.double() - ref).abs() <= atol + rtol * ref.abs()).all()
    assert (lse.double() - ref_lse).abs().max().item() < 1e-2


@pytest.mark.parametrize("bad", ["head_dim", "layout", "alignment"])
def test_tma_forward_refuses_what_it_does_not_handle(bad):
    q, k, v = shared.make_qkv(1, 2, 8, 80 if bad == "head_dim" else 64, dtype=F16)
    if bad == "layout":
        q = q.transpose(1, 2).contiguous().transpose(1, 2)
    with pytest.raises(ValueError):
        tma.tma_attention_forward(q, k, v, "lower_right" if bad == "alignment" else False)


def test_hopper_experiments_lists_and_exits_cleanly_without_gpu(capsys):
    spec = importlib.util.spec_from_file_location("hopper_experiments", shared.steps.ROOT / "benchmarks"
                                                  / "hopper_experiments.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--list", "--more"]) == 0
    listed = capsys.readouterr().out
    assert "tma fwd" in listed and "fused bwd" in listed and "atomic dq" in listed
    if not script.have_gpu():
        assert script.main([]) == 0
        assert "nothing to do" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
