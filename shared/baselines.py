"""The PyTorch baselines every step is compared with, under stable names and colours.

Each takes ``(q, k, v, causal=False, scale=None)`` on ``(B, H, N, D)`` tensors,
like the series' own kernels, so ``quick_benchmark`` and ``test_correctness``
treat them all alike.
"""
import torch
import torch.nn.functional as F


def naive_torch(q, k, v, causal=False, scale=None):
    """matmul -> softmax -> matmul, the way attention is first written: it
    materialises the whole (Nq, Nk) score matrix in memory, twice."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    if causal:
        n_q, n_k = scores.shape[-2:]
        visible = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def torch_sdpa(q, k, v, causal=False, scale=None):
    """``F.scaled_dot_product_attention``; PyTorch picks the backend."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale,
                                          enable_gqa=q.shape[1] != k.shape[1])


def sdpa_backend(name):
    """SDPA forced to one backend: "flash", "efficient" or "cudnn" (GPU only)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION}[name]

    def sdpa_forced(q, k, v, causal=False, scale=None):
        with sdpa_kernel(backend):
            return torch_sdpa(q, k, v, causal=causal, scale=scale)

    sdpa_forced.__name__ = f"sdpa_{name}"
    return sdpa_forced


def flex_attention_compiled():
    """FlexAttention under torch.compile (a Triton-generated peer; GPU only)."""
    import torch._dynamo
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    # Every new shape recompiles; past the default limit dynamo silently falls
    # back to eager, which would time the slow path.
    torch._dynamo.config.cache_size_limit = 1000
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 1000
    # The series times a backward by calling autograd.grad again on one forward's graph
    # (retain_graph=True); a compiled backward that donates its saved buffers refuses that
    # (seen on an H100, torch 2.11, in benchmarks/hopper_experiments.py). Donation only saves memory.
    import torch._functorch.config
    if hasattr(torch._functorch.config, "donated_buffer"):
        torch._functorch.config.donated_buffer = False
    compiled = torch.compile(flex_attention, dynamic=False)
    masks = {}

    def causal_mod(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def flex(q, k, v, causal=False, scale=None):
        block_mask = None
        if causal:
            key = (q.shape[2], k.shape[2], q.device)
            if key not in masks:
                masks[key] = create_block_mask(causal_mod, None, None, key[0], key[1], device=q.device)
            block_mask = masks[key]
        return compiled(q, k, v, block_mask=block_mask, scale=scale,
                        enable_gqa=q.shape[1] != k.shape[1])

    return flex


# Stable names and colours: the same implementation looks the same in every plot.
COLORS = {
    "naive torch": "#7f7f7f",
    "torch sdpa": "#1f77b4",
    "sdpa flash": "#1f77b4",
    "sdpa efficient": "#17becf",
    "sdpa cudnn": "#9467bd",
    "flex attention": "#8c564b",
    "01 basic": "#d62728",
    "02 vectorized": "#ff7f0e",
    "03 flash": "#2ca02c",
}


def standard_baselines():
    """The baselines every step times beside itself: naive PyTorch, and SDPA forced to its flash
    and to its cuDNN backend (GPU only). Forced, so that every step's ratios are against the same
    kernels, whichever backend SDPA would pick by itself on that GPU and torch version."""
    return {"naive torch": naive_torch, "sdpa flash": sdpa_backend("flash"),
            "sdpa cudnn": sdpa_backend("cudnn")}
