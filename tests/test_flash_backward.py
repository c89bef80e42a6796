"""Tests of step 03's backward pass: gradients vs float64 autograd, layouts, torch.compile.

On CPU the kernels run in Triton's interpreter on small awkward shapes; the
same file on a GPU adds larger shapes. The rule for fp16/bf16: our error
against float64 autograd is at most 2x the error of plain PyTorch autograd in
the same dtype, plus one output rounding (``gradient_errors`` in flash_attention.py).
"""
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

import shared

ROOT = Path(__file__).resolve().parents[1]
STEP = ROOT / "03_advanced_optimizations"


bwd = shared.load_step("03")


def reference_forward(q, k, v, causal=False, scale=None):
    """(o, lse) from the float64 reference, o cast back to q's dtype: an exact forward,
    so that the backward is tested on its own, apart from the forward kernel's rounding."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    group = q.shape[1] // k.shape[1]
    qd, kd, vd = (t.detach().double() for t in (q, k, v))
    kd, vd = kd.repeat_interleave(group, 1), vd.repeat_interleave(group, 1)
    scores = (qd @ kd.transpose(-1, -2)) * scale
    if causal:
        scores = scores.masked_fill(~shared.test_utils.causal_mask(q.shape[2], k.shape[2], q.device),
                                    float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    return (torch.exp(scores - lse[..., None]) @ vd).to(q.dtype), lse.float()


# (B, H, Hkv, Nq, Nk, D, causal): lengths 1, 17, 97 on one side at a time,
# unequal Nq/Nk both ways, GQA and MQA, head dims that are not powers of two.
SHAPES = [
    (1, 2, 2, 1, 17, 16, False),
    (1, 2, 2, 17, 1, 40, True),
    (1, 4, 2, 97, 33, 64, True),
    (2, 2, 1, 33, 97, 80, False),
    (1, 3, 1, 40, 40, 128, True),
    (1, 2, 2, 97, 20, 16, False),
    (1, 2, 2, 20, 97, 64, True),
]
if shared.HAS_GPU:
    SHAPES += [
        (2, 8, 2, 1025, 1025, 64, True),
        (1, 4, 4, 1, 1025, 128, False),
        (1, 4, 1, 333, 257, 96, True),
        (2, 4, 4, 256, 256, 256, True),
        (1, 4, 2, 1000, 3000, 111, False),
        (1, 8, 8, 3000, 1000, 128, True),
        (2, 16, 4, 2048, 2048, 64, False),
    ]


def _id(shape):
    b, h, hkv, n_q, n_k, d, causal = shape
    return f"B{b}-H{h}-Hkv{hkv}-Nq{n_q}-Nk{n_k}-D{d}-{'causal' if causal else 'full'}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_gradients_match_float64(shape, dtype):
    b, h, hkv, n_q, n_k, d, causal = shape
    q, k, v = shared.make_qkv(b, h, n_q, d, n_k=n_k, kv_heads=hkv, dtype=dtype)
    for name, e in zip(("dq", "dk", "dv"), bwd.gradient_errors(q, k, v, causal=causal)):
        assert e["ok"], f"{name}: error {e['ours']:.3g} > bound {e['bound']:.3g} (torch {e['torch']:.3g})"


@pytest.mark.parametrize("causal", [False, True])
def test_float32_gradients_are_exact(causal):
    """fp32 inputs multiply in true fp32 (ieee): errors near fp32 rounding."""
    q, k, v = shared.make_qkv(1, 4, 37, 40, n_k=29, kv_heads=2, dtype=torch.float32)
    for e in bwd.gradient_errors(q, k, v, causal=causal, scale=0.3):
        assert e["ours"] < 2e-5, e


def test_gradcheck_directional_derivative():
    """Finite differences of the float64 loss along a random direction match <grad, direction>."""
    q, k, v = shared.make_qkv(1, 2, 19, 16, n_k=23, kv_heads=1, dtype=torch.float32)
    do = torch.randn_like(q)
    o, lse = reference_forward(q, k, v, causal=True)
    grads = bwd.flash_attention_backward(do, q, k, v, o, lse, causal=True)
    dirs = [torch.randn_like(t) for t in (q, k, v)]
    eps = 1e-4

    def loss(sign):
        args = [(t.double() + sign * eps * u.double()) for t, u in zip((q, k, v), dirs)]
        return (shared.reference_attention(*args, causal=True) * do.double()).sum().item()

    numeric = (loss(+1) - loss(-1)) / (2 * eps)
    analytic = sum((g.double() * u.double()).sum().item() for g, u in zip(grads, dirs))
    assert math.isclose(numeric, analytic, rel_tol=1e-4, abs_tol=1e-4), (numeric, analytic)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_atomic_dq_variant_agrees(causal):
    """The variant we measured against (dQ by atomics in the dK/dV kernel) computes the same."""
    q, k, v = shared.make_qkv(1, 4, 37, 40, n_k=29, kv_heads=2, dtype=torch.float16)
    o, lse = reference_forward(q, k, v, causal=causal)
    do = torch.randn_like(o)
    separate = bwd.flash_attention_backward(do, q, k, v, o, lse, causal=causal)
    fused = bwd.flash_attention_backward(do, q, k, v, o, lse, causal=causal, dq_atomic=True)
    for a, b in zip(separate, fused):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)


def test_non_contiguous_inputs_and_grad_output():
    """q/k/v sliced out of a (B, N, H, D) buffer and a transposed dO give the same gradients."""
    b, h, hkv, n_q, n_k, d = 2, 4, 2, 21, 19, 32
    q_buf = torch.randn(b, n_q, h, 2 * d).to(shared.DEVICE, torch.float16)
    kv_buf = torch.randn(b, n_k, 2, hkv, d).to(shared.DEVICE, torch.float16)
    q = q_buf[..., :d].transpose(1, 2)  # strides (N*H*2D, 2D, H*2D, 1): no dim contiguous in order
    k, v = kv_buf[:, :, 0].transpose(1, 2), kv_buf[:, :, 1].transpose(1, 2)
    do = torch.randn(b, h, d, n_q).to(shared.DEVICE, torch.float16).transpose(2, 3)
    assert not any(t.is_contiguous() for t in (q, k, v, do))
    o, lse = reference_forward(q, k, v, causal=True)
    o_strided = torch.empty(b, n_q, h, d, dtype=o.dtype, device=o.device).transpose(1, 2).copy_(o)
    got = bwd.flash_attention_backward(do, q, k, v, o_strided, lse, causal=True)
    want = bwd.flash_attention_backward(do.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(),
                                        o, lse, causal=True)
    for g, w in zip(got, want):  # the same sums; compiled code may vectorise them differently
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-3)
    for e in bwd.gradient_errors(q, k, v, causal=True, do=do):
        assert e["ok"], e


@pytest.mark.parametrize("api", ["custom_op", "autograd_function"])
def test_trainable_attention_end_to_end(api):
    """loss.backward() through the forward in use (Triton's when flash_attention.py has it)."""
    q, k, v = shared.make_qkv(1, 4, 33, 64, n_k=45, kv_heads=2, dtype=torch.float16, requires_grad=True)
    if api == "custom_op":
        out = bwd.flash_attention(q, k, v, causal=True)
    else:
        out = bwd.FlashAttentionFunction.apply(q, k, v, bwd.attention_plan(q, k, v, causal=True))
    do = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), do)
    exact_leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    exact = torch.autograd.grad(shared.reference_attention(*exact_leaves, causal=True), exact_leaves,
                                do.double())
    for g, e in zip(got, exact):
        assert (g.double() - e).abs().max().item() < 1e-2


