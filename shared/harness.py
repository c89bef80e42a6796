"""The frame every step script runs in: say where kernels run, check, then (on a GPU) time.

    sys.exit(shared.run_step("basic_attention", lambda: check(quick), lambda: benchmark(...)))
"""
from .runtime import INTERPRETER, describe_runtime


def run_step(name, check, benchmark) -> int:
    """Print where kernels run; run ``check()``; run ``benchmark()`` only if it passed and there
    is a GPU. Returns the exit code: 1 when the check failed, else 0."""
    print(describe_runtime())
    if not check():
        print(f"FAILED: {name} does not match the reference; not benchmarking.")
        return 1
    if INTERPRETER:
        print("Skipping the benchmark: there is no GPU to time on.")
        return 0
    benchmark()
    return 0
