"""The ring attention benchmark's logic, without a GPU: help, the no-GPU exit, the table, a smoke run.

The GPU run itself (benchmarks/run_ring_attention.sh) is what produces numbers; these tests make
sure that run does not fail on something a CPU could have caught.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import shared

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ring_attention_bench.py"
spec = importlib.util.spec_from_file_location("ring_attention_bench", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_help_answers_without_work():
    result = _run("--help", timeout=30)
    assert result.returncode == 0 and "--cpu-smoke" in result.stdout and "torchrun" in result.stdout


@pytest.mark.skipif(shared.HAS_GPU, reason="the no-GPU message")
def test_without_gpu_exits_cleanly_with_one_line():
    result = _run(timeout=60)
    assert result.returncode == 0
    assert len(result.stdout.strip().splitlines()) == 1 and "no CUDA GPU" in result.stdout


def _row(impl, n, causal, mode, ms, world_size=4, status="ok"):
    return {"impl": impl, "world_size": world_size, "n": n, "causal": causal, "mode": mode, "ms": ms,
            "tflops_per_gpu": 100.0 if ms else None, "status": status}


def test_summary_ratios_and_scaling_efficiency():
    rows = [_row(bench.RING_IMPL, 65536, True, "fwd", 10.0),
            _row(bench.CP_AS_SHIPPED, 65536, True, "fwd", 12.0),
            _row("torch cp alltoall cudnn", 65536, True, "fwd", 8.0),
            _row("torch cp allgather cudnn", 65536, True, "fwd", None, status="error: RuntimeError: x"),
            _row(bench.SINGLE_IMPL, 65536, True, "fwd", 36.0)]
    (s,) = bench.summarize(rows, 4)
    assert s["ring_vs_cp_default"] == pytest.approx(1.2)
    assert s["best_cp"] == "torch cp alltoall cudnn" and s["ring_vs_best_cp"] == pytest.approx(0.8)
    assert s["scaling_efficiency"] == pytest.approx(36.0 / (4 * 10.0))
    assert s["cp_errors"] == ["error: RuntimeError: x"]


def test_table_is_empty_until_measured_and_lands_between_markers(tmp_path):
    assert "Not yet measured" in bench.table_markdown([])
    post = tmp_path / "post.md"
    text = (ROOT / "03_advanced_optimizations" / "ring_attention.md").read_text()
    assert "<!-- ring:start -->" in text and "<!-- ring:end -->" in text
    post.write_text(text)
    rows = [_row(bench.RING_IMPL, 32768, False, "fwd+bwd", 20.0, 2), _row(bench.SINGLE_IMPL, 32768, False,
                                                                           "fwd+bwd", 36.0, 2)]
    results = tmp_path / "ring_w2.json"
    meta = {"world_size": 2, "summary": bench.summarize(rows, 2)}
    results.write_text(json.dumps({"env": {"gpu": "TEST GPU", "torch": "x", "triton": "y"}, "meta": meta,
                                   "rows": rows}))
    bench.write_table([results], post=post)
    written = post.read_text()
    assert "| 2 | 32768 | no | fwd+bwd | 20.00 |" in written and "90%" in written and "TEST GPU" in written
    assert written.count("<!-- ring:start -->") == 1


@pytest.mark.skipif(shared.HAS_GPU, reason="--cpu-smoke is for machines without a GPU")
def test_cpu_smoke_run_writes_rows(tmp_path):
    out = tmp_path / "smoke.json"
    result = _run("--cpu-smoke", "--modes", "fwd", "--out", str(out), timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["meta"]["world_size"] == 2 and data["meta"]["status"] == "ok"
    impls = {(r["impl"], r["causal"]): r["status"] for r in data["rows"]}
    assert impls == {(bench.RING_IMPL, False): "ok", (bench.RING_IMPL, True): "ok",
                     (bench.SINGLE_IMPL, False): "ok", (bench.SINGLE_IMPL, True): "ok"}
    assert all(s["scaling_efficiency"] for s in data["meta"]["summary"])
