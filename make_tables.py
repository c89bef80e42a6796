"""Rewrite every results table in the READMEs from the committed results files.

    python make_tables.py            # rewrite the tables
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
# The post file of a (folder, marker) pair when it is not the folder's README.md: step 03's post is
# in two files, README.md (forward) and BACKWARD.md (backward, host cost, use in models).
POST_FILES = {("03_advanced_optimizations", "backward"): "BACKWARD.md"}


def post_for(folder, marker):
    """The post file that holds a table's markers."""
    return ROOT / folder / POST_FILES.get((folder, marker), "README.md")

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


# ---------------------------------------------------------------- step 03's other experiments
# Each table in step 03's post that is not a benchmark grid: (results file, post file, marker,
# renderer, renderer's keyword arguments). A missing results file or marker leaves the block as is.
STEP03 = "03_advanced_optimizations"


def _fmt(value, fmt):
    return "–" if value is None else fmt.format(value)


def _ratio(other_ms, own_ms):
    """Time ratio other / own ("above 1x: own is faster"), or '–'."""
    return f"{other_ms / own_ms:.2f}x" if other_ms and own_ms else "–"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def _source(data):
    command = data.get("meta", {}).get("command")
    return shared.env_line(data["env"]) + (f" Command: `{command}`." if command else "")


def grid_before_after_table(data, mode):
    """The same-run comparison of the previous and the current step-03 kernel, with cuDNN, in one mode."""
    rows = [r for r in data["rows"] if r["mode"] == mode]
    by = {(r["impl"], r["head_dim"], r["causal"], r["n_q"]): r for r in rows}
    r0 = rows[0]
    what = {"fwd": "Forward", "bwd": "Backward alone (FLOPs: 2.5 times the forward's)"}[mode]
    caption = (f"{what}, {r0['dtype'].replace('float', 'fp')}, B = {r0['batch']}, H = {r0['heads']}; "
               "TFLOP/s count only the visible pairs when causal. The 'vs' columns are time ratios: above 1x, "
               "the current kernel is faster.")
    body = []
    for d, causal, n in sorted({(r["head_dim"], r["causal"], r["n_q"]) for r in rows}):
        now, before, cudnn = (by.get((i, d, causal, n)) for i in ("03 flash", "03 flash (before)", "sdpa cudnn"))
        body.append([str(d), "yes" if causal else "no", str(n),
                     _fmt(before and before.get("tflops"), "{:.1f}"), _fmt(now and now.get("tflops"), "{:.1f}"),
                     _ratio(before and before.get("ms"), now and now.get("ms")),
                     _fmt(cudnn and cudnn.get("tflops"), "{:.1f}"),
                     _ratio(cudnn and cudnn.get("ms"), now and now.get("ms"))])
    header = ["D", "causal", "N", "previous kernel", "current kernel", "current vs previous", "SDPA cuDNN",
              "current vs cuDNN"]
    return _source(data) + "\n\n" + caption + "\n\n" + _table(header, body)


def decode_table(data):
    """Decoding against a KV cache: step 03 (split-KV, packed GQA) against SDPA and FlexAttention."""
    rows = [r for r in data["rows"] if r["section"] == "decode"]
    by = {(r["impl"], r["batch"], r["n_q"], r["n_k"]): r for r in rows}
    r0 = rows[0]
    copy = data["meta"]["ceilings"]["copy_gbps"]
    caption = (f"{data['meta'].get('dtype', '?').replace('bfloat', 'bf')}, {r0['heads']} query heads over "
               f"{r0['kv_heads']} K/V heads, D = {r0['head_dim']}; milliseconds (do_bench median). One query row: no "
               "mask; four rows: causal, lower-right aligned. The 'vs' columns are time ratios: above 1x, 03 flash is "
               f"faster. Last column: the K and V bytes over 03 flash's time, as a share of the same run's "
               f"device-to-device copy rate ({copy:,.0f} GB/s).")
    impls = ["03 flash", "sdpa flash", "sdpa cudnn", "flex attention"]
    body = []
    for batch, n_q, n_k in dict.fromkeys((r["batch"], r["n_q"], r["n_k"]) for r in rows):
        got = {i: by.get((i, batch, n_q, n_k)) for i in impls}
        ms = {i: (r.get("ms") if r else None) for i, r in got.items()}
        share = got["03 flash"] and got["03 flash"].get("kv_share_of_copy")
        body.append([str(batch), str(n_q), f"{n_k:,}"] + [_fmt(ms[i], "{:.3f}") for i in impls]
                    + [_ratio(ms[i], ms["03 flash"]) for i in impls[1:]] + [_fmt(share and share * 100, "{:.0f}%")])
    header = ["batch", "query rows", "KV length", "03 flash", "SDPA flash", "SDPA cuDNN", "FlexAttention",
              "vs SDPA flash", "vs SDPA cuDNN", "vs Flex", "K/V read rate / copy rate"]
    return _source(data) + "\n\n" + caption + "\n\n" + _table(header, body)


