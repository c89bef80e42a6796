"""Where the kernels run: a real GPU, or Triton's CPU interpreter.

Triton reads ``TRITON_INTERPRET`` once, when it is first imported, so this
module must be imported before ``triton`` (``import shared`` does it first).
Without a CUDA GPU it switches the interpreter on by itself; a reader on a
laptop can run every step, only slowly and without meaningful timings.
"""
import os

import torch

HAS_GPU = torch.cuda.is_available()

# TRITON_INTERPRET=0, set explicitly, keeps Triton compiling even without a GPU: for tools
# that compile kernels offline (benchmarks/compile_offline.py), never to run them.
if not HAS_GPU and os.environ.get("TRITON_INTERPRET") is None:
    if "triton" in __import__("sys").modules:
        raise RuntimeError(
            "no GPU found and triton was imported before shared: import shared first, "
            "or set TRITON_INTERPRET=1 yourself"
        )
    os.environ["TRITON_INTERPRET"] = "1"

INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cpu" if INTERPRETER else "cuda"


def describe_runtime() -> str:
    """One line that says where kernels will run, for scripts to print first."""
    if INTERPRETER:
        return (
            "No GPU: running the Triton kernels in the CPU interpreter (TRITON_INTERPRET=1) "
            "on small sizes. Timings would mean nothing there, so benchmarks are skipped."
        )
    return f"GPU: {torch.cuda.get_device_name()} - compiled Triton kernels, timed with do_bench."
