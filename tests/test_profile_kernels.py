"""The ncu CSV parser of benchmarks/profile_kernels.py, on fixture files (made-up values in ncu's layout).

No GPU and no ncu here: tests/fixtures/ncu_*_fixture.csv copy the column layout of `ncu --csv
--page details` and `--page raw` with invented numbers, so a parser change that misreads ncu's
format fails before a GPU run is spent on it.
"""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
spec = importlib.util.spec_from_file_location("profile_kernels", ROOT / "benchmarks" / "profile_kernels.py")
profile_kernels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_kernels)


def test_details_page_is_read_per_launch():
    launches = profile_kernels.parse_details_csv((FIXTURES / "ncu_details_fixture.csv").read_text())
    assert [launch["kernel"] for launch in launches] == ["vectorized_attention_kernel", "flash_attention_forward_kernel"]
    first = launches[0]["metrics"]
    assert first["Duration"] == ("nsecond", 8e6)             # thousands separators dropped
    assert first["DRAM Frequency"] == ("hz", 2.619e9)
    assert "" not in first                                     # the rule row carries no metric
    assert launches[1]["metrics"]["DRAM Throughput"] == ("n/a", "n/a")  # kept as text, never a number


def test_summary_of_one_launch(tmp_path):
    shutil.copy(FIXTURES / "ncu_details_fixture.csv", tmp_path / profile_kernels.DETAILS)
    shutil.copy(FIXTURES / "ncu_raw_fixture.csv", tmp_path / profile_kernels.RAW)
    summary = profile_kernels.summarize(tmp_path)
    k02, k03 = (row["kernels"][0] for row in summary["rows"])
    assert k02["duration_ms"] == pytest.approx(7.0)            # gpu__time_duration.sum (raw) before "Duration"
    assert k02["dram_bytes"] == 1e8 and k02["dram_gbps"] == pytest.approx(1e8 / 7e-3 / 1e9)
    assert k02["dram_peak_gbps"] == pytest.approx(k02["dram_gbps"] / 0.0125)  # from the % of peak
    assert k02["registers_per_thread"] == 96 and k02["shared_bytes_per_block"] == 0
    assert (k02["achieved_occupancy_pct"], k02["theoretical_occupancy_pct"]) == (30.0, 32.81)
    assert k02["l1_hit_pct"] == 80.0 and k02["l2_hit_pct"] == 95.5
    # stalls: "selected" (issuing) left out; shares of the rest; the details page wins over raw
    assert [s["reason"] for s in k02["top_stalls"]] == ["long_scoreboard", "lg_throttle", "wait"]
    assert k02["top_stalls"][0]["share"] == pytest.approx(6.0 / 10.0)
    assert k02["tensor_pipe_pct"] is None
    assert k03["tensor_pipe_pct"] == 70.0 and "gmma" in k03["tensor_pipe_metric"]
    assert k03["dram_pct_of_peak"] is None and k03["shared_bytes_per_block"] == 49152


def test_manifest_labels_launches_and_refuses_a_mismatch(tmp_path):
    shutil.copy(FIXTURES / "ncu_details_fixture.csv", tmp_path / profile_kernels.DETAILS)
    case = {"step": "02", "head_dim": 128, "causal": True, "mode": "fwd", "flops": 1.6e10, "min_bytes": 1.0,
            "do_bench_ms": 8.5}
    rows = [{**case, "label": "02 vectorized D=128 causal", "kernels": ["vectorized_attention_kernel"]},
            {**case, "label": "03 flash fwd D=64", "step": "03", "kernels": ["flash_attention_forward_kernel"]}]
    manifest = {"env": {"gpu": "fixture GPU"}, "meta": {"shape": {}}, "rows": rows}
    (tmp_path / profile_kernels.MANIFEST).write_text(json.dumps(manifest))
    summary = profile_kernels.summarize(tmp_path)
    assert [r["label"] for r in summary["rows"]] == ["02 vectorized D=128 causal", "03 flash fwd D=64"]
    assert summary["rows"][0]["tflops"] == pytest.approx(1.6e10 / 8.0 / 1e9)   # FLOPs over ncu's duration
    rows.reverse()
    (tmp_path / profile_kernels.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="expected"):
        profile_kernels.summarize(tmp_path)