def varlen_table(data):
    """A packed batch of variable-length sequences: step 03's varlen path against Flex and padded SDPA."""
    rows = [r for r in data["rows"] if r["section"] == "varlen"]
    r0 = rows[0]
    builds = {r["head_dim"]: r["ms"] for r in rows if r["impl"] == "flex mask build"}
    caption = (f"{data['meta'].get('dtype', '?').replace('bfloat', 'bf')}, {r0['sequences']} causal sequences packed "
               f"into {r0['tokens']:,} tokens (longest {r0['longest']:,}), {r0['heads']} heads; milliseconds "
               "(do_bench median). SDPA runs the same batch padded to the longest sequence. FlexAttention's document "
               "mask is built once per batch, outside the timed calls: "
               + ", ".join(f"{ms:.1f} ms at D = {d}" for d, ms in sorted(builds.items()))
               + ". The 'vs' columns are time ratios: above 1x, 03 flash is faster.")
    impls = ["03 flash varlen", "flex attention (doc mask)", "sdpa flash (padded)", "sdpa cudnn (padded)"]
    by = {(r["impl"], r["head_dim"], r.get("mode")): r.get("ms") for r in rows}
    body = []
    for d in sorted({r["head_dim"] for r in rows}):
        for mode in ("fwd", "fwd+bwd"):
            ms = {i: by.get((i, d, mode)) for i in impls}
            body.append([str(d), mode] + [_fmt(ms[i], "{:.3f}") for i in impls]
                        + [_ratio(ms[i], ms["03 flash varlen"]) for i in impls[1:]])
    header = ["D", "mode", "03 flash varlen", "Flex, document mask", "SDPA flash, padded", "SDPA cuDNN, padded",
              "vs Flex", "vs SDPA flash", "vs SDPA cuDNN"]
    return _source(data) + "\n\n" + caption + "\n\n" + _table(header, body)


def model_path_table(data, dtype):
    """The whole call as a model makes it (views, gradients on), per shape: do_bench and wall clock."""
    rows = [r for r in data["rows"] if r["dtype"] == dtype and r["status"] == "ok"]
    by = {(r["impl"], r["batch"], r["heads"], r["n_q"], r["head_dim"], r["causal"]): r for r in rows}

    def pair(r, a, b, fmt="{:.3f}"):
        return f"{_fmt(r and r.get(a), fmt)} / {_fmt(r and r.get(b), fmt)}"

    body = []
    shapes = list(dict.fromkeys((r["batch"], r["heads"], r["n_q"], r["head_dim"]) for r in rows))
    for causal in (False, True):
        for shape in shapes:
            got = {i: by.get((i, *shape, causal)) for i in
                   ("03 flash", "sdpa flash", "sdpa cudnn", "03 flash (before)", "03 flash (Triton launch)")}
            ours = got["03 flash"]
            if not ours:
                continue
            ratios = []
            for other in ("sdpa flash", "sdpa cudnn"):
                o = got[other]
                ratios.append(f"{_ratio(o and o['fwd_bwd_ms'], ours['fwd_bwd_ms'])} / "
                              f"{_ratio(o and o['wall_fwd_bwd_ms'], ours['wall_fwd_bwd_ms'])}")
            body.append([", ".join(map(str, shape)), "yes" if causal else "no",
                         pair(ours, "fwd_bwd_ms", "wall_fwd_bwd_ms"),
                         pair(got["sdpa flash"], "fwd_bwd_ms", "wall_fwd_bwd_ms"),
                         pair(got["sdpa cudnn"], "fwd_bwd_ms", "wall_fwd_bwd_ms"), *ratios,
                         _fmt(got["03 flash (before)"] and got["03 flash (before)"].get("wall_fwd_bwd_ms"), "{:.3f}"),
                         _fmt(got["03 flash (Triton launch)"] and got["03 flash (Triton launch)"].get("wall_fwd_bwd_ms"),
                              "{:.3f}")])
    caption = (f"**{dtype}**: forward + backward in milliseconds, as `do_bench` median / wall clock (median of five "
               "trials of 100 back-to-back calls); the 'vs' columns are time ratios in the same two measures (above "
               "1x, 03 flash is faster); the last two columns are wall clock: the previous version of this step, "
               "and the current one with every launch through Triton's `kernel[grid](...)`.")
    header = ["B, H, N, D", "causal", "03 flash", "SDPA flash", "SDPA cuDNN", "vs SDPA flash", "vs SDPA cuDNN",
              "previous version", "Triton launch"]
    return caption + "\n\n" + _table(header, body)


