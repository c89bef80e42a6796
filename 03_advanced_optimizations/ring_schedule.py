"""Draw ring_schedule.png: who computes which (query chunk, key chunk) pair of a causal ring, and when.

The whole sequence is cut into 2W chunks; each cell of the 2W x 2W grid is one (query chunk,
key chunk) pair of the causal score matrix. A cell is coloured by the rank that owns its
queries (and so computes it) and labelled with the ring step at which the keys reach that
rank (step s: rank r holds the keys of rank r - s). Left: contiguous shards (rank r holds
chunks 2r and 2r+1); right: zigzag shards (chunks r and 2W-1-r), as ring_attention.py uses.
The title of each panel gives the work per rank in chunk pairs (a diagonal pair counts 1/2).
The zigzag side is drawn from ring_attention.py's own `block_plan`, so the picture is what
the code computes. No GPU needed:

    python ring_schedule.py            # writes ring_schedule.png beside this file (W = 4)
"""
import importlib.util
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no screen needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

HERE = Path(__file__).resolve().parent
RANK_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _ring_module():
    """ring_attention.py's schedule functions (imports shared/torch/triton: the interpreter without a GPU)."""
    name = "step03_ring_attention"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "ring_attention.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def contiguous_cells(world_size):
    """{(query chunk, key chunk): (rank, step, diagonal)} with rank r holding chunks 2r, 2r+1."""
    cells = {}
    for rank in range(world_size):
        for step in range(world_size):
            source = (rank - step) % world_size
            for qc in (2 * rank, 2 * rank + 1):
                for kc in (2 * source, 2 * source + 1):
                    if kc <= qc:
                        cells[(qc, kc)] = (rank, step, kc == qc)
    return cells


def zigzag_cells(world_size):
    """The same for zigzag shards, from ring_attention.block_plan (the call each step makes)."""
    ring = _ring_module()
    cells = {}
    for rank in range(world_size):
        q_chunks = dict(zip((ring.FIRST, ring.SECOND), ring.zigzag_chunks(rank, world_size)))
        for step in range(world_size):
            source = (rank - step) % world_size
            k_chunks = dict(zip((ring.FIRST, ring.SECOND), ring.zigzag_chunks(source, world_size)))
            q_half, k_half, _ = ring.block_plan(rank, source, causal=True)
            for qc in (q_chunks.values() if q_half == ring.ALL else [q_chunks[q_half]]):
                for kc in (k_chunks.values() if k_half == ring.ALL else [k_chunks[k_half]]):
                    if kc <= qc:  # inside a causal call the mask removes kc > qc
                        cells[(qc, kc)] = (rank, step, kc == qc)
    return cells


def work_per_rank(cells, world_size):
    work = [0.0] * world_size
    for rank, _, diagonal in cells.values():
        work[rank] += 0.5 if diagonal else 1.0
    return work


def draw_panel(ax, cells, world_size, title):
    n = 2 * world_size
    for (qc, kc), (rank, step, diagonal) in cells.items():
        ax.add_patch(Rectangle((kc, qc), 1, 1, facecolor=RANK_COLOURS[rank], edgecolor="white",
                               hatch="//" if diagonal else None, alpha=0.85))
        ax.text(kc + 0.5, qc + 0.5, str(step), ha="center", va="center", fontsize=9, color="white",
                fontweight="bold")
    for qc in range(n):
        for kc in range(qc + 1, n):
            ax.add_patch(Rectangle((kc, qc), 1, 1, facecolor="#eeeeee", edgecolor="white"))
    ax.set_xlim(0, n)
    ax.set_ylim(n, 0)
    ax.set_aspect("equal")
    ax.set_xticks([i + 0.5 for i in range(n)], [str(i) for i in range(n)])
    ax.set_yticks([i + 0.5 for i in range(n)], [str(i) for i in range(n)])
    ax.set_xlabel("key chunk")
    ax.set_ylabel("query chunk")
    work = work_per_rank(cells, world_size)
    ax.set_title(f"{title}\nwork per rank (chunk pairs): " + ", ".join(f"{w:g}" for w in work), fontsize=10)
    return work


def draw_ring_schedule(path=HERE / "ring_schedule.png", world_size=4):
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.8))
    draw_panel(axes[0], contiguous_cells(world_size), world_size,
               "contiguous shards: rank r holds chunks 2r, 2r+1")
    draw_panel(axes[1], zigzag_cells(world_size), world_size,
               f"zigzag shards: rank r holds chunks r, {2 * world_size - 1}-r")
    handles = [Patch(color=RANK_COLOURS[r], label=f"rank {r}") for r in range(world_size)]
    handles += [Patch(facecolor="white", edgecolor="black", hatch="//", label="diagonal (masked) pair"),
                Patch(color="#eeeeee", label="skipped (above the diagonal)")]
    fig.legend(handles=handles, loc="lower center", ncol=world_size + 2, fontsize=9, frameon=False)
    fig.suptitle(f"Causal ring attention on W = {world_size}: who computes each chunk pair, "
                 "and at which ring step (the number)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(f"wrote {draw_ring_schedule()}")
