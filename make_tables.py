"""Rewrite every results table in the READMEs from the committed results files.

    python make_tables.py

No number in a post is typed by hand: each table below lives between
``<!-- name:start -->`` and ``<!-- name:end -->`` markers and is regenerated
from ``NN_*/results/*.json``, with the line saying where it was measured.
A missing results file leaves its tables as they are and says so.
"""
from pathlib import Path

import shared

ROOT = Path(__file__).resolve().parent

# (step folder, results file, README marker, implementations in column order, the step's own
# name, compared with). The first entry of each folder also feeds the progression table.
TABLES = [
    ("01_basic_attention", "results/results.json", "results", ["01 basic", "naive torch", "torch sdpa"],
     "01 basic", ["naive torch", "torch sdpa"]),
    ("02_vectorized_attention", "results/results.json", "results",
     ["02 vectorized", "01 basic", "naive torch", "torch sdpa"],
     "02 vectorized", ["01 basic", "naive torch", "torch sdpa"]),
    ("03_advanced_optimizations", "results/forward.json", "results",
     ["03 flash", "sdpa flash", "sdpa cudnn", "flex attention", "sdpa efficient", "naive torch", "02 vectorized"],
     "03 flash", ["sdpa flash", "sdpa cudnn", "flex attention", "naive torch"]),
    ("03_advanced_optimizations", "results/backward.json", "backward",
     ["03 flash", "sdpa flash", "sdpa cudnn", "flex attention"],
     "03 flash", ["sdpa flash", "sdpa cudnn", "flex attention"]),
]
# Step 03's plots are drawn here from its merged results files (its grid ran in parts).
STEP03_PLOTS = {"results/forward.json": "forward", "results/backward.json": "backward"}
# What the series index shows for every step: one representative configuration.
PROGRESSION = {"head_dim": 64, "causal": False, "dtype": "float16", "mode": "fwd"}
PROGRESSION_N = (1024, 4096)


def configurations(rows):
    """The distinct (dtype, mode, head_dim, causal) in the rows, in a stable order."""
    keys = {(r["dtype"], r["mode"], r["head_dim"], r["causal"]) for r in rows}
    return sorted(keys, key=lambda k: (k[0] != "float16", k[1], k[2], k[3]))


def step_tables(rows, impls, own, others, value="tflops", unit="TFLOP/s"):
    """One markdown table per configuration: `value` per implementation, time ratios last."""
    parts = []
    for dtype, mode, head_dim, causal in configurations(rows):
        sel = shared.select(rows, dtype=dtype, mode=mode, head_dim=head_dim, causal=causal)
        present = [i for i in impls if any(r["impl"] == i for r in sel)]
        ratio_to = [o for o in others if o in present and o != own]
        title = f"**{mode}, {dtype}, head dim {head_dim}, {'causal' if causal else 'not causal'}** ({unit}; the 'vs' columns are time ratios: above 1x, {own} is faster)"
        parts.append(title + "\n\n" + shared.pivot_table(sel, present, value=value, fmt="{:.1f}",
                                                         ratio_of=own, ratio_to=ratio_to))
    return "\n\n".join(parts)


def progression_rows():
    lines = ["| step | N | TFLOP/s | vs naive torch | vs torch SDPA / SDPA flash | results file |",
             "|---|---|---|---|---|---|"]
    seen = set()
    for folder, results, _, _, own, _ in TABLES:
        if folder in seen:
            continue
        seen.add(folder)
        path = ROOT / folder / results
        if not path.exists():
            lines.append(f"| {own} | – | coming | – | – | – |")
            continue
        rows = shared.select(shared.load_results(path)["rows"], **PROGRESSION)
        by = {(r["impl"], r["n_q"]): r for r in rows}
        for n in PROGRESSION_N:
            mine = by.get((own, n))
            if not mine or not mine.get("ms"):
                continue
            sdpa = by.get(("sdpa flash", n)) or by.get(("torch sdpa", n))
            naive = by.get(("naive torch", n))

            def ratio(other):
                return f"{other['ms'] / mine['ms']:.2f}x" if other and other.get("ms") else "–"

            lines.append(f"| {own} | {n} | {mine['tflops']:.1f} | {ratio(naive)} | {ratio(sdpa)} | "
                         f"[{folder}/{results}]({folder}/{results}) |")
    return "\n".join(lines)


# Step 02's own experiments, each in its post between its own markers: the block-size and
# warps sweep, and the key loop pipelined with tl.range (a missing file leaves its block as is).
STEP02_SWEEP = ("02_vectorized_attention", "results/sweep02.json", "sweep", "python benchmarks/sweep_step02.py")
STEP02_RANGE = ("02_vectorized_attention", "results/range_stages.json", "range_stages")


