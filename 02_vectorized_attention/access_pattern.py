"""Draw access_pattern.png: how steps 01 and 02 read K for one query row.

Two panels of the same K matrix (keys down, head-dim lanes across), each cell
coloured by the `tl.load` that reads it, in the order the program issues them.
Step 01 reads one key row per load, one after another; step 02 reads a whole
BLOCK_N x D tile per load. The V loads (issued beside each K load) are left out.
No GPU needed:

    python access_pattern.py                       # writes access_pattern.png beside this file
    python vectorized_attention.py --figure-only   # the same
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402

HERE = Path(__file__).resolve().parent


def draw_access_pattern(path=HERE / "access_pattern.png", n_k=40, head_dim=16, block_n=16):
    """Draw the two panels for a small K (n_k x head_dim) and save them to ``path``.

    Sizes are shrunk so every cell shows: the real kernel uses BLOCK_N = 32
    for D = 64 (see ``block_n_for``), the picture is the same.
    """
    keys = np.arange(n_k)
    order01 = np.repeat(keys[:, None], head_dim, axis=1)  # load index of each cell: its key
    order02 = np.repeat((keys // block_n)[:, None], head_dim, axis=1)  # its key block
    n_blocks = int(order02.max()) + 1

    fig, axes = plt.subplots(1, 2, figsize=(10, 6.2))
    panels = [
        (axes[0], order01, n_k,
         f"step 01: one key row per load\n{n_k} K loads (+{n_k} V loads), one after another",
         plt.get_cmap("viridis")(np.linspace(0, 1, n_k))),
        (axes[1], order02, n_blocks,
         f"step 02: one BLOCK_N x D tile per load (BLOCK_N={block_n})\n"
         f"{n_blocks} K loads (+{n_blocks} V loads); the last tile is masked",
         plt.get_cmap("viridis")(np.linspace(0, 1, n_blocks))),
    ]
    for ax, order, n_loads, title, colours in panels:
        cmap = ListedColormap(colours)
        norm = BoundaryNorm(np.arange(n_loads + 1) - 0.5, n_loads)
        image = ax.imshow(order, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest",
                          extent=(-0.5, head_dim - 0.5, n_k - 0.5, -0.5))
        # thin grid lines between cells, thick ones between loads
        for x in np.arange(head_dim + 1) - 0.5:
            ax.axvline(x, color="white", linewidth=0.3)
        for y in np.arange(n_k + 1) - 0.5:
            boundary = y in (-0.5, n_k - 0.5) or order[int(y - 0.5), 0] != order[int(y + 0.5), 0]
            ax.axhline(y, color="white" if not boundary else "black",
                       linewidth=2.0 if boundary and n_loads < n_k else 0.3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("head-dim lane d (D elements per key row)")
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
        bar.set_label("load instruction, in issue order")
        ticks = range(0, n_loads, max(1, n_loads // 8))
        bar.set_ticks(list(ticks))
    for ax in axes:
        ax.set_ylabel("key j (row of K)")
    for b in range(n_blocks):  # name each tile load in place
        rows = min(block_n, n_k - b * block_n)
        axes[1].text(head_dim / 2 - 0.5, b * block_n + rows / 2 - 0.5, f"tl.load #{b}: {rows} x {head_dim}",
                     ha="center", va="center", fontsize=10, color="white" if b < n_blocks - 1 else "black")
    # the masked tail of the last tile: lanes that exist in the tile but read nothing
    tail = n_blocks * block_n - n_k
    if tail:
        axes[1].add_patch(plt.Rectangle((-0.5, n_k - 0.5), head_dim, tail, fill=False, hatch="//",
                                        edgecolor="grey", clip_on=False))
        axes[1].set_ylim(n_blocks * block_n - 0.5, -0.5)
        axes[1].text(head_dim / 2 - 0.5, n_k - 0.5 + tail / 2,
                     f"masked: keys {n_k}..{n_blocks * block_n - 1}\n"
                     "(past Nk, read nothing)", ha="center", va="center", fontsize=8, color="dimgrey")
    fig.suptitle(f"Reading K for one query row (Nk={n_k}, D={head_dim}): "
                 "same bytes, far fewer and wider loads", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "access_pattern.png",
                        help="the PNG to write (default: access_pattern.png beside this file, "
                             "the figure the post shows)")
    print(f"wrote {draw_access_pattern(parser.parse_args().out)}")
