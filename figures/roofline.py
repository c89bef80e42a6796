"""Draw figures/roofline.png: steps 01, 02 and 03 on one roofline, from the committed results.

    python figures/roofline.py         # no GPU needed: it only reads the results files
    python figures/roofline.py --ncu   # 04_profiling/roofline_ncu.png, from the Nsight Compute summary

A roofline plots throughput (TFLOP/s) against arithmetic intensity (FLOPs per
byte moved). A kernel with intensity I cannot beat min(compute ceiling,
bandwidth x I). The ceilings drawn:

  * measured: device-to-device copy bandwidth and a large fp16 matmul, both from
    the ``meta.ceilings`` that step 02's benchmark records (same GPU and run as
    its rows);
  * spec sheet (dashed), NVIDIA H100 SXM5 80 GB datasheet: dense fp16 tensor
    cores 989 TFLOP/s (1,979 is quoted with 2:4 sparsity), fp32 on the CUDA cores
    67 TFLOP/s, HBM3 3.35 TB/s.

One point per step at one shape that every results file has: fp16, B=4, H=32,
N=4096, D=128, not causal (step 03's backward was measured at D=128 only); the Gluon kernel
and cuDNN beside it at the same shape in bf16 (results/hopper_experiments.json: that run had no fp16). The
intensity of a filled point is ``attention_flops / attention_min_bytes``: the
FLOPs attention needs over the bytes it must move (read Q, K, V once, write O
once; backward: read Q, K, V, O, dO, write dQ, dK, dV). Steps 01 and 02 also get a
hollow point at the intensity they really request, the same FLOPs over every
byte their loads ask for (each query row re-reads K and V: ``requested_bytes``
in step 02's results file). The script refuses to mix GPUs: every point's file
must name the same ``env.gpu``.

``--ncu`` draws the profiling chapter's roofline instead, from one ncu run
(04_profiling/results/ncu/summary.json, fp16, B=4, H=16, N=2048): x is the FLOPs over
the bytes ncu counted at DRAM (filled) and at L2 (hollow), y the FLOPs over ncu's
duration; the ceilings are the DRAM peak ncu reports, the copy and matmul rates
measured in the same run, and the fp32 FMA peak at the SM clock ncu saw (2 FLOPs x
128 FP32 lanes x SMs x clock).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import shared  # noqa: E402

SHAPE = {"batch": 4, "heads": 32, "n_q": 4096, "n_k": 4096, "head_dim": 128, "causal": False, "dtype": "float16"}
# (label, results file, impl, mode)
POINTS = [
    ("01 basic", "01_basic_attention/results/results.json", "01 basic", "fwd"),
    ("02 vectorized", "02_vectorized_attention/results/results.json", "02 vectorized", "fwd"),
    ("03 flash forward", "03_advanced_optimizations/results/forward.json", "03 flash", "fwd"),
    ("03 flash backward", "03_advanced_optimizations/results/backward.json", "03 flash", "bwd"),
    # Section 7's second round ran in bf16 only (same bytes per element): the Gluon kernel and cuDNN from one run
    ("Gluon forward (bf16)", "03_advanced_optimizations/results/hopper_experiments.json", "gluon fwd", "fwd"),
    ("cuDNN forward (bf16, same run)", "03_advanced_optimizations/results/hopper_experiments.json", "sdpa cudnn", "fwd"),
]
DTYPE_OF = {"hopper_experiments.json": "bfloat16"}  # files measured in another dtype than SHAPE's
CEILINGS_FROM = "02_vectorized_attention/results/results.json"  # meta.ceilings, measured beside step 02
SPEC = {  # NVIDIA H100 SXM5 80 GB datasheet (dense, i.e. without 2:4 sparsity)
    "fp16 tensor cores": 989.0,  # TFLOP/s
    "fp32 CUDA cores": 67.0,  # TFLOP/s
    "HBM3": 3350.0,  # GB/s
}
OUT = Path(__file__).resolve().parent / "roofline.png"


def find_row(path, impl, mode):
    data = shared.load_results(ROOT / path)
    shape = {**SHAPE, "dtype": DTYPE_OF.get(Path(path).name, SHAPE["dtype"])}
    rows = shared.select(data["rows"], impl=impl, mode=mode, **shape)
    if len(rows) != 1 or not rows[0].get("tflops"):
        raise SystemExit(f"{path}: expected one measured {impl} {mode} row at {SHAPE}, found {len(rows)}")
    return data["env"], rows[0]


def points():
    """One dict per step: label, GPU, TFLOP/s, intensity at the minimum bytes and (01, 02) at requested bytes."""
    s = SHAPE
    requested = {r["impl"]: r["requested_bytes"] for r in shared.select(
        shared.load_results(ROOT / CEILINGS_FROM)["rows"], mode="fwd", **s) if r.get("requested_bytes")}
    out = []
    for label, path, impl, mode in POINTS:
        env, row = find_row(path, impl, mode)
        flops = shared.attention_flops(s["batch"], s["heads"], s["n_q"], s["n_k"], s["head_dim"], s["causal"], mode)
        min_bytes = shared.attention_min_bytes(s["batch"], s["heads"], s["heads"], s["n_q"], s["n_k"], s["head_dim"],
                                               2, mode)
        point = {"label": label, "impl": impl, "gpu": env.get("gpu"), "file": path, "tflops": row["tflops"],
                 "intensity_min": flops / min_bytes}
        if impl in requested:
            point["intensity_requested"] = flops / requested[impl]
        out.append(point)
    return out


def draw(path=OUT):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = points()
    data02 = shared.load_results(ROOT / CEILINGS_FROM)
    ceil = data02["meta"]["ceilings"]
    gpus = {p["gpu"] for p in pts} | {data02["env"].get("gpu")}
    if len(gpus) != 1:
        raise SystemExit(f"results from different GPUs ({sorted(map(str, gpus))}): not drawing them on one roofline")
    gpu = gpus.pop()
    copy_tbs, matmul = ceil["copy_gbps"] / 1e3, ceil["matmul_tflops"]

    fig, ax = plt.subplots(figsize=(9, 6))
    x = [0.1, 1e4]
    # bandwidth diagonals: TFLOP/s = TB/s x FLOP/byte
    ax.plot(x, [copy_tbs * i for i in x], color="k", lw=1.5, label=f"measured copy bandwidth {copy_tbs:.2f} TB/s")
    ax.plot(x, [SPEC["HBM3"] / 1e3 * i for i in x], color="k", lw=1, ls="--",
            label=f"HBM3 spec {SPEC['HBM3'] / 1e3:.2f} TB/s")
    # compute ceilings
    ax.axhline(matmul, color="#2ca02c", lw=1.5, label=f"measured fp16 matmul {matmul:.0f} TFLOP/s (tensor cores)")
    ax.axhline(SPEC["fp16 tensor cores"], color="#2ca02c", lw=1, ls="--",
               label=f"fp16 tensor-core spec {SPEC['fp16 tensor cores']:.0f} TFLOP/s (dense)")
    ax.axhline(SPEC["fp32 CUDA cores"], color="#d62728", lw=1, ls="--",
               label=f"fp32 CUDA-core spec {SPEC['fp32 CUDA cores']:.0f} TFLOP/s (FMA)")
    for p in pts:
        color = shared.COLORS.get(p["impl"], "k")
        marker = "s" if "backward" in p["label"] else "o"
        ax.plot(p["intensity_min"], p["tflops"], marker=marker, ms=9, color=color, ls="none")
        left = "bf16" in p["label"]  # the second-round points sit on top of step 03's: labels to the left
        offset = (-10, 6 if "cuDNN" in p["label"] else -10) if left else (8, -12 if "backward" in p["label"] else 4)
        ax.annotate(f"{p['label']}: {p['tflops']:.1f} TFLOP/s", (p["intensity_min"], p["tflops"]),
                    textcoords="offset points", xytext=offset, fontsize=8, color=color,
                    ha="right" if left else "left")
        if "intensity_requested" in p:
            ax.plot(p["intensity_requested"], p["tflops"], marker="o", ms=9, mfc="white", color=color, ls="none")
            ax.annotate("", xy=(p["intensity_requested"] * 1.15, p["tflops"]),
                        xytext=(p["intensity_min"] / 1.15, p["tflops"]),
                        arrowprops={"arrowstyle": "->", "color": color, "ls": ":", "lw": 1})
            ax.annotate(f"{p['impl']}, counting the\nbytes it requests", (p["intensity_requested"], p["tflops"]),
                        textcoords="offset points", xytext=(-9, -4), fontsize=8, color=color, ha="right",
                        va="center")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*x)
    ax.set_ylim(1, 3000)
    ax.set_xlabel("arithmetic intensity (FLOP per byte)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"Steps 01-03 on one roofline: {gpu}\n"
                 "fp16, B=4, H=32, N=4096, D=128, not causal; filled: minimum bytes, hollow: bytes requested",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left")
    fig.text(0.01, 0.01, "Points and measured ceilings: the series' results files (env.gpu as in the title). "
             "Dashed: NVIDIA H100 SXM5 datasheet.", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


NCU_SUMMARY = ROOT / "04_profiling" / "results" / "ncu" / "summary.json"
NCU_OUT = ROOT / "04_profiling" / "roofline_ncu.png"
# The chapter's points: (case label in the summary, label on the figure)
NCU_POINTS = [("01 basic D=64", "01 basic"), ("02 vectorized D=64", "02 vectorized"),
              ("01 basic D=128 causal", "01 basic, D=128 causal"),
              ("02 vectorized D=128 causal", "02 vectorized, D=128 causal"),
              ("03 flash fwd D=64", "03 flash forward"), ("03 flash bwd D=64", "03 flash backward (dQ + dK/dV)")]


def _median(values):
    values = sorted(v for v in values if v)
    return values[len(values) // 2] if values else None


def draw_ncu(summary_path=NCU_SUMMARY, path=NCU_OUT):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = shared.load_results(summary_path)
    rows = {r["label"]: r for r in data["rows"]}
    kernels = [k for r in data["rows"] for k in r["kernels"]]
    dram_peak = _median(k.get("dram_peak_gbps") for k in kernels)
    clock, sms = _median(k.get("sm_clock_hz") for k in kernels), _median(k.get("sm_count") for k in kernels)
    ceil = data["meta"].get("ceilings") or {}
    fig, ax = plt.subplots(figsize=(9, 6))
    x = [0.01, 1e4]
    if dram_peak:
        ax.plot(x, [dram_peak / 1e3 * i for i in x], color="k", lw=1.5, label=f"DRAM peak (ncu) {dram_peak / 1e3:.2f} TB/s")
    if ceil.get("copy_gbps"):
        ax.plot(x, [ceil["copy_gbps"] / 1e3 * i for i in x], color="k", lw=1, ls="--",
                label=f"measured copy {ceil['copy_gbps'] / 1e3:.2f} TB/s")
    if ceil.get("matmul_tflops"):
        ax.axhline(ceil["matmul_tflops"], color="#2ca02c", lw=1.5,
                   label=f"measured fp16 matmul {ceil['matmul_tflops']:.0f} TFLOP/s (tensor cores)")
    if clock and sms:
        fp32 = 2 * 128 * sms * clock / 1e12
        ax.axhline(fp32, color="#d62728", lw=1, ls="--",
                   label=f"fp32 FMA peak {fp32:.0f} TFLOP/s ({sms:.0f} SMs at {clock / 1e9:.2f} GHz, ncu)")
    for label, shown in NCU_POINTS:
        r = rows.get(label)
        if not r or not r.get("duration_ms") or not r.get("dram_bytes"):
            continue
        impl = {"01": "01 basic", "02": "02 vectorized", "03": "03 flash"}[r["step"]]
        color = shared.COLORS.get(impl, "k")
        tflops = r["flops"] / r["duration_ms"] / 1e9
        marker = "s" if r["mode"] == "bwd" else ("^" if r["causal"] else "o")
        ax.plot(r["flops"] / r["dram_bytes"], tflops, marker=marker, ms=9, color=color, ls="none")
        ax.annotate(f"{shown}: {tflops:.1f}", (r["flops"] / r["dram_bytes"], tflops), textcoords="offset points",
                    xytext=(8, 4), fontsize=8, color=color)
        if r.get("l2_bytes"):
            ax.plot(r["flops"] / r["l2_bytes"], tflops, marker=marker, ms=9, mfc="white", color=color, ls="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*x)
    ax.set_ylim(0.5, 3000)
    ax.set_xlabel("arithmetic intensity (FLOP per byte): filled at DRAM, hollow at L2")
    ax.set_ylabel("TFLOP/s (attention FLOPs over ncu's duration)")
    shape = data["meta"].get("shape", {})
    ax.set_title(f"Steps 01-03 under Nsight Compute: {data['env'].get('gpu', '?')}\n"
                 f"fp16, B={shape.get('batch')}, H={shape.get('heads')}, N={shape.get('n')}, D=64 not causal "
                 "unless labelled", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left")
    source = Path(summary_path).resolve()
    source = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    fig.text(0.01, 0.01, f"From {source} (bash benchmarks/profile_ncu.sh); "
             "every point and ceiling from that one run.", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    if sys.argv[1:] == ["--ncu"]:
        if not NCU_SUMMARY.exists():
            sys.exit(f"no {NCU_SUMMARY.relative_to(ROOT)} yet: run bash benchmarks/profile_ncu.sh on a GPU first")
        print(f"wrote {draw_ncu()}")
        sys.exit(0)
    for p in points():
        extra = f", requested {p['intensity_requested']:.3f}" if "intensity_requested" in p else ""
        print(f"{p['label']:<18} {p['tflops']:7.1f} TFLOP/s  intensity min {p['intensity_min']:.0f}{extra} FLOP/B"
              f"  ({p['file']}, {p['gpu']})")
    print(f"wrote {draw()}")
