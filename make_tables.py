"""Rewrite every results table in the READMEs from the committed results files.

    python make_tables.py            # rewrite the tables (and redraw step 03's plots)
    python make_tables.py --check    # only say whether every table is current (exit 1 if not)

No number in a post is typed by hand: each table below lives between
``<!-- name:start -->`` and ``<!-- name:end -->`` markers and is regenerated
from ``NN_*/results/*.json``, with the line saying where it was measured.
A missing results file leaves its tables as they are and says so.
"""
import argparse
import re
import sys
import textwrap
from pathlib import Path

import shared

ROOT = Path(__file__).resolve().parent

# (step folder, results file, README marker, implementations in column order, the step's own
# name, compared with). The first entry of each folder also feeds the progression table.
TABLES = [
    ("01_basic_attention", "results/results.json", "results",
     ["01 basic", "naive torch", "torch sdpa", "sdpa flash", "sdpa cudnn"],
     "01 basic", ["naive torch", "torch sdpa", "sdpa flash", "sdpa cudnn"]),
    ("02_vectorized_attention", "results/results.json", "results",
     ["02 vectorized", "01 basic", "naive torch", "torch sdpa", "sdpa flash", "sdpa cudnn"],
     "02 vectorized", ["01 basic", "naive torch", "torch sdpa", "sdpa flash", "sdpa cudnn"]),
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
# The progression's baselines, in column order, with their column titles. Each step's ratios are
# against the rows of its own results file: baselines timed in the same run, on the same GPU.
# Every step times the first three (shared.standard_baselines); "torch sdpa" (SDPA choosing its
# own backend) is what steps 01 and 02 timed before, shown while their committed runs have it.
PROGRESSION_BASELINES = [
    ("naive torch", "vs naive torch"),
    ("sdpa flash", "vs SDPA flash"),
    ("sdpa cudnn", "vs SDPA cuDNN"),
    ("torch sdpa", "vs SDPA, own backend choice"),
]
LEGACY_BASELINES = ("torch sdpa",)

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
    """The README's progression: caption and table, every ratio from within one results file."""
    entries, seen = [], set()  # (step, N, TFLOP/s, {baseline: ratio}, GPU, results file)
    for folder, results, _, _, own, _ in TABLES:
        if folder in seen:
            continue
        seen.add(folder)
        path = ROOT / folder / results
        if not path.exists():
            entries.append((own, None, None, {}, None, f"{folder}/{results}"))
            continue
        data = shared.load_results(path)
        by = {(r["impl"], r["n_q"]): r for r in shared.select(data["rows"], **PROGRESSION)}
        for n in PROGRESSION_N:
            mine = by.get((own, n))
            if not mine or not mine.get("ms"):
                continue
            ratios = {impl: f"{by[impl, n]['ms'] / mine['ms']:.2f}x" for impl, _ in PROGRESSION_BASELINES
                      if by.get((impl, n)) and by[impl, n].get("ms")}
            gpu = data["env"].get("gpu", "?")
            entries.append((own, n, mine["tflops"], ratios, gpu, f"{folder}/{results}"))
    measured = [e for e in entries if e[1] is not None]
    columns = [(impl, title) for impl, title in PROGRESSION_BASELINES if any(impl in e[3] for e in measured)]
    f = PROGRESSION
    caption = (f"Forward pass, {f['dtype'].replace('float', 'fp')}, B=4, H=32, D={f['head_dim']}, "
               f"{'causal' if f['causal'] else 'not causal'}. Each ratio is a time ratio (above 1x, the step "
               "is faster) against a baseline timed in the same run as the step, on the same GPU; no ratio "
               "mixes two runs or two GPUs. SDPA flash and SDPA cuDNN are `F.scaled_dot_product_attention` "
               "forced to one backend.")
    gpus = sorted({e[4] for e in measured})
    if len(gpus) > 1:
        caption += f" The rows come from {len(gpus)} different GPUs: compare their ratios, not their TFLOP/s."
    lacking = {}  # the current baselines some committed run did not time -> those steps
    for impl, title in columns:
        name = title.removeprefix("vs ")
        for own, _, _, ratios, _, _ in measured:
            if impl not in ratios and impl not in LEGACY_BASELINES and own not in lacking.get(name, []):
                lacking.setdefault(name, []).append(own)
    if lacking:
        steps = list(dict.fromkeys(s for owns in lacking.values() for s in owns))
        runs = "run" if len(steps) == 1 else "runs"
        caption += (f" The committed {runs} of {' and '.join(steps)} did not time {' and '.join(lacking)} "
                    "(\"–\"); every step times them now, and the next full run "
                    "(`bash benchmarks/reproduce.sh`) fills those cells.")
    legacy = [own for own, _, _, ratios, _, _ in measured if any(i in ratios for i in LEGACY_BASELINES)]
    if legacy:
        caption += (f" \"Own backend choice\" is plain SDPA, which the committed runs of "
                    f"{' and '.join(dict.fromkeys(legacy))} timed; which backend it picked is not recorded.")
    header = ["step", "N", "TFLOP/s"] + [title for _, title in columns] + ["GPU", "results file"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for own, n, tflops, ratios, gpu, file in entries:
        if n is None:
            table.append("| " + " | ".join([own, "–", "coming"] + ["–"] * (len(columns) + 2)) + " |")
            continue
        cells = [own, str(n), f"{tflops:.1f}"] + [ratios.get(impl, "–") for impl, _ in columns]
        table.append("| " + " | ".join(cells + [gpu, f"[{file}]({file})"]) + " |")
    caption = textwrap.fill(caption, 100, break_long_words=False, break_on_hyphens=False)
    return caption + "\n\n" + "\n".join(table)


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
    """(README path, marker, text) of the sweep and pipelining tables in step 02's post."""
    blocks = []
    for (folder, results, marker, *_), render in ((STEP02_SWEEP, sweep_tables), (STEP02_RANGE, range_stages_tables)):
        path, readme = ROOT / folder / results, ROOT / folder / "README.md"
        if not path.exists() or not readme.exists() or f"<!-- {marker}:start -->" not in readme.read_text():
            print(f"skip {folder} {marker}: no {results}, README.md or marker yet")
            continue
        blocks.append((readme, marker, render(shared.load_results(path))))
    return blocks


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


def generated_blocks():
    """(README path, marker, text) for every table this script writes, from the results files."""
    blocks = []
    for folder, results, marker, impls, own, others in TABLES:
        path = ROOT / folder / results
        readme = ROOT / folder / "README.md"
        if not path.exists() or not readme.exists() or f"<!-- {marker}:start -->" not in readme.read_text():
            print(f"skip {folder} {marker}: no {results}, README.md or marker yet")
            continue
        data = shared.load_results(path)
        text = shared.env_line(data["env"]) + f" Command: `{data['meta'].get('command', '?')}`.\n\n"
        text += step_tables(data["rows"], impls, own, others)
        blocks.append((readme, marker, text))
    blocks += step02_experiments()
    blocks.append((ROOT / "README.md", "progression", progression_rows()))
    return blocks


def current_block(readme: Path, marker: str):
    """What stands between a README's markers now (None without markers)."""
    match = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", readme.read_text(), re.S)
    return match.group(1) if match else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; list the tables that differ from the results files "
                             "(exit status 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = [(readme, marker) for readme, marker, text in generated_blocks()
                 if current_block(readme, marker) != text.strip()]
        for readme, marker in stale:
            print(f"stale: the {marker} table of {readme.relative_to(ROOT)}")
        print("every table is current" if not stale else "run `python make_tables.py` to regenerate them")
        return 1 if stale else 0
    for readme, marker, text in generated_blocks():
        shared.write_between_markers(readme, marker, text)
        print(f"wrote the {marker} table(s) into {readme.relative_to(ROOT)}")
    step03_plots()
    return 0


if __name__ == "__main__":
    sys.exit(main())
