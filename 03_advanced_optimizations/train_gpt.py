"""Step 03 (training demo): GPTs trained with SDPA and with our FlashAttention.

The backward pass exists so that attention can be trained. This script trains
the same GPT-style decoder twice, from the same seed on the same batches, once
with ``F.scaled_dot_product_attention`` and once with step 03's Triton forward
and backward, at two sizes (a small 6-layer model and GPT-2 small: 12 layers,
width 768, 12 heads, context 1024), in eager mode and under torch.compile, and
compares the loss curves, the step times (tokens per second) and the share of
each step's GPU time spent in attention kernels (from torch.profiler; SDPA picks
its own backend there, and the kernel names in the results say which).

You will learn:
  * where attention sits in a decoder (pre-LayerNorm, causal self-attention, MLP);
  * how a pluggable attention function on (B, H, N, D) tensors slots into a model;
  * what "numerically equivalent" looks like in training: two loss curves that
    track each other to within bf16 noise, not bit for bit.

The text is built from Python's own standard-library sources (no download):
byte-level tokens, so the vocabulary is the 256 byte values.

Run it (from this folder or the repo root):
    python train_gpt.py                      # both sizes, both attentions, eager and compiled (GPU)
    python train_gpt.py --size small --attention flash --mode eager   # one run
    python train_gpt.py --tiny --steps 3     # the CPU smoke test (Triton interpreter)
A full GPU run writes results/train_gpt.json and results/train_gpt_loss.png; --tiny, --steps or
a run without a GPU writes to scratch/03_advanced_optimizations/ instead (--out-dir to choose).
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402  (first: picks the interpreter when there is no GPU)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- attention functions
def sdpa_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def load_flash_attention():
    """Step 03's differentiable attention (a custom op, so torch.compile keeps one graph)."""
    flash_attention = shared.load_step("03").flash_attention
    return lambda q, k, v: flash_attention(q, k, v, causal=True)


# ----------------------------------------------------------------------------- model
class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads, attention):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.attention = attention  # fn(q, k, v) on (B, H, N, D), causal

    def forward(self, x):
        b, n, dim = x.shape
        # (B, N, 3, H, D) -> three (B, H, N, D) views: non-contiguous, the kernels take strides
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = self.attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))


class Block(nn.Module):
    def __init__(self, dim, heads, attention):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, attention)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))  # pre-LN: normalise, attend, add back
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab, dim, heads, layers, context, attention):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, attention) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied input/output embeddings
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


# ----------------------------------------------------------------------------- data
STDLIB_MODULES = ("argparse", "collections", "dataclasses", "functools", "inspect", "json.decoder",
                  "json.encoder", "pathlib", "textwrap", "typing", "unittest.case", "difflib",
                  "heapq", "fractions", "statistics", "string", "this")


def build_corpus(max_bytes):
    """Bytes of a fixed list of standard-library sources (always the same on one Python)."""
    import importlib.util

    parts = []
    for name in STDLIB_MODULES:  # read the files, without importing them (`this` would print)
        try:
            spec = importlib.util.find_spec(name)
            parts.append(Path(spec.origin).read_text(encoding="utf-8"))
        except (OSError, TypeError, AttributeError, ImportError, ValueError):  # a stripped Python
            continue
    text = "\n".join(parts) or ("The Zen of Python, by Tim Peters. Beautiful is better than ugly. " * 400)
    data = torch.frombuffer(bytearray(text.encode("utf-8")[:max_bytes]), dtype=torch.uint8).long()
    return data


def batches(data, batch, context, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - context - 1, (batch,), generator=gen)
        x = torch.stack([data[s:s + context] for s in starts])
        y = torch.stack([data[s + 1:s + context + 1] for s in starts])
        yield x, y


# ----------------------------------------------------------------------------- training
SIZES = {  # the model sizes a GPU run trains; batch sizes fill an 80 GB GPU comfortably in bf16
    "small": dict(layers=6, dim=384, heads=6, context=512, batch=32, lr=1e-3, warmup=50, steps=200),
    "gpt2": dict(layers=12, dim=768, heads=12, context=1024, batch=32, lr=6e-4, warmup=20, steps=60),
}
TINY = dict(layers=2, dim=32, heads=2, context=32, batch=2, lr=3e-3, warmup=2, steps=3)
ATTENTION_KERNELS = ("flash_attention_forward_kernel", "_bwd_dq_kernel", "_bwd_dkdv_kernel",  # ours
                     "flash", "fmha", "cudnn", "attention", "sdpa")  # SDPA's backends' kernel names


