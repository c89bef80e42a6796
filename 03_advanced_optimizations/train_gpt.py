"""Step 03 (training demo): a small GPT trained with SDPA and with our FlashAttention.

The backward pass exists so that attention can be trained. This script trains
the same small GPT-style decoder twice, from the same seed on the same batches,
once with ``F.scaled_dot_product_attention`` and once with step 03's Triton
forward and backward, and compares the loss curves and the step times.

You will learn:
  * where attention sits in a decoder (pre-LayerNorm, causal self-attention, MLP);
  * how a pluggable attention function on (B, H, N, D) tensors slots into a model;
  * what "numerically equivalent" looks like in training: two loss curves that
    track each other to within bf16 noise, not bit for bit.

The text is built from Python's own standard-library sources (no download):
byte-level tokens, so the vocabulary is the 256 byte values.

Run it (from this folder or the repo root):
    python train_gpt.py                      # both attentions, a few hundred steps on a GPU
    python train_gpt.py --attention flash    # one of them
    python train_gpt.py --tiny --steps 3     # the CPU smoke test (Triton interpreter)
It writes results/train_gpt.json and results/train_gpt_loss.png.
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
    for step, (x, y) in enumerate(batches(data, cfg["batch"], cfg["context"], cfg["steps"], cfg["seed"])):
        x, y = x.to(device), y.to(device)
        lr = cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"])  # linear warm-up, then constant
        for group in opt.param_groups:
            group["lr"] = lr
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            loss = step_fn(x, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
        losses.append(loss.item())
        if step % max(1, cfg["steps"] // 10) == 0 or step == cfg["steps"] - 1:
            print(f"  {name:<6} step {step:4d}  loss {losses[-1]:.4f}  {times[-1]:8.1f} ms", flush=True)
    skip = min(len(times) - 1, 10)  # the first steps include compilation and autotuning
    return {"loss": losses, "step_ms": times,
            "median_step_ms": sorted(times[skip:])[len(times[skip:]) // 2]}


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sdpa": shared.COLORS["torch sdpa"], "flash": shared.COLORS["03 flash"]}
    fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in results["runs"].items():
        ax.plot(run["loss"], label=f"{name} ({run['median_step_ms']:.1f} ms/step)", color=colors.get(name),
                lw=1.2, alpha=0.9)
    ax.set(xlabel="step", ylabel="training loss (nats/byte)", title="loss, same seed and batches")
    ax.legend()
    if {"sdpa", "flash"} <= results["runs"].keys():
        a, b = results["runs"]["flash"]["loss"], results["runs"]["sdpa"]["loss"]
        ax_diff.plot([x - y for x, y in zip(a, b)], color=colors["flash"], lw=1)
        ax_diff.axhline(0, color="gray", lw=0.5)
        ax_diff.set(xlabel="step", ylabel="loss(flash) - loss(sdpa)", title="difference")
    cfg = results["config"]
    fig.suptitle(f"GPT {cfg['layers']}x{cfg['dim']} ({cfg['heads']} heads), context {cfg['context']}, "
                 f"batch {cfg['batch']}, {cfg['dtype']}, {results['env'].get('gpu', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attention", choices=("sdpa", "flash", "both"), default="both")
    parser.add_argument("--steps", type=int, default=None, help="default: 300 on a GPU, 3 without")
    parser.add_argument("--tiny", action="store_true", help="a model small enough for the interpreter")
    parser.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True) the model")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                        help="autocast dtype (default bf16 on a GPU, fp32 without one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    print(shared.describe_runtime())

    device = shared.DEVICE
    tiny = args.tiny or shared.INTERPRETER
    cfg = dict(layers=2, dim=32, heads=2, context=32, batch=2, lr=3e-3, warmup=2) if tiny else \
        dict(layers=6, dim=384, heads=6, context=512, batch=32, lr=1e-3, warmup=50)
    cfg.update(steps=args.steps or (3 if shared.INTERPRETER else 300), seed=args.seed, compile=args.compile,
               dtype=args.dtype or ("fp32" if shared.INTERPRETER else "bf16"))
    data = build_corpus(200_000 if tiny else 4_000_000)
    print(f"corpus: {len(data)} bytes of standard-library source; config {cfg}")

    attentions = {"sdpa": sdpa_attention, "flash": load_flash_attention()}
    names = ("sdpa", "flash") if args.attention == "both" else (args.attention,)
    results = {"config": cfg, "env": shared.environment(), "runs": {}}
    for name in names:
        results["runs"][name] = train(name, attentions[name], cfg, data, device)
    for name, run in results["runs"].items():
        print(f"{name:<6} final loss {run['loss'][-1]:.4f}  median step {run['median_step_ms']:.1f} ms")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "train_gpt.json").write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_plot:
        plot(results, args.out_dir / "train_gpt_loss.png")
    print(f"wrote {args.out_dir / 'train_gpt.json'}")
    return results


if __name__ == "__main__":
    main()
