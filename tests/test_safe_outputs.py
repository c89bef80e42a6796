"""No run without a GPU, and no --quick/--tiny run, writes into the committed results; every script
answers --help without doing work; GPU-only scripts say so in one line without a GPU.

The commands run in a snapshot of this checkout: a fresh git repository holding the working tree as
`git add -A` would commit it (uncommitted edits included), with no GPU visible. After them,
`git status --porcelain` there must be empty: anything a run wrote lies in ignored places
(scratch/, __pycache__/). The drawing scripts (access_pattern.py, causal_tiles.py, figures.py) are
left out of the runs: they redraw committed figures by design, and their bytes depend on the
matplotlib version.
"""
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PY_SCRIPTS = [
    "01_basic_attention/basic_attention.py",
    "02_vectorized_attention/vectorized_attention.py",
    "02_vectorized_attention/access_pattern.py",
    "03_advanced_optimizations/flash_attention.py",
    "03_advanced_optimizations/flash_attention_tma.py",
    "03_advanced_optimizations/flash_attention_gluon.py",
    "03_advanced_optimizations/train_gpt.py",
    "03_advanced_optimizations/tune_forward.py",
    "03_advanced_optimizations/tune_backward.py",
    "03_advanced_optimizations/causal_tiles.py",
    "03_advanced_optimizations/figures.py",
    "make_tables.py",
    "benchmarks/merge_results.py",
    "benchmarks/naive_oom.py",
    "benchmarks/profile_kernels.py",
    "benchmarks/step03_backward_grid.py",
    "benchmarks/sweep_step02.py",
    "benchmarks/hopper_experiments.py",
    "benchmarks/step02_paired_rows.py",
]
SH_SCRIPTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("*.sh"))
# Without a GPU these say so in one line and exit 0 (reproduce.sh: exit 1, it was asked for results).
GPU_ONLY = [
    "03_advanced_optimizations/flash_attention_gluon.py",
    "03_advanced_optimizations/tune_forward.py",
    "03_advanced_optimizations/tune_backward.py",
    "benchmarks/naive_oom.py",
    "benchmarks/profile_kernels.py",
    "benchmarks/step03_backward_grid.py",
    "benchmarks/sweep_step02.py",
    "benchmarks/hopper_experiments.py",
    "benchmarks/step02_paired_rows.py",
]
# The CPU commands the READMEs document, each in a mode that would write results on a GPU.
CPU_RUNS = [  # from the repository root (.ci/run runs each step from its own folder)
    (".", ["01_basic_attention/basic_attention.py", "--quick"]),
    (".", ["02_vectorized_attention/vectorized_attention.py", "--quick"]),
]
# Step 03's documented CPU commands that would write results (its --quick check writes nothing
# without a GPU, and CI runs it anyway).
STEP03_CPU_RUNS = [(".", ["03_advanced_optimizations/flash_attention.py", "--train", "--quick"])]  # train_gpt --tiny


def _no_gpu_env():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return {**env, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}


def _run_all(commands, cwd, timeout=600):
    """Run (folder, argv) commands side by side in the snapshot; return their CompletedProcess."""
    def run(command):
        folder, argv = command
        return subprocess.run(argv, cwd=cwd / folder, env=_no_gpu_env(), capture_output=True, text=True,
                              timeout=timeout)

    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(run, commands))


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    listed = _git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    repo = tmp_path_factory.mktemp("snapshot") / "repo"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "snapshot")
    return repo


def _assert_clean(repo, done):
    status = _git(repo, "status", "--porcelain", "--untracked-files=all")
    assert status == "", "these runs changed the checkout:\n" + status + "\n" + "\n".join(
        f"$ {' '.join(d.args)}\n{d.stdout[-2000:]}{d.stderr[-2000:]}" for d in done)


def test_help_and_gpu_only_scripts_without_a_gpu(snapshot):
    commands = [(".", [sys.executable, s, "--help"]) for s in PY_SCRIPTS]
    commands += [(".", ["bash", s, "--help"]) for s in SH_SCRIPTS]
    commands += [(".", [sys.executable, s]) for s in GPU_ONLY]
    commands += [(".", ["bash", s]) for s in SH_SCRIPTS]
    commands += [(".", ["bash", "benchmarks/reproduce.sh", "--list"])]
    done = _run_all(commands, snapshot)
    for d in done:
        what = " ".join(d.args[1:])
        out = d.stdout.strip().splitlines()
        if d.args[-1] == "--list":  # the plan, without a GPU
            assert d.returncode == 0 and out[-1].startswith("total: about"), (what, out[-3:])
        elif d.args[-1] == "--help":
            assert d.returncode == 0 and out, f"{what}: exit status {d.returncode}\n{d.stderr[-2000:]}"
            assert d.args[0] == "bash" or out[0].startswith("usage:"), f"{what}: {out[:3]}"
        elif d.args[-1].endswith("reproduce.sh"):
            assert d.returncode == 1 and out == [out[0]] and "CUDA GPU" in out[0], (what, out)
        else:  # a GPU-only script without a GPU: one line, exit status 0, no traceback
            assert d.returncode == 0 and len(out) == 1 and "GPU" in out[0], \
                (what, d.stdout, d.stderr[-2000:])
            assert "Traceback" not in d.stderr, (what, d.stderr[-2000:])
    _assert_clean(snapshot, done)


@pytest.mark.slow
def test_documented_cpu_runs_leave_the_results_alone(snapshot):
    commands = [(folder, [sys.executable, *argv]) for folder, argv in CPU_RUNS + STEP03_CPU_RUNS]
    done = _run_all(commands, snapshot)
    for d in done:
        assert d.returncode == 0, \
            f"{' '.join(d.args)}: exit status {d.returncode}\n{d.stdout[-3000:]}{d.stderr[-3000:]}"
    _assert_clean(snapshot, done)