def model_path_tables(data, dtype):
    return _source(data) + "\n\n" + model_path_table(data, dtype)


PROFILE_NAMES = {"03 flash": "03 flash", "03 flash (before)": "03 flash, previous version",
                 "sdpa flash": "SDPA flash", "sdpa cudnn": "SDPA cuDNN"}


def profile_table(data, top=3):
    """torch.profiler per implementation: host and device time per call, and the largest host-side ops."""
    meta = data["meta"]
    body = []
    for impl, label in PROFILE_NAMES.items():
        p = meta["profiles"].get(impl)
        if not p:
            continue
        ops = [o for o in p["ops"] if o["name"] != "Activity Buffer Request"
               and not o["name"].startswith("autograd::engine::evaluate_function")]
        ops.sort(key=lambda o: -o["cpu_total_us"])
        cells = []
        for o in ops[:top]:
            name = o["name"] if len(o["name"]) <= 48 else o["name"][:45] + "..."
            count = f" x{o['calls_per_call']:.0f}" if o["calls_per_call"] > 1 else ""
            cells.append(f"`{name}`{count} {o['cpu_total_us']:.0f}")
        body.append([label, f"{p['host_ms_per_call']:.3f}", f"{p['device_ms_per_call']:.3f}", "; ".join(cells)])
    shape = ", ".join(map(str, meta["shape"]))
    caption = (f"torch.profiler over {meta['calls']} forward + backward calls at (B, H, N, D) = ({shape}), "
               f"{'causal' if meta['causal'] else 'not causal'}, {meta['dtype']}, (B, N, H, D) leaves viewed as "
               "(B, H, N, D). Host time per call is wall clock with the profiler on (it adds its own cost); device "
               f"time is the kernels' sum. The last column: the {top} largest host-side ops (autograd's engine "
               "wrappers and the profiler's own buffer requests left out), total microseconds per call, children "
               "included.")
    header = ["implementation", "host ms per call", "GPU kernels ms per call", "largest host-side ops (us per call)"]
    return _source(data) + "\n\n" + caption + "\n\n" + _table(header, body)


def host_cost_table(data):
    """What one small call costs on the host, and where it goes."""
    meta = data["meta"]
    body = [[r["impl"], r["mode"], f"{r['us_per_call']:.1f}"] for r in data["rows"]]
    shape = ", ".join(map(str, meta["shape"]))
    caption = (f"Wall clock per call over 2,000 back-to-back calls at (B, H, N, D) = ({shape}), "
               f"{'causal' if meta['causal'] else 'not causal'}, {meta['dtype']}: the GPU waits for the host here, "
               "so the time is host time. 'python floor' is an empty `torch.autograd.Function` with the same inputs, "
               "outputs and allocations; '03 flash (Triton launch)' is the same code with every launch through "
               "Triton's `kernel[grid](...)`.")
    return _source(data) + "\n\n" + caption + "\n\n" + _table(["implementation", "what is timed", "us per call"], body)