def test_torch_compile_has_no_graph_break():
    """A block that calls the attention compiles as one graph, forward and backward."""
    import torch._dynamo

    proj = torch.nn.Linear(32, 3 * 32).to(shared.DEVICE, torch.float16)

    def block(x):
        b, n, _ = x.shape
        qkv = proj(x).view(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4)
        out = bwd.flash_attention(qkv[0], qkv[1], qkv[2], causal=True)
        return out.transpose(1, 2).reshape(b, n, 32).float().square().mean()

    x = torch.randn(2, 24, 32).to(shared.DEVICE, torch.float16)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(block)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    # The interpreter runs on CPU: "aot_eager" traces forward and backward
    # graphs like inductor does, without compiling C++; on a GPU, inductor.
    backend = "inductor" if shared.HAS_GPU else "aot_eager"
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    loss = compiled(x)
    loss.backward()
    grad_compiled = proj.weight.grad.clone()
    proj.weight.grad = None
    block(x).backward()
    torch.testing.assert_close(grad_compiled, proj.weight.grad, atol=1e-3, rtol=1e-2)


def test_custom_ops_pass_opcheck():
    q, k, v = shared.make_qkv(1, 2, 9, 16, n_k=7, kv_heads=1, dtype=torch.float16)
    for flags in (("top_left", 0.25, -1, -1), ("lower_right", 0.25, 3, 0), ("", 0.5, -1, -1)):
        torch.library.opcheck(torch.ops.triton_attention.flash_attn_fwd.default, (q, k, v, *flags),
                              test_utils=("test_schema", "test_faketensor"))
        o, lse = bwd.flash_attention_forward(q, k, v, causal=flags[0] or False, scale=flags[1],
                                             window=flags[2:])
        torch.library.opcheck(torch.ops.triton_attention.flash_attn_bwd.default,
                              (torch.randn_like(o), q, k, v, o, lse, *flags),
                              test_utils=("test_schema", "test_faketensor"))


