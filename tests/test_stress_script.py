"""benchmarks/stress_step_inputs.py: its draws respect each step's contract, and it tells failures apart.

The script itself runs on a GPU; these checks of its parts run anywhere.
"""
import importlib.util
import random
from pathlib import Path

import pytest
import torch

import shared

spec = importlib.util.spec_from_file_location(
    "stress_step_inputs", Path(__file__).resolve().parents[1] / "benchmarks" / "stress_step_inputs.py")
stress = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stress)


@pytest.mark.parametrize("step", stress.TARGETS)
def test_draws_fit_the_step(step):
    target, rng = stress.TARGETS[step], random.Random(0)
    for _ in range(500):
        qkv, kwargs = stress.draw_case(rng, target, 4096, (torch.float16,), tuple(shared.LAYOUTS))
        assert 1 <= qkv["n_q"] <= 4096 and 1 <= qkv["n_k"] <= 4096
        assert qkv["batch"] * qkv["heads"] * qkv["n_q"] * qkv["n_k"] <= target.max_pairs
        assert target.min_head_dim <= qkv["head_dim"] <= target.max_head_dim
        assert qkv["heads"] % qkv["kv_heads"] == 0 and (target.gqa or qkv["heads"] == qkv["kv_heads"])
        assert kwargs["causal"] in target.causal_values
        assert kwargs["scale"] is None or -2 <= kwargs["scale"] <= 2


def test_run_one_tells_failures_apart():
    target = stress.TARGETS["02"]
    qkv = dict(batch=1, heads=2, kv_heads=2, n_q=3, n_k=5, head_dim=16, dtype=torch.float16,
               layout=("transposed", "sliced", "expanded_batch"), seed=0)
    fn = shared.load_step("02").vectorized_attention
    assert stress.run_one(fn, target, qkv, {"causal": "top_left", "scale": -0.5}) is None

    def raises(q, k, v, **kwargs):
        raise RuntimeError("illegal memory access")

    def nan_row(q, k, v, **kwargs):
        out = shared.naive_torch(q, k, v)
        out[0, 0, 0] = float("nan")
        return out

    def off(q, k, v, **kwargs):
        return shared.naive_torch(q, k, v) + 0.1

    assert stress.run_one(raises, target, qkv, {}) == ("exception", "RuntimeError: illegal memory access")
    assert stress.run_one(nan_row, target, qkv, {})[0] == "nan_or_inf"
    assert stress.run_one(off, target, qkv, {})[0] == "mismatch"


@pytest.mark.skipif(shared.HAS_GPU, reason="the no-GPU path")
def test_without_gpu_it_says_so_in_one_line(capsys, tmp_path):
    assert stress.main(["--out", str(tmp_path / "s.json")]) == 0
    assert capsys.readouterr().out.count("\n") == 1 and not (tmp_path / "s.json").exists()