def train_gpt_table(data):
    """The training demo: step time, throughput, attention's share of GPU time and loss, SDPA against ours."""
    configs, runs = data["configs"], data["runs"]
    body = []
    for size, cfg in configs.items():
        for mode in ("eager", "compiled"):
            sdpa = runs.get(f"{size} {mode} sdpa")
            for attention in ("sdpa", "flash"):
                r = runs.get(f"{size} {mode} {attention}")
                if not r:
                    continue
                vs = _ratio(sdpa and sdpa["median_step_ms"], r["median_step_ms"]) if attention == "flash" else "–"
                body.append([size, mode, {"sdpa": "SDPA", "flash": "03 flash"}[attention],
                             f"{r['median_step_ms']:.1f}", f"{r['tokens_per_s'] / 1e3:,.0f}k",
                             f"{r['attention_share'] * 100:.1f}%", f"{r['loss'][-1]:.4f}", vs])
    described = "; ".join(f"{size}: {c['layers']} layers, width {c['dim']}, {c['heads']} heads, context "
                          f"{c['context']}, batch {c['batch']}, {c['steps']} steps" for size, c in configs.items())
    kernels = {k for name, r in runs.items() if name.endswith(" sdpa") for k in r.get("attention_kernels", [])}
    picked = (" SDPA chose cuDNN's kernels in every run (`cudnn_generated_..._sm90_flash_fprop_wgmma_...` and "
              "`..._bprop_...`, named in the results file)." if kernels and all("cudnn" in k for k in kernels) else "")
    caption = (f"{data.get('dtype', '?')} autocast, AdamW, the same seed and batches for both attentions ({described})."
               " Median step time; tokens per second; the share of the GPU's kernel time spent in attention kernels "
               "(torch.profiler, three steps); the loss of the last step. The last column is a time ratio: above 1x, "
               "03 flash's step is faster." + picked)
    header = ["model", "mode", "attention", "median step ms", "tokens/s", "attention share of GPU time",
              "final loss", "vs SDPA"]
    return shared.env_line(data["env"]) + " Command: `python train_gpt.py` (a full GPU run).\n\n" + caption + \
        "\n\n" + _table(header, body)


HOPPER_FAMILIES = {  # column -> the implementations it takes the fastest of (prefixes of their names)
    "fwd": [("step 03", ("03 flash",)), ("step 03, other tiles", ("03 fwd ",)), ("TMA `tl`", ("tma fwd (",)),
            ("Gluon", ("gluon fwd",)), ("FlexAttention", ("flex attention",))],
    "bwd": [("step 03", ("03 flash",)), ("FlexAttention's tiles", ("03 bwd flex",)),
            ("no-spill tiles", ("03 bwd nospill",)), ("one launch", ("fused bwd",)),
            ("atomic dQ", ("03 atomic dq",)), ("FlexAttention", ("flex attention",))],
}


def hopper_table(data, mode, follow_up="results/hopper_experiments_16k.json"):
    """Issue 11's variants against cuDNN, one row per grid point; each row from one run (column 'run')."""
    runs = [data]
    if (ROOT / STEP03 / follow_up).exists():
        runs.append(shared.load_results(ROOT / STEP03 / follow_up))
    body, seen = [], set()
    for number, run in enumerate(runs, 1):
        rows = [r for r in run["rows"] if r["mode"] == mode and r["batch"] == 4]
        for d, causal, n in sorted({(r["head_dim"], r["causal"], r["n_q"]) for r in rows},
                                   key=lambda k: (-k[0], k[2], not k[1])):
            if (d, causal, n) in seen:
                continue
            seen.add((d, causal, n))
            at = [r for r in rows if (r["head_dim"], r["causal"], r["n_q"]) == (d, causal, n)]
            cudnn = next((r for r in at if r["impl"] == "sdpa cudnn" and r.get("ms")), None)
            cells = [str(d), "yes" if causal else "no", str(n), str(number),
                     _fmt(cudnn and cudnn.get("tflops"), "{:.0f}")]
            for _, prefixes in HOPPER_FAMILIES[mode]:
                timed = [r for r in at if r.get("ms") and any(r["impl"].startswith(x) for x in prefixes)]
                best = min(timed, key=lambda r: r["ms"]) if timed else None
                cells.append(_ratio(cudnn and cudnn["ms"], best and best["ms"]))
            body.append(cells)
    env = [f"run {i}: " + shared.env_line(run["env"]) + f" Command: `{run['command']}`." for i, run in
           enumerate(runs, 1)]
    caption = ("bf16, B = 4, H = 32. Each cell: cuDNN's time over the implementation's (above 1x: faster than "
               "cuDNN); a column with several variants shows its fastest at that point. '–': not timed "
               "(FlexAttention's backward failed in these runs, see the text). Every row comes from one run.")
    header = ["D", "causal", "N", "run", "cuDNN TFLOP/s"] + [name for name, _ in HOPPER_FAMILIES[mode]]
    return "\n".join(f"- {line}" for line in env) + "\n\n" + caption + "\n\n" + _table(header, body)


