"""Draw causal_tiles.png: which (query tile, key tile) pairs step 03's forward kernel visits, and how.

Each cell of the grid is one BLOCK_M x BLOCK_N tile of the score matrix. For each query tile the
forward kernel (`flash_attention_forward_kernel` in flash_attention.py) asks `visible_ranges` for
four key positions lo <= full_lo <= full_hi <= hi: the tiles of [full_lo, full_hi) are seen whole
by every row of the tile and run first, in a loop without masks; the tiles of [lo, full_lo) (a
window's left edge) and [full_hi, hi) (the causal diagonal, a window's right edge, the ragged end
of Nk) run afterwards in one masked loop (`edge_tile`); keys outside [lo, hi) are never loaded.
The three panels: causal; causal with a sliding window, whose left edge adds masked tiles on the
other side; not causal at a length that is not a multiple of BLOCK_N. The functions below repeat
the kernel's arithmetic line for line (the backward's two kernels call the same `visible_ranges`,
figures.py draws them), so the picture is what the kernel does. No GPU needed:

    python causal_tiles.py            # writes causal_tiles.png beside this file
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

HERE = Path(__file__).resolve().parent
UNBOUNDED = 1 << 29  # flash_attention.UNBOUNDED: a window side with no limit
SKIPPED, FULL, MASKED = 0, 1, 2
COLOURS = ["#eeeeee", "#2ca02c", "#ff7f0e"]  # skipped, full (no mask), masked (an edge of the mask)


def cdiv(a, b):
    return -(-a // b)


def visible_ranges(first_row, last_row, seqlen_k, shift, window_left, window_right, block_n):
    """flash_attention.visible_ranges: (lo, full_lo, full_hi, hi) for rows [first_row, last_row]."""
    lo = max(first_row + shift - window_left, 0)
    hi = min(last_row + shift + window_right + 1, seqlen_k)
    full_lo = max(last_row + shift - window_left, 0)
    full_hi = min(first_row + shift + window_right + 1, seqlen_k)
    lo = (lo // block_n) * block_n
    full_lo = min(max(cdiv(full_lo, block_n) * block_n, lo), max(hi, lo))
    full_hi = max(min((full_hi // block_n) * block_n, hi), full_lo)
    return lo, full_lo, full_hi, hi


def loop_starts(lo, full_lo, full_hi, hi, block):
    """(unmasked tile starts, masked tile starts) in the order the kernel's two loops visit them."""
    unmasked = [full_lo + t * block for t in range(cdiv(full_hi - full_lo, block))]
    left_tiles = cdiv(full_lo - lo, block)
    masked = [lo + t * block if t < left_tiles else full_hi + (t - left_tiles) * block  # edge_tile
              for t in range(left_tiles + cdiv(hi - full_hi, block))]
    return unmasked, masked


def mask_sides(causal, window):
    """(window_left, window_right) as AttentionPlan computes them: -1 or None is unbounded, causal caps right at 0."""
    left, right = (-1, -1) if window is None else window
    left, right = (UNBOUNDED if left == -1 else left), (UNBOUNDED if right == -1 else right)
    return left, (min(right, 0) if causal else right)


def tile_kinds(n_q, n_k, block_m, block_n, causal=True, window=None, lower_right=False):
    """(query tiles, key tiles) array of SKIPPED / FULL / MASKED, as the forward kernel's loops visit them."""
    left, right = mask_sides(causal, window)
    shift = (n_k - n_q) if lower_right else 0
    q_tiles, k_tiles = cdiv(n_q, block_m), cdiv(n_k, block_n)
    kinds = np.full((q_tiles, k_tiles), SKIPPED)
    for pid_m in range(q_tiles):
        first_row = pid_m * block_m
        last_row = min(first_row + block_m, n_q) - 1
        unmasked, masked = loop_starts(*visible_ranges(first_row, last_row, n_k, shift, left, right, block_n),
                                       block_n)
        for start in unmasked:
            kinds[pid_m, start // block_n] = FULL
        for start in masked:
            kinds[pid_m, start // block_n] = MASKED
    return kinds


def draw_panel(ax, n_q, n_k, block_m, block_n, causal, window=None, title=""):
    kinds = tile_kinds(n_q, n_k, block_m, block_n, causal, window)
    counts = [int((kinds == k).sum()) for k in (SKIPPED, FULL, MASKED)]
    # Cells in element coordinates: key tile j spans keys [j*BLOCK_N, (j+1)*BLOCK_N).
    ax.imshow(kinds, cmap=ListedColormap(COLOURS), vmin=0, vmax=2, interpolation="nearest",
              extent=(0, kinds.shape[1] * block_n, kinds.shape[0] * block_m, 0), aspect="auto")
    for x in range(0, kinds.shape[1] * block_n + 1, block_n):
        ax.axvline(x, color="white", linewidth=1.0)
    for y in range(0, kinds.shape[0] * block_m + 1, block_m):
        ax.axhline(y, color="white", linewidth=1.0)
    # The visible band: key j = query i (causal), and j = i - left (the window's left edge).
    if causal:
        ax.plot([0, min(n_q, n_k)], [0, min(n_q, n_k)], color="black", linewidth=1.2)
    if window is not None and window[0] >= 0:
        ax.plot([0, n_k - window[0]], [window[0], n_k], color="black", linewidth=1.2, linestyle="--")
    ax.axvline(n_k, color="black", linestyle=":", linewidth=1.0)
    ax.axhline(n_q, color="black", linestyle=":", linewidth=1.0)
    ax.set_xlabel(f"key index j (tiles of BLOCK_N = {block_n})")
    ax.set_ylabel(f"query index i (tiles of BLOCK_M = {block_m})")
    ax.set_title(f"{title}\n{counts[FULL]} unmasked, {counts[MASKED]} masked, {counts[SKIPPED]} never loaded "
                 f"of {kinds.size}", fontsize=9.5)
    return counts


def draw_causal_tiles(path=HERE / "causal_tiles.png", block_m=128, block_n=64):
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    draw_panel(axes[0], 1024, 1024, block_m, block_n, causal=True, title="causal, N = 1024")
    draw_panel(axes[1], 1024, 1024, block_m, block_n, causal=True, window=(300, 0),
               title="causal, window (300, 0), N = 1024")
    # Not causal, and 1000 is not a multiple of BLOCK_N: only the ragged last key tile is masked.
    draw_panel(axes[2], 1000, 1000, block_m, block_n, causal=False, title="not causal, N = 1000")
    handles = [Patch(color=COLOURS[FULL], label="every row sees every key: no mask, first loop"),
               Patch(color=COLOURS[MASKED], label="on an edge of the mask: one masked loop, after"),
               Patch(color=COLOURS[SKIPPED], label="outside [lo, hi): never loaded"),
               plt.Line2D([], [], color="black", linewidth=1.2, label="causal boundary j = i"),
               plt.Line2D([], [], color="black", linewidth=1.2, linestyle="--", label="window's left edge j = i - 300"),
               plt.Line2D([], [], color="black", linestyle=":", label="end of the matrix (Nq, Nk)")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("Step 03 forward: the (query tile, key tile) pairs the kernel visits, with and without masks "
                 f"(BLOCK_M = {block_m}, BLOCK_N = {block_n})", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "causal_tiles.png",
                        help="the PNG to write (default: causal_tiles.png beside this file, "
                             "the figure the post shows)")
    print(f"wrote {draw_causal_tiles(parser.parse_args().out)}")
