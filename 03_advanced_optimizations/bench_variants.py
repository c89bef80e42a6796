"""Step 03's variants against the peers, side by side in one run: decoding against a KV cache,
packed variable-length batches, sliding windows.

  * decoding: one or four query rows (lower-right causal) against long KV caches, head dim 128,
    32 query heads over 8 K/V heads; step 03 (packed GQA + split-KV, chosen by itself) against
    SDPA's flash and cuDNN backends (FlexAttention at the four-row point); time, and the K/V
    bytes read over time as a share of a same-run device-to-device copy;
  * packed batch: ~32k tokens in sequences of log-uniform length 64..8192, 16 heads, causal;
    ``flash_attention_varlen`` against FlexAttention with a document mask (its mask building
    timed apart) and SDPA on the same batch padded to its longest sequence; forward and
    forward + backward, head dims 64 and 128;
  * sliding window (4096, 0), causal, 16 heads, head dim 128, N = 32k..128k: step 03 against
    FlexAttention's sliding-window block mask, and full causal SDPA flash for scale.

Every step-03 result is checked against the float64 reference (a sample of rows where the full
problem is too large) before anything is timed. GPU only.

    python bench_variants.py                      # writes results/variants.json
"""
import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `shared`

import shared  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
BF16 = torch.bfloat16
DECODE_POINTS = [(1, 1, 1024), (1, 1, 32768), (1, 1, 131072), (8, 1, 131072), (64, 1, 8192), (64, 1, 32768),
                 (8, 4, 131072)]  # (batch, query rows, KV length); 4 rows: lower-right causal
WINDOW_LENGTHS = (32768, 65536, 131072)


def do_bench(fn):
    import triton.testing
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def flex():
    """FlexAttention compiled, and its block-mask builder (GPU only)."""
    import torch._dynamo
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.config.cache_size_limit = 1000
    return torch.compile(flex_attention, dynamic=False), create_block_mask


def row(section, impl, ms, status="ok", **fields):
    r = {"section": section, "impl": impl, "ms": ms, "status": status, **fields}
    shown = f"{ms:9.3f} ms" if ms else status
    extra = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
    print(f"{section:<8} {impl:<28} {shown:<14} {extra}", flush=True)
    return r


