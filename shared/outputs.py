"""Where a run writes its results: the committed ``results/`` folder, or scratch.

    out_dir = shared.output_dir(args.out_dir, HERE / "results", official=not args.quick)

The committed ``NN_*/results/`` folders hold what the posts show, so only a full
run on a GPU may replace them. A run without a GPU, a ``--quick`` run or any
other partial run writes to ``scratch/<step folder>/`` at the repository root
(ignored by git) instead, and says so in one line. ``--out-dir`` always wins.
"""
from __future__ import annotations

from pathlib import Path

from .runtime import INTERPRETER

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "scratch"


def scratch_dir(results_dir) -> Path:
    """``scratch/<step folder>/`` for a results folder ``<step folder>/results``."""
    results_dir = Path(results_dir).resolve()
    folder = results_dir.parent.name if results_dir.name == "results" else results_dir.name
    return SCRATCH / folder


def output_dir(requested, results_dir, *, official: bool, why: str = "a --quick run") -> Path:
    """The folder a run should write to, created; prints one line when it is not ``results_dir``.

    ``requested``: the ``--out-dir`` the user gave, or None. ``results_dir``: the
    committed folder the posts read. ``official``: this is the full run whose
    numbers the posts show (not ``--quick``, ``--tiny`` or a slice); without a
    GPU (in the interpreter) no run is official. ``why`` names what made the run unofficial.
    """
    if requested is not None:
        out = Path(requested)
    elif official and not INTERPRETER:
        out = Path(results_dir)
    else:
        out = scratch_dir(results_dir)
        reason = "no GPU, Triton interpreter" if INTERPRETER else why
        print(f"Writing to {_shown(out)}/, not {_shown(Path(results_dir))}/ ({reason}: the committed "
              "results come from full GPU runs; --out-dir DIR to choose).")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _shown(path: Path) -> str:
    """A path relative to the repository root when it is inside it."""
    path = path.resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