def sweep_tables(data):
    """Step 02's sweep, without the mask and with 1 launch-level stage: TFLOP/s and time ratio to step 01."""
    parts = [shared.env_line(data["env"]) + f" Command: `{STEP02_SWEEP[3]}`."]
    rows = [r for r in data["rows"] if not r["causal"] and r["stages"] == 1]
    for head_dim in sorted({r["head_dim"] for r in rows}):
        sel = [r for r in rows if r["head_dim"] == head_dim]
        best = min(sel, key=lambda r: r["ms"])
        by = {(r["block_n"], r["warps"]): r for r in sel}
        warps = sorted({r["warps"] for r in sel})
        lines = [f"**D = {head_dim}, not causal, N = {sel[0]['n']}** (step 01: {sel[0]['ms01']:.1f} ms; "
                 "cells: TFLOP/s and the time ratio to step 01, best in bold)", "",
                 "| BLOCK_N | " + " | ".join(f"{w} warp{'s' if w > 1 else ''}" for w in warps) + " |",
                 "|" + "---|" * (len(warps) + 1)]
        for block_n in sorted({r["block_n"] for r in sel}):
            cells = []
            for w in warps:
                r = by.get((block_n, w))
                cell = f"{r['tflops']:.1f} ({r['speedup_vs_01']:.2f}x)" if r else "–"
                cells.append(f"**{cell}**" if r is best else cell)
            lines.append(f"| {block_n} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def range_stages_tables(data):
    """The tl.range(num_stages=k) experiment: TFLOP/s per LOOP_STAGES, and the compiled kernels' resources."""
    stages = data["meta"]["loop_stages"]
    rows = data["rows"]
    by = {(r["head_dim"], r["causal"], r["n_q"], r["impl"]): r for r in rows}
    names = {s: next(r["impl"] for r in rows if r["loop_stages"] == s and "again" not in r["impl"]) for s in stages}
    head = (["D", "causal", "N"] + [f"{'plain loop' if s == 0 else f'stages={s}'}" for s in stages]
            + ["plain loop, timed again", "fastest tl.range vs plain"])
    lines = [shared.env_line(data["env"]) + f" Command: `{data['meta'].get('command', '?')}`.", "",
             "TFLOP/s (fp16, B=4, H=32); the last column is a time ratio: above 1x, the fastest tl.range loop "
             "beats the plain one.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d, causal, n in sorted({(r["head_dim"], r["causal"], r["n_q"]) for r in rows}):
        cells = [str(d), "yes" if causal else "no", str(n)]
        timed = {s: by.get((d, causal, n, names[s])) for s in stages}
        cells += [f"{r['tflops']:.1f}" if r and r.get("tflops") else "–" for r in timed.values()]
        again = next((r for r in rows if (r["head_dim"], r["causal"], r["n_q"]) == (d, causal, n)
                      and "again" in r["impl"]), None)
        cells.append(f"{again['tflops']:.1f}" if again and again.get("tflops") else "–")
        piped = [(r["ms"], s) for s, r in timed.items() if s > 0 and r and r.get("ms")]
        plain = timed[0]
        if piped and plain and plain.get("ms"):
            ms, best = min(piped)
            cells.append(f"{plain['ms'] / ms:.2f}x (stages={best})")
        else:
            cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    res = data["meta"].get("kernel_resources") or []
    if res:
        dims = sorted({r["head_dim"] for r in res})
        lines += ["", "Compiled kernels, not causal: registers per thread / spills / shared memory bytes", "",
                  "| LOOP_STAGES | " + " | ".join(f"D = {d}" for d in dims) + " |", "|" + "---|" * (len(dims) + 1)]
        for s in stages:
            cells = []
            for d in dims:
                r = next((x for x in res if x["loop_stages"] == s and x["head_dim"] == d and not x["causal"]), None)
                cells.append(f"{r['n_regs']} / {r['n_spills']} / {r['shared_bytes']}" if r else "–")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step02_experiments():
    """Write the sweep and pipelining tables into step 02's post, where their files and markers exist."""
    for (folder, results, marker, *_), render in ((STEP02_SWEEP, sweep_tables), (STEP02_RANGE, range_stages_tables)):
        path, readme = ROOT / folder / results, ROOT / folder / "README.md"
        if not path.exists() or not readme.exists() or f"<!-- {marker}:start -->" not in readme.read_text():
            print(f"skip {folder} {marker}: no {results}, README.md or marker yet")
            continue
        shared.write_between_markers(readme, marker, render(shared.load_results(path)))
        print(f"wrote the {marker} tables into {readme.relative_to(ROOT)}")


def step03_plots():
    from shared.plotting import plot_all

    folder = ROOT / "03_advanced_optimizations"
    for results, name in STEP03_PLOTS.items():
        if not (folder / results).exists():
            continue
        rows = shared.load_results(folder / results)["rows"]
        for dtype, mode, head_dim, causal in configurations(rows):
            sel = shared.select(rows, dtype=dtype, mode=mode, head_dim=head_dim, causal=causal)
            tag = f"{name}_{mode.replace('+', '_')}_{dtype}_d{head_dim}_{'causal' if causal else 'full'}"
            title = f"step 03 {mode}, {dtype}, B=4 H=32 D={head_dim}{' causal' if causal else ''}"
            plot_all(sel, folder / "results", tag, title, baseline="sdpa flash")
        print(f"drew the plots of 03_advanced_optimizations/{results}")


def main():
    for folder, results, marker, impls, own, others in TABLES:
        path = ROOT / folder / results
        readme = ROOT / folder / "README.md"
        if not path.exists() or not readme.exists() or f"<!-- {marker}:start -->" not in readme.read_text():
            print(f"skip {folder} {marker}: no {results}, README.md or marker yet")
            continue
        data = shared.load_results(path)
        text = shared.env_line(data["env"]) + f" Command: `{data['meta'].get('command', '?')}`.\n\n"
        text += step_tables(data["rows"], impls, own, others)
        shared.write_between_markers(readme, marker, text)
        print(f"wrote the {marker} tables into {readme.relative_to(ROOT)}")
    step02_experiments()
    step03_plots()
    shared.write_between_markers(ROOT / "README.md", "progression", progression_rows())
    print("wrote the progression table into README.md")


if __name__ == "__main__":
    main()
