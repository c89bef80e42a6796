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
    step03_plots()
    shared.write_between_markers(ROOT / "README.md", "progression", progression_rows())
    print("wrote the progression table into README.md")


if __name__ == "__main__":
    main()
