"""Where the kernels run: a real GPU, or Triton's CPU interpreter.

Triton reads ``TRITON_INTERPRET`` once, when it is first imported, so this
module must be imported before ``triton`` (``import shared`` does it first).
Without a CUDA GPU it switches the interpreter on by itself and says so in one
line on stderr; a reader on a laptop can run every step, only slowly and
without meaningful timings.
"""
import os
import sys

import torch

HAS_GPU = torch.cuda.is_available()

# TRITON_INTERPRET=0, set explicitly, keeps Triton compiling even without a GPU: for tools
# that compile kernels offline (benchmarks/compile_offline.py), never to run them.
if not HAS_GPU and os.environ.get("TRITON_INTERPRET") is None:
    if "triton" in sys.modules:
        raise RuntimeError(
            "no GPU found and triton was imported before shared: import shared first, "
            "or set TRITON_INTERPRET=1 yourself"
        )
    os.environ["TRITON_INTERPRET"] = "1"
    # Said once, by the process that switched it on (child processes inherit the variable).
    print("shared: no CUDA GPU, so Triton kernels run in its CPU interpreter (TRITON_INTERPRET=1): "
          "slow, and timings mean nothing.", file=sys.stderr)

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


def require_gpu(script: str, does: str = "times kernels") -> None:
    """For GPU-only scripts: without a GPU, say so in one line and exit cleanly (status 0)."""
    if INTERPRETER:
        print(f"{script} {does}: it needs a CUDA GPU, and there is none here (nothing to do).")
        sys.exit(0)


class OfflineDriver:
    """Just enough of Triton's driver to compile for compute capability `arch` with no GPU attached.

    ``triton.runtime.driver.set_active(OfflineDriver(90))`` makes ``kernel.warmup(...)`` (and Gluon's
    compile path) build Hopper binaries on a CPU-only machine; nothing can be launched. Used by
    benchmarks/compile_offline.py and flash_attention_gluon.py --compile-only.
    """

    def __init__(self, arch=90):
        from triton.backends.compiler import GPUTarget  # here: importing triton must follow the switch above

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")