def attempt(fn):
    """(ms, status): time fn, or record why it could not run."""
    try:
        fn()
        torch.cuda.synchronize()
        return do_bench(fn), "ok"
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None, "oom"
    except Exception as exc:  # noqa: BLE001  (a peer that refuses a shape is a result too)
        return None, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def check_rows(out, q, k, v, causal, window=None, rows=64):
    """Step 03's output on a sample of query rows against the float64 reference."""
    b, h, n_q, d = q.shape
    pick = torch.linspace(0, n_q - 1, min(rows, n_q), device=q.device).long().unique()
    n_k = k.shape[2]
    visible = shared.test_utils.visibility_mask(n_q, n_k, causal, window, q.device, rows=pick)
    scores = (q[:, :, pick].double() @ k.double().repeat_interleave(h // k.shape[1], 1).transpose(-1, -2))
    scores = (scores / math.sqrt(d)).masked_fill(~visible, float("-inf"))
    ref = torch.softmax(scores, -1) @ v.double().repeat_interleave(h // k.shape[1], 1)
    return shared.compare_with_reference(out[:, :, pick], ref, q.dtype)


def decoding(step03, copy_gbps, flex_fn):
    rows = []
    for batch, n_q, n_k in DECODE_POINTS:
        heads, kv_heads, d = 32, 8, 128
        q = torch.randn(batch, heads, n_q, d, device="cuda", dtype=BF16)
        k = torch.randn(batch, kv_heads, n_k, d, device="cuda", dtype=BF16)
        v = torch.randn_like(k)
        causal = "lower_right" if n_q > 1 else False
        kv_bytes = 2 * batch * kv_heads * n_k * d * 2
        fields = dict(batch=batch, n_q=n_q, n_k=n_k, heads=heads, kv_heads=kv_heads, head_dim=d, causal=str(causal))
        out = step03.flash_attention(q, k, v, causal=causal)
        check = check_rows(out[:2], q[:2], k[:2], v[:2], causal)  # two sequences: the float64 scores stay small
        if not check.passed:
            raise SystemExit(f"step 03 wrong at decoding {fields}: {check}")
        impls = {"03 flash": lambda: step03.flash_attention(q, k, v, causal=causal)}
        for name in ("flash", "cudnn"):
            sdpa = shared.sdpa_backend(name)
            if n_q == 1:
                impls[f"sdpa {name}"] = lambda sdpa=sdpa: sdpa(q, k, v)
            else:
                from torch.nn.attention.bias import causal_lower_right

                bias = causal_lower_right(n_q, n_k)

                def lower_right(name=name):
                    from torch.nn.attention import SDPBackend, sdpa_kernel
                    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[name]
                    with sdpa_kernel(backend):
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                                                enable_gqa=True)
                impls[f"sdpa {name}"] = lower_right
        if n_q > 1 and flex_fn is not None:
            flex_attention, create_block_mask = flex_fn
            shift = n_k - n_q
            mask = create_block_mask(lambda b, h, i, j: j <= i + shift, None, None, n_q, n_k, device="cuda")
            impls["flex attention"] = lambda: flex_attention(q, k, v, block_mask=mask, enable_gqa=True)
        for name, fn in impls.items():
            ms, status = attempt(fn)
            share = kv_bytes / (ms * 1e-3) / (copy_gbps * 1e9) if ms else None
            rows.append(row("decode", name, ms, status, **fields, kv_share_of_copy=share))
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def packed_lengths(total=32768, low=64, high=8192, seed=0):
    """Log-uniform sequence lengths, drawn until they fill `total` tokens (the last one trimmed)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = []
    while sum(lengths) < total:
        lengths.append(int(math.exp(math.log(low) + torch.rand(1, generator=gen).item() * math.log(high / low))))
    lengths[-1] -= sum(lengths) - total
    return [n for n in lengths if n > 0]


def varlen(step03, flex_fn):
    rows = []
    lengths = packed_lengths()
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    total, longest, heads = sum(lengths), max(lengths), 16
    for d in (64, 128):
        fields = dict(sequences=len(lengths), tokens=total, longest=longest, heads=heads, head_dim=d)
        q, k, v = (torch.randn(total, heads, d, device="cuda", dtype=BF16, requires_grad=True) for _ in range(3))
        do = torch.randn(total, heads, d, device="cuda", dtype=BF16)
        ok = step03.check_varlen_case(lengths[:3], lengths[:3], heads, heads, d, True, None, BF16)
        if not ok:
            raise SystemExit("step 03 varlen is wrong")

        def ours():
            return step03.flash_attention_varlen(q, k, v, cu, cu, longest, longest, causal=True, check=False)

        impls = {"03 flash varlen": ours}
        if flex_fn is not None:
            flex_attention, create_block_mask = flex_fn
            doc = torch.repeat_interleave(torch.arange(len(lengths), device="cuda"),
                                          torch.tensor(lengths, device="cuda"))

            def document_causal(b, h, i, j):
                return (doc[i] == doc[j]) & (j <= i)

            start = time.perf_counter()
            mask = create_block_mask(document_causal, None, None, total, total, device="cuda")
            torch.cuda.synchronize()
            rows.append(row("varlen", "flex mask build", (time.perf_counter() - start) * 1e3, **fields))
            qf, kf, vf = (t.detach().transpose(0, 1)[None].requires_grad_(True) for t in (q, k, v))
            impls["flex attention (doc mask)"] = lambda: flex_attention(qf, kf, vf, block_mask=mask)
        # SDPA on the batch padded to its longest sequence
        bq = torch.randn(len(lengths), heads, longest, d, device="cuda", dtype=BF16, requires_grad=True)
        bk, bv = torch.randn_like(bq, requires_grad=True), torch.randn_like(bq, requires_grad=True)
        for name in ("flash", "cudnn"):
            sdpa = shared.sdpa_backend(name)
            impls[f"sdpa {name} (padded)"] = lambda sdpa=sdpa: sdpa(bq, bk, bv, causal=True)
        for name, fn in impls.items():
            with torch.no_grad():
                ms, status = attempt(fn)
            rows.append(row("varlen", name, ms, status, mode="fwd", **fields))

            def fwd_bwd(fn=fn):
                out = fn()
                out.backward(torch.randn_like(out))

            ms, status = attempt(fwd_bwd)
            rows.append(row("varlen", name, ms, status, mode="fwd+bwd", **fields))
        del q, k, v, bq, bk, bv
        torch.cuda.empty_cache()
    return rows


def sliding_window(step03, flex_fn, window=4096):
    rows = []
    heads, d = 16, 128
    for n in WINDOW_LENGTHS:
        fields = dict(n=n, heads=heads, head_dim=d, window=window)
        q, k, v = (torch.randn(1, heads, n, d, device="cuda", dtype=BF16) for _ in range(3))
        out = step03.flash_attention(q, k, v, causal=True, window=(window, 0))
        check = check_rows(out, q, k, v, True, (window, 0))
        if not check.passed:
            raise SystemExit(f"step 03 wrong at window {fields}: {check}")
        impls = {"03 flash window": lambda: step03.flash_attention(q, k, v, causal=True, window=(window, 0)),
                 "sdpa flash (full causal)": lambda: shared.sdpa_backend("flash")(q, k, v, causal=True)}
        if flex_fn is not None:
            flex_attention, create_block_mask = flex_fn
            # _compile=True: built block by block, never as a dense N x N mask (128 GiB at N = 128k)
            mask = create_block_mask(lambda b, h, i, j: (j <= i) & (i - j <= window), None, None, n, n,
                                     device="cuda", _compile=True)
            impls["flex attention (window)"] = lambda: flex_attention(q, k, v, block_mask=mask)
        for name, fn in impls.items():
            ms, status = attempt(fn)
            rows.append(row("window", name, ms, status, **fields))
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--no-flex", action="store_true", help="leave FlexAttention out (it compiles per shape)")
    parser.add_argument("--parts", nargs="+", default=["decode", "varlen", "window"],
                        choices=["decode", "varlen", "window"])
    args = parser.parse_args(argv)
    if not shared.HAS_GPU:
        print("bench_variants.py times GPU kernels: it needs a CUDA GPU (nothing to do here).")
        return 0
    print(shared.describe_runtime())
    step03 = shared.load_step("03")
    ceilings = shared.measure_ceilings(BF16)
    print(f"ceilings: {ceilings}")
    flex_fn = None if args.no_flex else flex()
    rows, sections = [], {"decode": lambda: decoding(step03, ceilings["copy_gbps"], flex_fn),
                          "varlen": lambda: varlen(step03, flex_fn), "window": lambda: sliding_window(step03, flex_fn)}
    for part in args.parts:  # saved after each part: a later failure keeps what was measured
        rows += sections[part]()
        path = shared.save_results(args.out_dir / "variants.json", rows, step="03_advanced_optimizations",
                                   ceilings=ceilings, dtype="bfloat16", parts_done=args.parts[:args.parts.index(part) + 1],
                                   command="python bench_variants.py " + " ".join(argv or sys.argv[1:]))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