def test_bad_inputs_raise_clear_errors():
    q, k, v = shared.make_qkv(1, 2, 8, 16, dtype=torch.float16)
    o, lse = reference_forward(q, k, v)
    do = torch.randn_like(o)
    with pytest.raises(ValueError, match="do must be"):
        bwd.flash_attention_backward(do[:, :, :4], q, k, v, o, lse)
    with pytest.raises(ValueError, match="lse"):
        bwd.flash_attention_backward(do, q, k, v, o, lse.double())
    with pytest.raises(TypeError, match="o must have"):
        bwd.flash_attention_backward(do, q, k, v, o.float(), lse)
    with pytest.raises(ValueError, match="head dim"):
        q8, k8, v8 = shared.make_qkv(1, 2, 8, 8, dtype=torch.float16)
        bwd.flash_attention_backward(torch.randn_like(q8), q8, k8, v8, q8, lse)
    with pytest.raises(ValueError, match="multiple"):
        q3 = torch.randn(1, 3, 8, 16, dtype=torch.float16, device=shared.DEVICE)
        bwd.flash_attention_backward(torch.randn_like(q3), q3, k, v, q3, lse[:, :1].expand(1, 3, 8))


def test_train_gpt_smoke(tmp_path):
    """The training demo runs a few steps with a tiny config and writes its results."""
    spec = importlib.util.spec_from_file_location("step03_train_gpt", STEP / "train_gpt.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    results = train.main(["--steps", "3", "--tiny", "--out-dir", str(tmp_path), "--no-plot"])
    for name in ("sdpa", "flash"):
        losses = results["runs"][f"tiny eager {name}"]["loss"]
        assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert (tmp_path / "train_gpt.json").exists()


@pytest.mark.skipif(not shared.HAS_GPU, reason="CUDA graphs need a GPU")
@pytest.mark.xfail(reason="on the H200 and H100 (torch 2.11, triton 3.6) this raised 'accessing tensor output "
                          "of CUDAGraphs that has been overwritten by a subsequent run' for an activation of "
                          "the projection; not yet diagnosed (03_advanced_optimizations/results/"
                          "cuda_graphs_failure.log)", strict=False)
def test_torch_compile_reduce_overhead_cuda_graphs():
    """torch.compile(mode="reduce-overhead") captures the step in a CUDA graph: the kernels'
    launches must be capturable (no host syncs, allocations from PyTorch's caching allocator)."""
    proj = torch.nn.Linear(64, 3 * 64).to(shared.DEVICE, torch.bfloat16)

    def block(x):
        b, n, _ = x.shape
        q, k, v = proj(x).view(b, n, 3, 4, 16).permute(2, 0, 3, 1, 4)
        return bwd.flash_attention(q, k, v, causal=True).transpose(1, 2).reshape(b, n, 64).float().square().mean()

    compiled = torch.compile(block, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):  # warm-up, record, replay
        torch.compiler.cudagraph_mark_step_begin()  # a new training step: earlier outputs may be overwritten
        x = torch.randn(2, 100, 64, device=shared.DEVICE, dtype=torch.bfloat16)
        loss = compiled(x)
        loss.backward()
        grad_graph = proj.weight.grad.clone()
        proj.weight.grad = None
        block(x).backward()
        torch.testing.assert_close(grad_graph, proj.weight.grad, atol=2e-2, rtol=2e-2)
        proj.weight.grad = None
