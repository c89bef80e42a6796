"""The Gluon forward (step 03, Hopper only) without a GPU: it imports, answers --help, says it
needs a Hopper GPU, and refuses what it does not support before it looks for one.

Gluon has no CPU interpreter, so the kernel itself is only compiled offline
(`flash_attention_gluon.py --compile-only`, Triton 3.6) and run on a GPU (`--check`).
"""
import pytest
import torch

import shared

gluon_step = shared.load_step("03", "flash_attention_gluon.py")


def test_help_does_no_work(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gluon_step.main(["--help"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage:")


@pytest.mark.skipif(shared.HAS_GPU, reason="the no-GPU message")
def test_without_a_gpu_one_line_and_exit_0(capsys):
    assert gluon_step.main(["--check"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "Hopper" in out[0]
    assert gluon_step.gluon_unavailable_reason() is not None


@pytest.mark.parametrize("change, error", [
    (dict(dtype=torch.float32), TypeError),
    (dict(head_dim=96), ValueError),
    (dict(kv_heads=1), ValueError),  # GQA: not this kernel's job
    (dict(n_k=33), ValueError),  # Nq != Nk
])
def test_refuses_what_it_does_not_do(change, error):
    shape = dict(batch=1, heads=2, n_q=17, head_dim=64, dtype=torch.float16)
    q, k, v = shared.make_qkv(**{**shape, **change}, device="cpu")
    with pytest.raises(error):
        gluon_step.flash_attention_gluon_forward(q, k, v)


def test_refuses_lower_right_and_a_cpu_tensor():
    q, k, v = shared.make_qkv(1, 2, 17, 64, dtype=torch.float16, device="cpu")
    with pytest.raises(ValueError):
        gluon_step.flash_attention_gluon_forward(q, k, v, causal="lower_right")
    with pytest.raises(ValueError):  # supported shape and dtype, but not on a CUDA device
        gluon_step.flash_attention_gluon_forward(q, k, v)
