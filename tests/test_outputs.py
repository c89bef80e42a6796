"""Where runs write (shared.outputs), the progress line (shared.progress), and what `import shared`
and the GPU-only scripts say without a GPU (shared.runtime)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shared
from shared import outputs

ROOT = Path(__file__).resolve().parents[1]


def test_out_dir_given_wins(tmp_path):
    assert shared.output_dir(tmp_path / "mine", ROOT / "01_basic_attention" / "results",
                             official=False) == tmp_path / "mine"
    assert (tmp_path / "mine").is_dir()


@pytest.mark.parametrize("gpu, official, where", [
    (True, True, "results"),      # a full GPU run replaces the committed results
    (True, False, "scratch"),     # --quick, --tiny, a slice: scratch
    (False, True, "scratch"),     # no GPU: never the committed results
])
def test_only_full_gpu_runs_write_results(tmp_path, monkeypatch, capsys, gpu, official, where):
    monkeypatch.setattr(outputs, "INTERPRETER", not gpu)
    monkeypatch.setattr(outputs, "SCRATCH", tmp_path / "scratch")
    results = tmp_path / "01_basic_attention" / "results"
    out = shared.output_dir(None, results, official=official, why="a --quick run")
    said = capsys.readouterr().out
    if where == "results":
        assert out == results and said == ""
    else:
        assert out == tmp_path / "scratch" / "01_basic_attention"
        assert said.count("\n") == 1 and ("no GPU" if not gpu else "--quick") in said


def test_progress_estimates_time_left_from_the_work():
    now = [0.0]
    progress = shared.Progress(weights=[1, 1, 2], label="shapes", clock=lambda: now[0])
    now[0] = 10.0
    line = progress.advance()          # 1 of 4 units of work in 10 s: 30 s left
    assert "1/3 shapes" in line and "10 s" in line and "about 30 s left" in line
    now[0] = 20.0
    progress.advance()
    now[0] = 40.0
    assert progress.advance().endswith("done") and "[" + "#" * 20 + "]" in progress.line()
    assert shared.format_seconds(3725) == "1h02m" and shared.format_seconds(185) == "3m05s"


def _without_gpu(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return {**env, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), **extra}


def test_import_says_it_switched_to_the_interpreter_in_one_line(tmp_path):
    # Switched on by shared: one line on stderr. Set by hand: nothing to announce. (Run side by side.)
    runs = [subprocess.Popen([sys.executable, "-c", "import shared"], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for env in (_without_gpu(), _without_gpu(TRITON_INTERPRET="1"))]
    (out, err), (out_set, err_set) = (run.communicate(timeout=120) for run in runs)
    assert [run.returncode for run in runs] == [0, 0] and out == out_set == ""
    lines = err.splitlines()
    assert len(lines) == 1 and "interpreter" in lines[0] and "TRITON_INTERPRET=1" in lines[0]
    assert err_set == ""


def test_require_gpu_exits_cleanly_in_one_line(capsys):
    if not shared.INTERPRETER:
        pytest.skip("there is a GPU here")
    with pytest.raises(SystemExit) as exit_:
        shared.require_gpu("tune_something.py")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "needs a CUDA GPU" in out


def test_merge_results_refuses_parts_from_two_gpus(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("merge_results", ROOT / "benchmarks" / "merge_results.py")
    merge_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge_results)
    parts = []
    for i, gpu in enumerate(("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA H100 80GB HBM3")):
        parts.append(shared.save_results(tmp_path / f"part{i}.json", [{"impl": "x", "part": i}],
                                         command=f"p{i}"))
        data = shared.load_results(parts[-1])
        data["env"]["gpu"] = gpu
        parts[-1].write_text(json.dumps(data))
    merged = merge_results.merge(tmp_path / "ok.json", [parts[0], parts[2]])
    assert [r["part"] for r in merged["rows"]] == [0, 2] and len(merged["meta"]["parts"]) == 2
    with pytest.raises(ValueError, match="different GPUs"):
        merge_results.merge(tmp_path / "mixed.json", parts)
    assert not (tmp_path / "mixed.json").exists()
