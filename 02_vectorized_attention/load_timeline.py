"""Draw load_timeline.png: when one program of steps 01 and 02 loads, waits and computes.

    python load_timeline.py                        # writes load_timeline.png beside this file
    python vectorized_attention.py --figure-only   # the same

A schematic, not a measurement. Each row is one program (one warp) walking its
keys; bars on the "loads" line run from a load's issue to the arrival of its data,
bars on the "compute" line are the dot products, softmax update and weighted sum.
The latencies are assumptions chosen to make the shape visible (stated on the
figure): a memory round trip of ROUND_TRIP time units, COMPUTE_01 units of work
per key in step 01, COMPUTE_02 per block of keys in step 02. What the figure
shows holds for any such numbers: step 01 pays a round trip per key, the plain
step 02 loop one per block, and a pipelined loop (loads of block j + 1 issued
before block j is computed) overlaps the round trip with the previous block's
work. The SM also hides waits by running other programs' warps meanwhile, which
no single row shows.
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent

ROUND_TRIP = 6.0  # assumed: issue to arrival of a load, time units
COMPUTE_01 = 1.0  # assumed: step 01's work per key (one dot product, one update)
COMPUTE_02 = 3.0  # assumed: step 02's work per block of BLOCK_N keys
BLOCK_N = 32
HORIZON = 40.0


def schedule(compute, stages, horizon=HORIZON, round_trip=ROUND_TRIP):
    """Issue times of the loads, and (start, end) of each iteration's compute.

    ``stages`` = 1: iteration j issues its own loads when it starts, waits, computes.
    ``stages`` = s > 1: a prologue issues the loads of iterations 0 .. s-2, and iteration j
    issues those of iteration j + s - 1 when it starts, so up to s - 1 loads are in flight
    while a block is computed. Iteration j computes once its own loads have arrived.
    """
    issue = {i: 0.0 for i in range(stages - 1)}  # prologue (empty when stages = 1)
    spans, t, j = [], 0.0, 0
    while t < horizon:
        issue[j + stages - 1] = t
        begin = max(t, issue[j] + round_trip)
        spans.append((begin, begin + compute))
        t, j = begin + compute, j + 1
    return [issue[i] for i in sorted(issue)], spans


def draw_load_timeline(path=HERE / "load_timeline.png"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [
        ("step 01: one key per round trip", COMPUTE_01, 1, 1),
        ("step 02, plain loop: one block of keys per round trip", COMPUTE_02, 1, BLOCK_N),
        ("step 02, tl.range(..., num_stages=2): next block's loads\nissued before this block is computed",
         COMPUTE_02, 2, BLOCK_N),
    ]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 6.2), sharex=True)
    load_color, compute_color, wait_color = "#4C72B0", "#DD8452", "#DDDDDD"
    for ax, (title, compute, stages, keys_per_iter) in zip(axes, rows):
        issue, spans = schedule(compute, stages)
        # upper line: loads in flight (when pipelined, two overlap: drawn on alternate lanes)
        for j, a in enumerate(issue):
            lane = 1.55 + 0.25 * (j % stages)
            ax.broken_barh([(a, ROUND_TRIP)], (lane, 0.2), facecolors=load_color, edgecolor="white", linewidth=0.5)
        # lower line: the warp, computing or waiting
        t = 0.0
        for s, e in spans:
            if s > t:
                ax.broken_barh([(t, s - t)], (0.3, 0.8), facecolors=wait_color, hatch="///", edgecolor="#999999",
                               linewidth=0.0)
            ax.broken_barh([(s, e - s)], (0.3, 0.8), facecolors=compute_color, edgecolor="white", linewidth=0.5)
            t = e
        done = sum(1 for _, e in spans if e <= HORIZON) * keys_per_iter
        ax.set_title(f"{title}   (keys finished by t = {HORIZON:.0f}: {done})", fontsize=9, loc="left")
        ax.set_yticks([0.7, 1.55 + 0.125 * stages])
        ax.set_yticklabels(["warp", "loads in flight"], fontsize=8)
        ax.set_ylim(0, 2.3 + 0.25 * (stages - 1))
        ax.set_xlim(0, HORIZON)
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1].set_xlabel("time (arbitrary units)")
    handles = [Patch(color=load_color, label="K and V loads, issue to arrival"),
               Patch(color=compute_color, label="compute: scores, softmax update, weighted sum"),
               Patch(facecolor=wait_color, hatch="///", edgecolor="#999999", label="waiting for data")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Schematic, not measured. Assumed: memory round trip = "
                 f"{ROUND_TRIP:g} units; compute = {COMPUTE_01:g} per key (step 01), "
                 f"{COMPUTE_02:g} per block of {BLOCK_N} keys (step 02)", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(f"wrote {draw_load_timeline()}")
