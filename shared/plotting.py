"""The series' plots, drawn from result rows and saved as PNG.

Every function takes rows already narrowed to one configuration (one head
dim, causal or not, one dtype and mode; see ``benchmark_utils.select``), draws
one line per implementation in its stable colour, and returns the path it wrote.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no screen needed
import matplotlib.pyplot as plt  # noqa: E402

from .baselines import COLORS  # noqa: E402


def _series(rows, value, x="n_q"):
    """{impl: ([x...], [value...])} over the rows that measured something."""
    out = {}
    for r in sorted(rows, key=lambda r: r[x]):
        if r.get(value) is not None:
            xs, ys = out.setdefault(r["impl"], ([], []))
            xs.append(r[x])
            ys.append(r[value])
    return out


def _finish(fig, ax, title, xlabel, ylabel, path):
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _line(ax, impl, xs, ys, **kwargs):
    ax.plot(xs, ys, marker="o", label=impl, color=COLORS.get(impl), **kwargs)


def plot_performance(rows, path, title="", value="tflops"):
    """Throughput (or time, with value="ms") against sequence length, one line per implementation."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for impl, (xs, ys) in _series(rows, value).items():
        _line(ax, impl, xs, ys)
    ax.set_xscale("log", base=2)
    if value == "ms":
        ax.set_yscale("log")
    label = {"tflops": "TFLOP/s (higher is better)", "ms": "time, ms (lower is better)"}.get(value, value)
    return _finish(fig, ax, title, "sequence length N", label, path)


def plot_speedup(rows, path, baseline="naive torch", title=""):
    """Each implementation's speed-up over ``baseline`` (time ratio) against sequence length."""
    base = {r["n_q"]: r["ms"] for r in rows if r["impl"] == baseline and r.get("ms")}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for impl, (xs, ys) in _series(rows, "ms").items():
        pts = [(x, base[x] / y) for x, y in zip(xs, ys) if x in base]
        if pts and impl != baseline:
            _line(ax, impl, *zip(*pts))
    ax.axhline(1.0, color=COLORS.get(baseline, "k"), linestyle="--", label=f"{baseline} = 1")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    return _finish(fig, ax, title, "sequence length N", f"speed-up over {baseline}", path)


def plot_memory(rows, path, title=""):
    """Peak GPU memory against sequence length; out-of-memory points marked with x."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for impl, (xs, ys) in _series(rows, "peak_mem_gib").items():
        _line(ax, impl, xs, ys)
    for r in rows:
        if r["status"] == "oom":
            ax.scatter([r["n_q"]], [ax.get_ylim()[1]], marker="x", color=COLORS.get(r["impl"], "k"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    return _finish(fig, ax, title + " (x: out of memory)", "sequence length N", "peak memory, GiB", path)


def plot_scaling(rows, path, title=""):
    """Time against sequence length on log-log axes, with an N^2 guide line."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = _series(rows, "ms")
    for impl, (xs, ys) in series.items():
        _line(ax, impl, xs, ys)
    if series:
        xs, ys = max(series.values(), key=lambda s: len(s[0]))
        guide = [ys[0] * (x / xs[0]) ** 2 for x in xs]
        ax.plot(xs, guide, "k:", label="∝ N² guide")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    return _finish(fig, ax, title, "sequence length N", "time, ms", path)


def plot_all(rows, out_dir, tag, title, baseline="naive torch"):
    """The four standard plots for one configuration; returns their paths."""
    out_dir = Path(out_dir)
    return [
        plot_performance(rows, out_dir / f"performance_{tag}.png", title),
        plot_speedup(rows, out_dir / f"speedup_{tag}.png", baseline, title),
        plot_memory(rows, out_dir / f"memory_{tag}.png", title),
        plot_scaling(rows, out_dir / f"scaling_{tag}.png", title),
    ]
