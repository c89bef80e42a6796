"""Helpers shared by every step of the Triton attention series.

    from shared import test_correctness, quick_benchmark, naive_torch
    result = test_correctness(my_attention, q, k, v, causal=True)
    rows = quick_benchmark({"mine": my_attention, "naive torch": naive_torch})

Importing this package first also decides where kernels run: without a CUDA
GPU it switches Triton's CPU interpreter on (see ``runtime``).
"""
from .runtime import DEVICE, HAS_GPU, INTERPRETER, describe_runtime  # noqa: I001  (must precede triton)
from .test_utils import (
    CHECK_SHAPES_FULL, CHECK_SHAPES_QUICK, LAYOUTS, CorrectnessResult, compare_with_reference, make_qkv,
    reference_attention, run_checks, test_correctness, tolerance,
)
from .steps import load_step
from .harness import run_step
from .validation import (
    check_attention_inputs, check_causal, check_grid_rows, check_out, empty_attention_result,
    is_empty_attention, kv_heads_fit,
)
from .baselines import COLORS, naive_torch, sdpa_backend, standard_baselines, torch_sdpa
from .gradients import compare_gradients, reference_gradients
from .benchmark_utils import (
    attention_flops, attention_min_bytes, env_line, environment, load_results, measure,
    measure_ceilings, pivot_table, quick_benchmark, save_results, select, write_between_markers,
)
from .runtime import require_gpu
from .outputs import output_dir, scratch_dir
from .progress import Progress, format_seconds

__all__ = [
    "DEVICE", "HAS_GPU", "INTERPRETER", "describe_runtime", "require_gpu",
    "CHECK_SHAPES_FULL", "CHECK_SHAPES_QUICK", "LAYOUTS", "CorrectnessResult", "compare_with_reference",
    "make_qkv", "reference_attention", "run_checks", "test_correctness", "tolerance",
    "load_step", "check_attention_inputs", "check_causal", "check_grid_rows", "check_out",
    "empty_attention_result", "is_empty_attention", "kv_heads_fit",
    "COLORS", "naive_torch", "sdpa_backend", "standard_baselines", "torch_sdpa",
    "attention_flops", "attention_min_bytes", "env_line", "environment", "load_results",
    "measure", "measure_ceilings", "pivot_table", "quick_benchmark", "save_results", "select",
    "write_between_markers", "run_step", "compare_gradients", "reference_gradients",
    "output_dir", "scratch_dir", "Progress", "format_seconds",
]
