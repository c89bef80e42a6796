"""Draw the step-03 post's diagrams: what sits where, the backward's work split, and a wgmma timeline.

    python figures.py                   # writes dataflow.png, backward_split.png, wgmma_timeline.png here
    python figures.py --only timeline   # one of: dataflow, backward, timeline

  * dataflow.png: one forward program at D = 64 as Triton 3.6 compiles it for sm_90 (read from
    the TTGIR/PTX that `benchmarks/compile_offline.py --dump` writes): Q copied once into shared
    memory, K and V in 3-stage shared-memory rings filled by cp.async, S, P and the accumulator
    in the registers of two warpgroups of 64 rows, both products on wgmma.
  * backward_split.png: which tiles the dQ kernel's programs (one per query block, walking key
    blocks) and the dK/dV kernel's programs (one per key block, walking query blocks) visit,
    unmasked or masked, for a causal sliding window; computed with causal_tiles.py's copy of the
    kernels' `visible_ranges` arithmetic and the D = 64 tile sizes of BWD_CONFIGS.
  * wgmma_timeline.png: a SCHEMATIC (durations illustrative, not measured) of how this kernel waits
    for each wgmma, against FlashAttention-3's ping-pong schedule of two warpgroups.

No GPU needed; the pictures depend on nothing measured.
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no screen needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle  # noqa: E402

import causal_tiles as tiles  # noqa: E402  (beside this file)

HERE = Path(__file__).resolve().parent
GREEN, ORANGE, GREY = tiles.COLOURS[tiles.FULL], tiles.COLOURS[tiles.MASKED], tiles.COLOURS[tiles.SKIPPED]
BLUE, PURPLE, RED = "#1f77b4", "#9467bd", "#d62728"


# ----------------------------------------------------------------------------- dataflow
def box(ax, x, y, w, h, text, colour, fontsize=8.5, alpha=0.18, weight="normal"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01,rounding_size=0.08",
                                facecolor=colour, edgecolor=colour, alpha=alpha, linewidth=1.5))
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01,rounding_size=0.08",
                                facecolor="none", edgecolor=colour, linewidth=1.5))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, weight=weight)


def arrow(ax, start, end, text="", colour="black", text_offset=(0, 0.12), style="-|>", fontsize=8):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=colour, linewidth=1.4))
    if text:
        ax.text((start[0] + end[0]) / 2 + text_offset[0], (start[1] + end[1]) / 2 + text_offset[1], text,
                ha="center", va="center", fontsize=fontsize, color=colour)


def draw_dataflow(path=HERE / "dataflow.png"):
    fig, ax = plt.subplots(figsize=(13, 6.6))
    ax.set_xlim(0, 13)
    ax.set_ylim(0, 6.6)
    ax.axis("off")
    # HBM
    box(ax, 0.2, 0.6, 2.2, 5.4, "", "#7f7f7f", alpha=0.08)
    ax.text(1.3, 5.75, "HBM (global memory)", ha="center", fontsize=10, weight="bold")
    box(ax, 0.45, 4.5, 1.7, 0.8, "Q  (B, H, N, D)\nread once", BLUE)
    box(ax, 0.45, 3.3, 1.7, 0.8, "K  (B, Hkv, N, D)", PURPLE)
    box(ax, 0.45, 2.1, 1.7, 0.8, "V  (B, Hkv, N, D)", PURPLE)
    box(ax, 0.45, 0.9, 1.7, 0.8, "O, lse\nwritten once", RED)
    # the SM
    box(ax, 3.0, 0.3, 9.8, 6.0, "", "#7f7f7f", alpha=0.05)
    ax.text(7.9, 6.0, "one SM: one program of 8 warps (BLOCK_M = 128, BLOCK_N = 64, D = 64); "
            "125 registers/thread, so two programs fit", ha="center", fontsize=9.5, weight="bold")
    # shared memory
    box(ax, 3.3, 2.0, 3.4, 3.7, "", "#2ca02c", alpha=0.06)
    ax.text(5.0, 5.4, "shared memory: 64 KiB per program", ha="center", fontsize=9, weight="bold")
    box(ax, 3.55, 4.35, 2.9, 0.8, "Q tile 128 x 64 (16 KiB)\nttg.local_alloc: wgmma operand A", BLUE)
    for i in range(3):
        box(ax, 3.55 + i * 0.98, 3.15, 0.92, 0.8, f"K\nstage {i}", PURPLE, fontsize=8)
        box(ax, 3.55 + i * 0.98, 2.15, 0.92, 0.8, f"V\nstage {i}", PURPLE, fontsize=8)
    ax.text(5.0, 1.78, "K, V: 3-stage rings of 64 x 64 tiles (8 KiB each)", ha="center", fontsize=7.5)
    # registers: two warpgroups
    for wg, y in ((0, 3.45), (1, 0.65)):
        box(ax, 7.4, y, 5.1, 2.35, "", "#ff7f0e", alpha=0.06)
        ax.text(9.95, y + 2.1, f"registers of warpgroup {wg} (warps {4 * wg}-{4 * wg + 3}): "
                f"query rows {64 * wg}-{64 * wg + 63}", ha="center", fontsize=8.5, weight="bold")
        box(ax, 7.6, y + 1.05, 2.2, 0.8, "S = Q K^T  64 x 64 fp32\nsoftmax: max, exp2, sum", ORANGE, fontsize=8)
        box(ax, 10.1, y + 1.05, 2.2, 0.8, "P = exp2(S - m)\nrounded to bf16/fp16", ORANGE, fontsize=8)
        box(ax, 7.6, y + 0.15, 2.2, 0.7, "acc 64 x 64 fp32\n(+= P V, rescaled by alpha)", RED, fontsize=8)
        box(ax, 10.1, y + 0.15, 2.2, 0.7, "m, l: 64 fp32 each", RED, fontsize=8)
        arrow(ax, (10.1, y + 1.2), (9.8, y + 0.7), "", RED)
    # copies
    arrow(ax, (2.15, 4.9), (3.55, 4.75), "once", BLUE, (0, 0.15))
    arrow(ax, (2.15, 3.7), (3.55, 3.55), "cp.async", PURPLE, (0, 0.15))
    arrow(ax, (2.15, 2.5), (3.55, 2.55), "cp.async", PURPLE, (0, 0.15))
    # wgmma
    arrow(ax, (6.45, 4.85), (7.6, 4.95), "", "black")
    arrow(ax, (6.5, 3.55), (7.6, 4.7), "", "black")
    arrow(ax, (6.45, 4.6), (7.6, 2.15), "", "black")
    arrow(ax, (6.5, 3.4), (7.6, 1.95), "", "black")
    arrow(ax, (6.5, 2.55), (7.6, 3.9), "", "#555555")
    arrow(ax, (6.5, 2.4), (7.6, 1.1), "", "#555555")
    arrow(ax, (7.4, 0.75), (2.15, 1.2), "epilogue: O = acc / l, lse = (m + log2 l) ln 2", RED, (-0.6, -0.3))
    ax.text(0.2, -0.2, "Black arrows: wgmma S = Q K^T, both operands in shared memory. Grey arrows: wgmma acc += P V, "
            "A = P from registers, B = V from shared memory. Both products are issued by each warpgroup for its own 64 rows.",
            fontsize=7.5, color="#555555")
    ax.text(0.2, 0.05, "Read from the TTGIR/PTX of the D = 64 forward kernel (Triton 3.6, sm_90, compiled offline): "
            "ttg.local_alloc for Q, ttg.async_copy_global_to_local into 3-buffer K and V allocations, "
            "ttng.warp_group_dot for both products.", fontsize=7.5, color="#555555")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- backward split
def backward_tiles(n, block_m, block_n, causal, window, kernel):
    """[(query start, key start, masked, order)] the dQ ("dq") or dK/dV ("dkdv") kernel visits."""
    left, right = tiles.mask_sides(causal, window)
    visits = []
    if kernel == "dq":  # one program per query block, walking key blocks: visible_ranges as in the forward
        for start_m in range(0, n, block_m):
            last_row = min(start_m + block_m, n) - 1
            unmasked, masked = tiles.loop_starts(*tiles.visible_ranges(start_m, last_row, n, 0, left, right,
                                                                       block_n), block_n)
            visits += [(start_m, s, False, i) for i, s in enumerate(unmasked)]
            visits += [(start_m, s, True, len(unmasked) + i) for i, s in enumerate(masked)]
    else:  # one program per key block, walking query blocks: the rule read from the keys' side
        for start_n in range(0, n, block_n):
            last_key = min(start_n + block_n, n) - 1
            lo, full_lo, full_hi, hi = tiles.visible_ranges(start_n, last_key, n, 0, right, left, block_m)
            if start_n + block_n > n:  # a ragged last key block masks every tile
                full_lo = full_hi = hi
            unmasked, masked = tiles.loop_starts(lo, full_lo, full_hi, hi, block_m)
            visits += [(s, start_n, False, i) for i, s in enumerate(unmasked)]
            visits += [(s, start_n, True, len(unmasked) + i) for i, s in enumerate(masked)]
    return visits


def draw_backward_panel(ax, n, block_m, block_n, causal, window, kernel, highlight):
    visits = backward_tiles(n, block_m, block_n, causal, window, kernel)
    ax.add_patch(Rectangle((0, 0), n, n, facecolor=GREY, edgecolor="none"))
    for q0, k0, masked, _ in visits:
        ax.add_patch(Rectangle((k0, q0), block_n, block_m, facecolor=ORANGE if masked else GREEN,
                               edgecolor="white", linewidth=0.8))
    # one program's path: the order its loop visits its tiles
    path = sorted((v for v in visits if (v[0] if kernel == "dq" else v[1]) == highlight), key=lambda v: v[3])
    for q0, k0, masked, order in path:
        ax.add_patch(Rectangle((k0, q0), block_n, block_m, facecolor="none", edgecolor="black", linewidth=1.6))
        ax.text(k0 + block_n / 2, q0 + block_m / 2, str(order + 1), ha="center", va="center", fontsize=6.5,
                weight="bold")
    ax.plot([0, n], [0, n], color="black", linewidth=1.0)
    if window is not None:
        ax.plot([0, n - window[0]], [window[0], n], color="black", linewidth=1.0, linestyle="--")
    ax.set_xlim(0, n)
    ax.set_ylim(n, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("key index j")
    ax.set_ylabel("query index i")
    if kernel == "dq":
        ax.set_title(f"kernel 1, dQ: a program per query block ({block_m} rows), walking key tiles of {block_n};\n"
                     "keeps dQ_i in registers, writes it once (and delta_i = rowsum(dO_i * O_i))", fontsize=9)
    else:
        ax.set_title(f"kernel 2, dK/dV: a program per key block ({block_n} keys), walking query tiles of {block_m};"
                     "\nkeeps dK_j, dV_j in registers, writes them once (reads delta)", fontsize=9)


def draw_backward_split(path=HERE / "backward_split.png", n=1024, window=(400, 0)):
    # BWD_CONFIGS[64]: dK/dV (BLOCK_M1, BLOCK_N1) = (32, 128), dQ (BLOCK_M2, BLOCK_N2) = (128, 32)
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 6.6))
    draw_backward_panel(axes[0], n, 128, 32, True, window, "dq", highlight=512)
    draw_backward_panel(axes[1], n, 32, 128, True, window, "dkdv", highlight=512)
    handles = [Patch(color=GREEN, label="every pair visible: no mask (that program's first loop)"),
               Patch(color=ORANGE, label="on the mask's edges: one masked loop, after"),
               Patch(color=GREY, label="never loaded"),
               Patch(facecolor="none", edgecolor="black", label="one program's tiles, numbered in visit order"),
               plt.Line2D([], [], color="black", linewidth=1.0, label="causal boundary j = i"),
               plt.Line2D([], [], color="black", linewidth=1.0, linestyle="--",
                          label=f"window's left edge j = i - {window[0]}")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8.5, frameon=False)
    fig.suptitle(f"Step 03 backward: two launches over the same score matrix (N = {n}, causal, window "
                 f"{window}, D = 64 tile sizes)", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- wgmma timeline
def lane(ax, y, segments, label):
    """segments: (start, length, text, colour); one horizontal lane at height y."""
    ax.text(-0.2, y + 0.3, label, ha="right", va="center", fontsize=8.5)
    for start, length, text, colour in segments:
        ax.add_patch(Rectangle((start, y), length, 0.6, facecolor=colour, edgecolor="white", alpha=0.85))
        if text:
            ax.text(start + length / 2, y + 0.3, text, ha="center", va="center", fontsize=7, color="white"
                    if colour in (BLUE, PURPLE, RED) else "black")


def draw_timeline(path=HERE / "wgmma_timeline.png"):
    g, s, w = 1.0, 1.0, 0.15  # one tile's product, its softmax, a wait/issue gap: illustrative units
    fig, ax = plt.subplots(figsize=(13, 6.4))
    # (a) this kernel: per tile, issue QK^T, wait for it (and the previous PV), softmax, issue PV
    y = 4.6
    ax.text(-3.6, y + 1.25, "(a) this kernel, one warpgroup, as Triton 3.6 compiles it", fontsize=9.5, weight="bold")
    tc, cc = [], []
    t = 0.0
    for j in range(3):
        tc.append((t, g, f"QK^T {j}", BLUE))
        if j > 0:
            tc.append((t - g, g, f"PV {j - 1}", PURPLE))  # issued before this QK^T, still running
        t += g
        cc.append((t, w, "", RED))  # wgmma.wait_group 0: waits for everything in flight
        t += w
        cc.append((t, s, f"softmax {j}", ORANGE))
        t += s
        t += g  # PV j runs here, overlapped only with address math, cp.async issue and the next QK^T issue
    tc.append((t - g, g, "PV 2", PURPLE))
    lane(ax, y, tc, "tensor cores (wgmma)")
    lane(ax, y - 0.8, cc, "CUDA cores, MUFU (exp2)")
    ax.text(t + 0.2, y - 0.5, "wait = wgmma.wait_group 0\n(pendings = 0)", fontsize=7.5, color=RED, va="center")
    ax.text(0, y - 1.15, "PV j is issued after softmax j and runs while the loop computes addresses, issues the next "
            "cp.async copies and issues QK^T j+1;\nthe wait before softmax j+1 waits for both, so no exponential of "
            "this warpgroup runs while one of its products is in flight.", fontsize=7.5, va="center")
    # (b) FA-3 ping-pong: two warpgroups take turns on the tensor cores
    y = 1.4
    ax.text(-3.6, y + 1.25, "(b) FlashAttention-3's ping-pong schedule, two warpgroups (schematic)", fontsize=9.5,
            weight="bold")
    a_tc, a_cc, b_tc, b_cc = [], [], [], []
    t = 0.0
    for j in range(3):
        a_tc.append((t, g, "WG1", BLUE))
        b_cc.append((t, s, "WG2", ORANGE))
        t += g
        b_tc.append((t, g, "WG2", PURPLE))
        a_cc.append((t, s, "WG1", ORANGE))
        t += g
    lane(ax, y, a_tc + b_tc, "tensor cores: a tile's QK^T, PV")
    lane(ax, y - 0.8, a_cc + b_cc, "CUDA cores, MUFU: softmax")
    ax.text(t + 0.2, y - 0.5, "named barriers order the two\nwarpgroups' GEMMs", fontsize=7.5, va="center")
    ax.set_xlim(-3.7, 11.5)
    ax.set_ylim(0.1, 6.3)
    ax.axis("off")
    ax.text(-3.6, 0.05, "SCHEMATIC: durations are illustrative, not measured. In (a) the other warpgroup of the "
            "program, and a second resident program, run the same sequence independently: the warp scheduler may "
            "overlap\none warpgroup's softmax with another's wgmma, but nothing in the code arranges it. "
            "(b) after Shah et al. 2024 (pingpong scheduling); FA-3 also overlaps within a warpgroup (QK^T of tile j+1 "
            "issued before the softmax of tile j).", fontsize=7.5, color="#555555")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


DRAWINGS = {"dataflow": draw_dataflow, "backward": draw_backward_split, "timeline": draw_timeline}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DRAWINGS), help="draw one figure")
    args = parser.parse_args(argv)
    for name, draw in DRAWINGS.items():
        if args.only in (None, name):
            print(f"wrote {draw()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