STEP03_EXPERIMENTS = [
    ("results/hopper_experiments.json", "README.md", "hopper_fwd", hopper_table, {"mode": "fwd"}),
    ("results/hopper_experiments.json", "BACKWARD.md", "hopper_bwd", hopper_table, {"mode": "bwd"}),
    ("results/grid_before_after.json", "README.md", "grid_fwd", grid_before_after_table, {"mode": "fwd"}),
    ("results/variants.json", "README.md", "decode", decode_table, {}),
    ("results/variants.json", "README.md", "varlen", varlen_table, {}),
    ("results/grid_before_after.json", "BACKWARD.md", "grid_bwd", grid_before_after_table, {"mode": "bwd"}),
    ("results/host_cost.json", "BACKWARD.md", "host_cost", host_cost_table, {}),
    ("results/model_path_profile.json", "BACKWARD.md", "profile", profile_table, {}),
    ("results/model_path.json", "BACKWARD.md", "model_path_bf16", model_path_tables, {"dtype": "bfloat16"}),
    ("results/model_path.json", "BACKWARD.md", "model_path_fp16", model_path_tables, {"dtype": "float16"}),
    ("results/train_gpt.json", "BACKWARD.md", "train_gpt", train_gpt_table, {}),
]


def step03_experiments():
    """(post path, marker, text) of every step-03 table that is not a benchmark grid."""
    blocks = []
    for results, post, marker, render, kwargs in STEP03_EXPERIMENTS:
        path, readme = ROOT / STEP03 / results, ROOT / STEP03 / post
        if not path.exists() or not readme.exists() or f"<!-- {marker}:start -->" not in readme.read_text():
            print(f"skip {STEP03} {marker}: no {results}, {post} or marker yet")
            continue
        blocks.append((readme, marker, render(shared.load_results(path), **kwargs)))
    return blocks


# ---------------------------------------------------------------- the profiling chapter (04_profiling)
# Its tables: ncu's numbers (results/ncu/summary.json, from `bash benchmarks/profile_ncu.sh` on a GPU and
# `python benchmarks/profile_kernels.py --summarize`), the offline compile (results/excerpts/resources.json,
# `benchmarks/compile_offline.py --excerpts`), and the cost of the causal mask in steps 01 and 02 (step
# 02's results file, which timed both steps in one run). A missing file or marker leaves its block as is.
PROFILING = "04_profiling"
# Hopper's per-SM limits, for the programs per SM that a kernel's resources allow (CUDA programming
# guide, compute capability 9.0): 65,536 registers (allocated per warp in units of 256), 64 warps,
# 32 blocks, 227 KB of shared memory per block at most and 228 KB per SM (1 KB of it reserved per block).
SM90 = {"registers": 65536, "warps": 64, "blocks": 32, "smem": 228 * 1024, "smem_reserved": 1024}