def attention_share(step, steps=3):
    """Share of the GPU time of `steps` training steps spent in attention kernels, and their names."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels = list(prof.key_averages())  # GPU activity only: kernels, copies, fills
    total = sum(getattr(e, "self_device_time_total", 0.0) for e in kernels)
    attention = [e for e in kernels if any(name in e.key.lower() for name in ATTENTION_KERNELS)
                 and "elementwise" not in e.key.lower()]
    share = sum(getattr(e, "self_device_time_total", 0.0) for e in attention) / total if total else None
    names = sorted({e.key[:90] for e in attention})
    return share, names


def train(name, attention, cfg, data, device):
    torch.manual_seed(cfg["seed"])  # same initial weights for every attention
    model = GPT(256, cfg["dim"], cfg["heads"], cfg["layers"], cfg["context"], attention).to(device)
    step_fn = model
    if cfg["compile"]:
        step_fn = torch.compile(model, fullgraph=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.1, betas=(0.9, 0.95))
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["dtype"])
    scaler = torch.amp.GradScaler("cuda", enabled=cfg["dtype"] == "fp16")
    losses, times = [], []

    def one_step(x, y, lr):
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device_type=device, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            loss = step_fn(x, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        return loss

    for step, (x, y) in enumerate(batches(data, cfg["batch"], cfg["context"], cfg["steps"], cfg["seed"])):
        x, y = x.to(device), y.to(device)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = one_step(x, y, cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"]))  # linear warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
        losses.append(loss.item())
        if step % max(1, cfg["steps"] // 10) == 0 or step == cfg["steps"] - 1:
            shown = f"{times[-1]:8.1f} ms" if device == "cuda" else "(interpreter: no timing)"
            print(f"  {name:<6} step {step:4d}  loss {losses[-1]:.4f}  {shown}", flush=True)
    skip = min(len(times) - 1, 10)  # the first steps include compilation
    median = sorted(times[skip:])[len(times[skip:]) // 2]
    run = {"loss": losses, "step_ms": times, "median_step_ms": median,
           "tokens_per_s": cfg["batch"] * cfg["context"] / (median * 1e-3)}
    if device == "cuda":  # profile three more steps, outside the loss curve
        x, y = next(batches(data, cfg["batch"], cfg["context"], 1, cfg["seed"] + 1))
        run["attention_share"], run["attention_kernels"] = attention_share(
            lambda: one_step(x.to(device), y.to(device), cfg["lr"]))
    return run


def plot(results, path):
    """Loss curves (left) and their difference (right), one row per model size and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sdpa": shared.COLORS["torch sdpa"], "flash": shared.COLORS["03 flash"]}
    groups = sorted({(r["size"], r["mode"]) for r in results["runs"].values()})
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.2 * len(groups)), squeeze=False)
    for (ax, ax_diff), (size, mode) in zip(axes, groups):
        runs = {r["attention"]: r for r in results["runs"].values() if (r["size"], r["mode"]) == (size, mode)}
        for name, run in runs.items():
            ax.plot(run["loss"], label=f"{name} ({run['median_step_ms']:.1f} ms/step)", color=colors[name],
                    lw=1.2, alpha=0.9)
        cfg = results["configs"][size]
        ax.set(xlabel="step", ylabel="loss (nats/byte)",
               title=f"{size}: {cfg['layers']}x{cfg['dim']}, {cfg['heads']} heads, ctx {cfg['context']}, "
                     f"batch {cfg['batch']}, {mode}")
        ax.legend(fontsize=8)
        if {"sdpa", "flash"} <= runs.keys():
            a, b = runs["flash"]["loss"], runs["sdpa"]["loss"]
            ax_diff.plot([x - y for x, y in zip(a, b)], color=colors["flash"], lw=1)
            ax_diff.axhline(0, color="gray", lw=0.5)
            ax_diff.set(xlabel="step", ylabel="loss(flash) - loss(sdpa)", title="difference")
    fig.suptitle(f"same seed and batches, {results['dtype']} autocast, {results['env'].get('gpu', '')}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attention", choices=("sdpa", "flash", "both"), default="both")
    parser.add_argument("--size", choices=("small", "gpt2", "both"), default="both")
    parser.add_argument("--mode", choices=("eager", "compiled", "both"), default="both",
                        help="compiled: torch.compile(fullgraph=True) the model")
    parser.add_argument("--steps", type=int, default=None, help="default: the size's own (200 / 60)")
    parser.add_argument("--tiny", action="store_true", help="a model small enough for the interpreter")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                        help="autocast dtype (default bf16 on a GPU, fp32 without one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="default: results/ for a full GPU run, scratch/03_advanced_optimizations/ otherwise")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    print(shared.describe_runtime())
    tiny = args.tiny or shared.INTERPRETER
    out_dir = shared.output_dir(args.out_dir, HERE / "results", official=not tiny and args.steps is None
                                and args.size == args.attention == args.mode == "both",
                                why="a --tiny, --steps or partial run")
    device = shared.DEVICE
    dtype = args.dtype or ("fp32" if shared.INTERPRETER else "bf16")
    sizes = {"tiny": TINY} if tiny else {k: v for k, v in SIZES.items() if args.size in (k, "both")}
    modes = ("eager",) if tiny else tuple(m for m in ("eager", "compiled") if args.mode in (m, "both"))
    names = ("sdpa", "flash") if args.attention == "both" else (args.attention,)
    attentions = {"sdpa": sdpa_attention, "flash": load_flash_attention()}
    results = {"env": shared.environment(), "dtype": dtype, "configs": {}, "runs": {}}
    for size, base in sizes.items():
        cfg = dict(base, seed=args.seed, dtype=dtype)
        if args.steps:
            cfg["steps"] = args.steps
        results["configs"][size] = cfg
        data = build_corpus(200_000 if tiny else 4_000_000 + cfg["batch"] * cfg["context"])
        print(f"{size}: corpus {len(data)} bytes of standard-library source; config {cfg}")
        for mode in modes:
            for name in names:
                run = train(f"{name}", attentions[name], dict(cfg, compile=mode == "compiled"), data, device)
                results["runs"][f"{size} {mode} {name}"] = dict(run, size=size, mode=mode, attention=name)
                if device == "cuda":
                    import torch._dynamo

                    torch._dynamo.reset()  # compiled runs start from a clean cache
    for key, run in results["runs"].items():
        timing = (f"median step {run['median_step_ms']:.1f} ms, {run['tokens_per_s']:,.0f} tokens/s, "
                  f"attention {run['attention_share']:.0%} of GPU time" if device == "cuda" else
                  "(interpreter: no timing)")
        print(f"{key:<22} final loss {run['loss'][-1]:.4f}  {timing}")
    (out_dir / "train_gpt.json").write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_plot:
        plot(results, out_dir / "train_gpt_loss.png")
    print(f"wrote {out_dir / 'train_gpt.json'}")
    return results


if __name__ == "__main__":
    main()
