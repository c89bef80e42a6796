"""Draw causal_tiles.png: which (query tile, key tile) pairs step 03's forward kernel visits.

Each cell of the grid is one BLOCK_M x BLOCK_N tile of the score matrix. The
forward kernel (`flash_attention_forward_kernel` in flash_attention.py) splits
every program's key loop in two: tiles in [0, full_end) are fully visible and
run without masks, tiles in [full_end, masked_end) cross the causal diagonal
(or the ragged end of Nk) and run with masks, and tiles at or past masked_end
are never loaded. The left panel is causal, N = 1024; the right one is not
causal, N = 1000, where only the ragged last key tile needs a mask.
`tile_kinds` below repeats the kernel's arithmetic for that
split, line for line, so the picture is what the kernel does. No GPU needed:

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
SKIPPED, FULL, MASKED = 0, 1, 2
COLOURS = ["#eeeeee", "#2ca02c", "#ff7f0e"]  # skipped, full (no mask), masked (diagonal / ragged end)


def key_ranges(start_m, n_k, block_m, block_n, causal):
    """(full_end, masked_end) of query tile ``start_m``, as the forward kernel computes them."""
    full_tiles_end = (n_k // block_n) * block_n
    if causal:
        first_row = start_m * block_m
        full_end = min((first_row // block_n) * block_n, full_tiles_end)
        masked_end = min(first_row + block_m, n_k)
    else:
        full_end = full_tiles_end
        masked_end = n_k
    return full_end, masked_end


def tile_kinds(n_q, n_k, block_m, block_n, causal=True):
    """(query tiles, key tiles) array of SKIPPED / FULL / MASKED.

    The kernel's loops are ``range(0, full_end, BLOCK_N)`` (unmasked) and
    ``range(full_end, masked_end, BLOCK_N)`` (masked); a key tile belongs to
    the loop whose range contains its first key.
    """
    q_tiles, k_tiles = -(-n_q // block_m), -(-n_k // block_n)
    kinds = np.full((q_tiles, k_tiles), SKIPPED)
    for start_m in range(q_tiles):
        full_end, masked_end = key_ranges(start_m, n_k, block_m, block_n, causal)
        for start_n in range(0, full_end, block_n):
            kinds[start_m, start_n // block_n] = FULL
        for start_n in range(full_end, masked_end, block_n):
            kinds[start_m, start_n // block_n] = MASKED
    return kinds


def draw_panel(ax, n_q, n_k, block_m, block_n, causal):
    kinds = tile_kinds(n_q, n_k, block_m, block_n, causal)
    counts = [int((kinds == k).sum()) for k in (SKIPPED, FULL, MASKED)]
    # Cells in element coordinates: key tile j spans keys [j*BLOCK_N, (j+1)*BLOCK_N).
    ax.imshow(kinds, cmap=ListedColormap(COLOURS), vmin=0, vmax=2, interpolation="nearest",
              extent=(0, kinds.shape[1] * block_n, kinds.shape[0] * block_m, 0), aspect="auto")
    for x in range(0, kinds.shape[1] * block_n + 1, block_n):
        ax.axvline(x, color="white", linewidth=1.0)
    for y in range(0, kinds.shape[0] * block_m + 1, block_m):
        ax.axhline(y, color="white", linewidth=1.0)
    # The real matrix ends at (n_q, n_k); the causal boundary is key j = query i.
    if causal:
        ax.plot([0, min(n_q, n_k)], [0, min(n_q, n_k)], color="black", linewidth=1.2)
    ax.axvline(n_k, color="black", linestyle=":", linewidth=1.0)
    ax.axhline(n_q, color="black", linestyle=":", linewidth=1.0)
    ax.set_xlabel(f"key index j (tiles of BLOCK_N = {block_n})")
    ax.set_ylabel(f"query index i (tiles of BLOCK_M = {block_m})")
    ax.set_title(f"{'causal' if causal else 'not causal'}, Nq = Nk = {n_q}: {counts[FULL]} full, "
                 f"{counts[MASKED]} masked, {counts[SKIPPED]} skipped of {kinds.size} tiles", fontsize=10)
    return counts


def draw_causal_tiles(path=HERE / "causal_tiles.png", block_m=128, block_n=64):
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    draw_panel(axes[0], 1024, 1024, block_m, block_n, causal=True)
    # Not causal, and 1000 is not a multiple of BLOCK_N: only the ragged last key tile is masked.
    draw_panel(axes[1], 1000, 1000, block_m, block_n, causal=False)
    handles = [Patch(color=COLOURS[FULL], label="full: loaded, no mask (first loop)"),
               Patch(color=COLOURS[MASKED], label="masked: diagonal or ragged end (second loop)"),
               Patch(color=COLOURS[SKIPPED], label="skipped: never loaded"),
               plt.Line2D([], [], color="black", linewidth=1.2, label="causal boundary j = i"),
               plt.Line2D([], [], color="black", linestyle=":", label="end of the matrix (Nq, Nk)")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("Step 03 forward: the (query tile, key tile) pairs the kernel visits, with and "
                 f"without masks (BLOCK_M = {block_m}, BLOCK_N = {block_n})", fontsize=11)
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