def programs_per_sm(registers, warps, shared_bytes):
    """Programs (blocks) per SM allowed by registers, warps, blocks and shared memory; and the limiter."""
    per_warp = -(-registers * 32 // 256) * 256
    limits = {"registers": SM90["registers"] // (per_warp * warps), "warps": SM90["warps"] // warps,
              "blocks": SM90["blocks"],
              "shared memory": SM90["smem"] // (shared_bytes + SM90["smem_reserved"])}
    limiter = min(limits, key=limits.get)
    return limits[limiter], limiter


def offline_compile_table(data):
    """Each profiled kernel as compiled offline: tiles, registers, spills, shared memory, SASS counts."""
    body = []
    for k in data["kernels"]:
        tiles = " x ".join(str(k[b]) for b in ("BLOCK_M", "BLOCK_N", "BLOCK_D") if b in k)
        programs, limiter = programs_per_sm(k["registers"], k["num_warps"], k["shared_bytes"])
        counts = k.get("sass_counts", {})
        body.append([k["label"], f"`{k['kernel']}`", tiles, str(k["num_warps"]), str(k["registers"]),
                     str(k["spill_store_bytes"]), f"{k['shared_bytes']:,}",
                     f"{programs} ({limiter}), {programs * k['num_warps']} warps",
                     str(counts.get("HGMMA", "–")), str(counts.get("HMMA", "–")), str(counts.get("FFMA", "–")),
                     str(counts.get("SHFL", "–")), str(counts.get("all", "–"))])
    caption = (f"Triton {data['triton']}, {data['target']}, compiled without a GPU at the shapes that "
               "`benchmarks/profile_kernels.py` profiles (command: `TRITON_INTERPRET=0 python "
               "benchmarks/compile_offline.py --excerpts 04_profiling/results/excerpts`, with Triton 3.6.0 on "
               "the path). Registers per thread and spill stores from ptxas; shared memory per program from "
               "Triton; programs per SM from those and Hopper's limits (65,536 registers, 64 warps, 32 blocks, "
               "228 KB of shared memory per SM), the limiting one in brackets; the last five columns count "
               "instructions in the SASS (static, not executed), the last one all of them.")
    header = ["case", "kernel", "tile", "warps", "registers", "spill bytes", "shared bytes",
              "programs per SM", "HGMMA", "HMMA", "FFMA", "SHFL", "all"]
    return caption + "\n\n" + _table(header, body)


def causal_cost_table(data):
    """Steps 01 and 02 from one run: what the causal mask saves each, and step 02's speed-up over step 01."""
    by = {(r["impl"], r["head_dim"], r["causal"], r["n_q"]): r.get("ms") for r in data["rows"]
          if r["dtype"] == "float16" and r["mode"] == "fwd"}
    body = []
    for d, n in sorted({(k[1], k[3]) for k in by if k[0] == "02 vectorized"}):
        ms = {(impl, c): by.get((impl, d, c, n)) for impl in ("01 basic", "02 vectorized") for c in (False, True)}
        if None in ms.values():
            continue
        body.append([str(d), str(n), f"{ms['01 basic', False]:.2f}", f"{ms['01 basic', True]:.2f}",
                     f"{ms['01 basic', True] / ms['01 basic', False]:.2f}",
                     f"{ms['02 vectorized', False]:.2f}", f"{ms['02 vectorized', True]:.2f}",
                     f"{ms['02 vectorized', True] / ms['02 vectorized', False]:.2f}",
                     _ratio(ms["01 basic", False], ms["02 vectorized", False]),
                     _ratio(ms["01 basic", True], ms["02 vectorized", True])])
    r0 = data["rows"][0]
    caption = (f"fp16, B = {r0['batch']}, H = {r0['heads']}, milliseconds (do_bench medians, both steps timed in "
               "the same run of step 02's benchmark). 'causal / full': the causal time over the unmasked one; "
               "the causal mask removes about half the work, so a kernel whose time follows its work gets "
               "about 0.5. The last two columns are time ratios: above 1x, step 02 is faster.")
    header = ["D", "N", "01 full", "01 causal", "01 causal / full", "02 full", "02 causal", "02 causal / full",
              "02 vs 01, full", "02 vs 01, causal"]
    return _source(data) + "\n\n" + caption + "\n\n" + _table(header, body)


def _stalls(kernel):
    return "; ".join(f"{s['reason']} {s['share'] * 100:.0f}%" for s in kernel["top_stalls"]) or "–"


def ncu_rows(data):
    """(case label, kernel summary) per profiled kernel, in launch order."""
    short = {"_bwd_dq_kernel": "dQ", "_bwd_dkdv_kernel": "dK/dV"}
    for row in data["rows"]:
        for k in row["kernels"]:
            name = short.get(k["kernel"])
            yield (f"{row['label']}, {name}" if name else row["label"]), row, k


def ncu_source(data):
    meta = data["meta"]
    shape = meta.get("shape", {})
    return (_source(data) + f" Nsight Compute {meta.get('ncu') or '?'}, clock control "
            f"{meta.get('clock_control') or '?'}; fp16, B = {shape.get('batch')}, H = {shape.get('heads')}, "
            f"N = {shape.get('n')} unless a row says otherwise; one launch per kernel (`bash benchmarks/profile_ncu.sh`).")


def ncu_memory_table(data):
    """Per kernel: duration, TFLOP/s, DRAM traffic and bandwidth, cache hit rates and throughputs."""
    body = []
    for label, row, k in ncu_rows(data):
        tflops = _fmt(row["tflops"], "{:.1f}") if len(row["kernels"]) == 1 else "–"
        body.append([label, _fmt(k["duration_ms"], "{:.3f}"), _fmt(row.get("do_bench_ms") if len(row["kernels"]) == 1
                                                                  else None, "{:.3f}"), tflops,
                     _fmt(k["dram_bytes"] and k["dram_bytes"] / 1e6, "{:,.0f}"), _fmt(k["dram_gbps"], "{:,.0f}"),
                     _fmt(k["dram_pct_of_peak"], "{:.1f}%"), _fmt(k["l1_hit_pct"], "{:.1f}%"),
                     _fmt(k["l2_hit_pct"], "{:.1f}%"), _fmt(k["l1_throughput_pct"], "{:.0f}%"),
                     _fmt(k["l2_throughput_pct"], "{:.0f}%")])
    caption = ("Duration: ncu's `gpu__time_duration` of the one profiled launch; do_bench: the median of the same "
               "call timed without the profiler in the same run. TFLOP/s: the attention FLOPs "
               "(`shared.attention_flops`) over ncu's duration (for the backward, see the roofline). DRAM: bytes "
               "read and written (`dram__bytes_read.sum` + `dram__bytes_write.sum`), their rate, and ncu's "
               "DRAM throughput as a share of peak. L1 and L2: sector hit rates, and each cache's busiest "
               "sub-unit as a share of its peak (ncu's 'L1/TEX Cache Throughput', 'L2 Cache Throughput').")
    header = ["kernel", "ncu ms", "do_bench ms", "TFLOP/s", "DRAM MB", "DRAM GB/s", "DRAM % of peak", "L1 hit",
              "L2 hit", "L1 throughput", "L2 throughput"]
    return ncu_source(data) + "\n\n" + caption + "\n\n" + _table(header, body)


def ncu_warps_table(data):
    """Per kernel: tensor pipe, occupancy, registers, shared memory, issue rate and the main stall reasons."""
    body = []
    for label, _, k in ncu_rows(data):
        body.append([label, _fmt(k["tensor_pipe_pct"], "{:.1f}%"), _fmt(k["achieved_occupancy_pct"], "{:.1f}%"),
                     _fmt(k["theoretical_occupancy_pct"], "{:.1f}%"), _fmt(k["registers_per_thread"], "{:.0f}"),
                     _fmt(k["shared_bytes_per_block"], "{:,.0f}"), _fmt(k["warp_cycles_per_issued"], "{:.1f}"),
                     _stalls(k)])
    caption = ("Tensor pipe: the busiest tensor-core pipe's active cycles as a share of peak (wgmma counts under "
               "`..._gmma_...`, mma.sync under `..._hmma_...`; '–': ncu reported none). Occupancy: warps resident "
               "per SM as a share of 64, achieved (averaged over the run) and theoretical (the launch's limit). "
               "Registers per thread and shared memory per program as launched. Warp cycles per issued "
               "instruction: how long a warp waits, on average, between two of its instructions. Stalls: the "
               "three largest reasons a warp was not issuing, each as a share of all stalled cycles "
               "(`smsp__average_warps_issue_stalled_*`, 'selected' left out).")
    header = ["kernel", "tensor pipe", "achieved occupancy", "theoretical occupancy", "registers", "shared bytes",
              "warp cycles per issue", "top stalls (share of stalled cycles)"]
    return ncu_source(data) + "\n\n" + caption + "\n\n" + _table(header, body)


def ncu_causal_table(data):
    """Steps 01 and 02, full and causal: what changes with the mask, per loop trip and per FLOP."""
    body = []
    for row in data["rows"]:
        if row["step"] not in ("01", "02"):
            continue
        k = row["kernels"][0]
        trips = row.get("loop_iterations")
        per_trip = k["instructions"] / trips if k.get("instructions") and trips else None
        l2_per_flop = k["l2_read_bytes_for_l1"] / row["flops"] if k.get("l2_read_bytes_for_l1") else None
        body.append([row["label"], str(row.get("n")), _fmt(k["duration_ms"], "{:.3f}"), _fmt(trips, "{:,}"),
                     _fmt(per_trip, "{:.0f}"), _fmt(k["l1_hit_pct"], "{:.1f}%"), _fmt(l2_per_flop, "{:.3f}"),
                     _fmt(k["l2_throughput_pct"], "{:.0f}%"), _fmt(k["achieved_occupancy_pct"], "{:.1f}%"),
                     _fmt(k["theoretical_occupancy_pct"], "{:.1f}%"), _fmt(k.get("sm_active_pct"), "{:.0f}%"),
                     _stalls(k)])
    caption = ("Steps 01 and 02 only. Loop trips: passes through the key loop summed over all programs (one key per "
               "trip in step 01, one block of BLOCK_N keys in step 02; counted from the shape, not measured). "
               "Instructions per trip: ncu's executed warp instructions (`smsp__inst_executed.sum`) over the "
               "trips, so each program's set-up and write-back are spread over its trips. L2 to L1 bytes per FLOP: "
               "the sectors L1 read from L2 (`lts__t_sectors_srcunit_tex_op_read.sum`, 32 bytes each) over the "
               "attention FLOPs. SM active: the share of the kernel's cycles in which an SM had at least one "
               "warp resident, averaged over the SMs.")
    header = ["case", "N", "ncu ms", "loop trips", "instructions per trip", "L1 hit", "L2 to L1 bytes per FLOP",
              "L2 throughput", "achieved occupancy", "theoretical occupancy", "SM active", "top stalls"]
    return ncu_source(data) + "\n\n" + caption + "\n\n" + _table(header, body)


PROFILING_TABLES = [  # (results file from the repository root, marker in 04_profiling/README.md, renderer)
    ("04_profiling/results/excerpts/resources.json", "offline_compile", offline_compile_table),
    ("02_vectorized_attention/results/results.json", "causal_cost", causal_cost_table),
    ("04_profiling/results/ncu/summary.json", "ncu_memory", ncu_memory_table),
    ("04_profiling/results/ncu/summary.json", "ncu_warps", ncu_warps_table),
    ("04_profiling/results/ncu/summary.json", "ncu_causal", ncu_causal_table),
]


# The PTX/SASS excerpts the chapter shows, each cut from a compiled kernel by compile_offline.py --excerpts:
# (file, marker). The post shows the file as it is, so an excerpt is never typed by hand.
PROFILING_EXCERPTS = [(f"04_profiling/results/excerpts/{name}.txt", marker) for name, marker in (
    ("step03_forward_wgmma.ptx", "excerpt_wgmma_ptx"), ("step03_forward_wgmma.sass", "excerpt_wgmma_sass"),
    ("step02_d128_causal_loop.ptx", "excerpt_step02_ptx"), ("step02_d128_causal_loop.sass", "excerpt_step02_sass"))]


def profiling_blocks():
    """(post path, marker, text) of the profiling chapter's tables and excerpts."""
    blocks = []
    readme = ROOT / PROFILING / "README.md"
    for excerpt, marker in PROFILING_EXCERPTS:
        path = ROOT / excerpt
        if not path.exists() or not readme.exists() or f"<!-- {marker}:start -->" not in readme.read_text():
            print(f"skip {PROFILING} {marker}: no {excerpt}, README.md or marker yet")
            continue
        blocks.append((readme, marker, "```\n" + path.read_text().rstrip("\n") + "\n```"))
    for results, marker, render in PROFILING_TABLES:
        path = ROOT / results
        if not path.exists() or not readme.exists() or f"<!-- {marker}:start -->" not in readme.read_text():
            print(f"skip {PROFILING} {marker}: no {results}, README.md or marker yet")
            continue
        blocks.append((readme, marker, render(shared.load_results(path))))
    return blocks


def generated_blocks():
    """(README path, marker, text) for every table this script writes, from the results files."""
    blocks = []
    for folder, results, marker, impls, own, others in TABLES:
        path = ROOT / folder / results
        readme = post_for(folder, marker)
        if not path.exists() or not readme.exists() or f"<!-- {marker}:start -->" not in readme.read_text():
            print(f"skip {folder} {marker}: no {results}, README.md or marker yet")
            continue
        data = shared.load_results(path)
        text = shared.env_line(data["env"]) + f" Command: `{data['meta'].get('command', '?')}`.\n\n"
        text += step_tables(data["rows"], impls, own, others)
        blocks.append((readme, marker, text))
    blocks += step02_experiments()
    blocks += step03_experiments()
    blocks += profiling_blocks()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
