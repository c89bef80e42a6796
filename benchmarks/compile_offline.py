"""Compile the series' Triton kernels for a GPU that is not here: catch compile errors and read
the generated PTX/SASS without spending device time.

    TRITON_INTERPRET=0 python benchmarks/compile_offline.py                 # every kernel, sm_90
    TRITON_INTERPRET=0 python benchmarks/compile_offline.py --dump out/     # + .ptx/.sass/.ttgir files
    TRITON_INTERPRET=0 python benchmarks/compile_offline.py --hopper        # + the Hopper experiments'
                                        # variants and candidate configs (benchmarks/hopper_experiments.py)

Triton needs no GPU to compile: this script gives it a stand-in driver that names the
target (compute capability 9.0, Hopper), records the launches the step-03 launcher would
make for a set of calls (forward, decoding, packed sequences, backward), and compiles each
with ``warmup`` instead of launching it. It prints, per kernel: registers and spills (from
ptxas), shared memory, and whether the tensor-core instructions are wgmma (Hopper) or
mma.sync (Ampere-style). The binaries are never run here. Use the Triton version the GPU
has (3.6.0 beside torch 2.11): `pip install --target DIR triton==3.6.0` and PYTHONPATH=DIR.
"""
import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__" and os.environ.get("TRITON_INTERPRET") != "0":
    sys.exit("set TRITON_INTERPRET=0: this script compiles kernels, it cannot run in the interpreter")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import shared  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402


class OfflineDriver:
    """Just enough of Triton's driver to compile for `arch` with no GPU attached."""

    def __init__(self, arch):
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


def calls(fa):
    """(label, function) pairs whose launches get compiled: the shapes users run."""
    def qkv(b, h, hkv, n_q, n_k, d, dtype=torch.bfloat16):
        return shared.make_qkv(b, h, n_q, d, n_k=n_k, kv_heads=hkv, dtype=dtype, device="cpu")

    def fwd_bwd(b, h, hkv, n_q, n_k, d, causal=False, window=None, dtype=torch.bfloat16, atomic=False):
        def run():
            q, k, v = qkv(b, h, hkv, n_q, n_k, d, dtype)
            plan = fa.attention_plan(q, k, v, causal, None, window)
            o, lse = plan.forward(q, k, v)
            plan.backward(torch.randn_like(o), q, k, v, o, lse, dq_atomic=atomic)
        return run

    def decode(b, h, hkv, n_q, n_k, d):
        def run():
            q, k, v = qkv(b, h, hkv, n_q, n_k, d)
            fa.attention_plan(q, k, v, "lower_right", None, None).forward(q, k, v)
        return run

    def varlen():
        lengths = [100, 3000, 700]
        cu = torch.tensor([0, 100, 3100, 3800], dtype=torch.int32)
        q = torch.randn(sum(lengths), 16, 128).to(torch.bfloat16)
        k, v = torch.randn_like(q), torch.randn_like(q)
        plan = fa.AttentionPlan(q, k, v, True, None, None, varlen=(3, 3000, 3000))
        o, lse = plan.forward(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu)
        plan.backward(torch.randn_like(o), q, k, v, o, lse, cu_seqlens_q=cu, cu_seqlens_k=cu)

    return [
        ("fwd+bwd D=64 causal", fwd_bwd(4, 32, 32, 4096, 4096, 64, True)),
        ("fwd+bwd D=128", fwd_bwd(4, 32, 32, 4096, 4096, 128)),
        ("fwd+bwd D=128 short", fwd_bwd(1, 16, 16, 512, 512, 128, True)),
        ("fwd+bwd D=111 window", fwd_bwd(2, 8, 2, 1000, 1000, 111, True, (256, 0), torch.float16)),
        ("fwd+bwd D=256", fwd_bwd(1, 4, 4, 256, 256, 256, True, None, torch.float16)),
        ("fwd+bwd fp32", fwd_bwd(1, 2, 2, 100, 100, 64, False, None, torch.float32)),
        ("atomic dQ D=128", fwd_bwd(4, 32, 32, 4096, 4096, 128, True, atomic=True)),
        ("decode GQA split", decode(1, 32, 8, 1, 32768, 128)),
        ("decode 4 rows", decode(8, 32, 8, 4, 131072, 128)),
        ("varlen causal", varlen),
    ]


# Candidate configs of step 03's backward, compiled one kernel at a time (the other kernel at its
# default): (BLOCK_M1, BLOCK_N1, warps1, stages1) of dK/dV, (BLOCK_M2, BLOCK_N2, warps2, stages2) of dQ.
HOPPER_DKDV = {64: [(64, 128, 8, 3), (32, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 3), (64, 128, 8, 2)],
               128: [(64, 128, 8, 3), (64, 128, 8, 2), (32, 128, 8, 2), (32, 64, 4, 2), (64, 64, 8, 2),
                     (32, 128, 4, 2), (16, 128, 8, 2)]}
HOPPER_DQ = {64: [(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3)],
             128: [(128, 64, 8, 3), (128, 64, 8, 2), (128, 32, 8, 2), (64, 32, 4, 2)]}
# Step 03's forward at other tiles (BLOCK_M, BLOCK_N, warps, stages): 2 stages, 128-key tiles
HOPPER_FWD = {64: [(128, 128, 8, 2)], 128: [(128, 128, 8, 2), (128, 64, 8, 2)]}
# The TMA forward: (BLOCK_M, BLOCK_N, warps, stages) by head dim
HOPPER_TMA_FWD = {64: [(128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3)],
                  128: [(128, 128, 8, 2), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3)]}
# The one-launch backward: (BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2, warps, stages)
HOPPER_FUSED = {64: [(32, 128, 128, 32, 4, 3), (64, 128, 128, 64, 8, 3), (32, 64, 64, 32, 4, 3)],
                128: [(64, 128, 128, 64, 8, 3), (64, 128, 128, 64, 8, 2), (32, 128, 128, 32, 8, 2),
                      (64, 64, 64, 64, 4, 2)]}


def hopper_calls(fa):
    """The variants and configs that benchmarks/hopper_experiments.py times, labelled "hopper ..."."""
    tma = shared.load_step("03", "flash_attention_tma.py")

    def qkv(n, d):
        return shared.make_qkv(4, 32, n, d, dtype=torch.bfloat16, device="cpu")

    def bwd(d, config):
        def run():
            q, k, v = qkv(4096, d)
            o, lse = torch.empty_like(q), torch.zeros(q.shape[:3])
            fa.flash_attention_backward(torch.randn_like(o), q, k, v, o, lse, causal=True, config=config)
        return run

    def fwd(d, config):
        def run():
            q, k, v = qkv(4096, d)
            fa.flash_attention_forward(q, k, v, causal=True, config=config)
        return run

    def tma_fwd(d, config, ws):
        def run():
            q, k, v = qkv(4096, d)
            tma.tma_attention_forward(q, k, v, True, config=config, warp_specialize=ws)
        return run

    def fused(d, config):
        def run():
            q, k, v = qkv(4096, d)
            o, lse = torch.empty_like(q), torch.zeros(q.shape[:3])
            tma.fused_attention_backward(torch.randn_like(o), q, k, v, o, lse, causal=True, config=config)
        return run

    out = []
    for d in (64, 128):
        base = fa.BWD_CONFIGS[d]
        out += [(f"hopper dkdv D={d} {c}", bwd(d, c + base[4:])) for c in HOPPER_DKDV[d]]
        out += [(f"hopper dq D={d} {c}", bwd(d, base[:4] + c)) for c in HOPPER_DQ[d]]
        out += [(f"hopper fwd D={d} {c}", fwd(d, c)) for c in HOPPER_FWD[d]]
        # warp_specialize=True: same code as False at 8 warps; at 4 warps Triton 3.6 fails in its Hopper
        # warp-specialization pass (PassManager::run failed), so 4-warp configs are compiled without it.
        out += [(f"hopper tma ws={ws} D={d} {c}", tma_fwd(d, c, ws)) for c in HOPPER_TMA_FWD[d]
                for ws in ((False, True) if c[2] >= 8 else (False,))]
        out += [(f"hopper fused D={d} {c}", fused(d, c)) for c in HOPPER_FUSED[d]]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: Hopper)")
    parser.add_argument("--dump", type=Path, help="write each kernel's .ttgir, .ptx and .sass here")
    parser.add_argument("--only", help="compile only the calls whose label contains this text")
    parser.add_argument("--hopper", action="store_true",
                        help="also the Hopper experiments' variants and configs (labels \"hopper ...\")")
    args = parser.parse_args(argv)
    triton.runtime.driver.set_active(OfflineDriver(args.arch))
    shared.validation.INTERPRETER = True  # the input checks accept CPU tensors for this script
    fa = shared.load_step("03")
    compiled = []

    def record(launcher, variant, *call_args):
        kernel = launcher.kernel.warmup(*call_args, grid=launcher.grid, **launcher.meta)
        compiled.append((launcher.kernel.__name__, launcher.meta, kernel))

    fa.KernelLauncher.__call__ = record
    # Kernels launched directly (kernel[grid](...), the companion scripts do) are compiled, not run.
    jit_run = triton.runtime.jit.JITFunction.run

    def run_compile_only(self, *call_args, grid, warmup, **kwargs):
        kernel = jit_run(self, *call_args, grid=grid, warmup=True, **kwargs)
        if not warmup:
            compiled.append((self.__name__, kwargs, kernel))
        return kernel

    triton.runtime.jit.JITFunction.run = run_compile_only
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    failures = 0
    todo = calls(fa) + (hopper_calls(fa) if args.hopper or (args.only and "hopper" in args.only) else [])
    for label, run in todo:
        if args.only and args.only not in label:
            continue
        start = len(compiled)
        try:
            run()
        except Exception as exc:  # noqa: BLE001  (report every failure, then exit non-zero)
            failures += 1
            print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:2000]}")
            continue
        for name, meta, kernel in compiled[start:]:
            ptx = kernel.asm["ptx"]
            mma = "wgmma" if "wgmma.mma_async" in ptx else "mma.sync" if "mma.sync" in ptx else "no mma"
            if "cp.async.bulk.tensor" in ptx:
                mma += " tma"  # loads or stores by tensor descriptors
            if "ttg.warp_specialize" in kernel.asm["ttgir"]:
                mma += " warp-specialized"  # producer / consumer partitions
            usage = subprocess.run([str(bin_dir / "ptxas"), f"-arch=sm_{args.arch}a", "-v", "-o", os.devnull,
                                    "-"], input=ptx, capture_output=True, text=True).stderr
            regs = re.search(r"Used (\d+) registers", usage)
            spill = re.search(r"(\d+) bytes spill stores", usage)
            blocks = {k: meta[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_M1", "BLOCK_N1", "BLOCK_M2",
                                           "BLOCK_N2")
                      if k in meta}
            print(f"ok   {label:<24} {name:<32} {blocks} warps={meta.get('num_warps', 4)} "
                  f"stages={meta.get('num_stages', 3)} regs={regs.group(1) if regs else '?'} "
                  f"spills={spill.group(1) if spill else '?'}B smem={kernel.metadata.shared}B {mma}")
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                stem = args.dump / f"{label.replace(' ', '_').replace('+', '')}_{name}"
                stem.with_suffix(".ttgir").write_text(kernel.asm["ttgir"])
                stem.with_suffix(".ptx").write_text(ptx)
                cubin = stem.with_suffix(".cubin")
                cubin.write_bytes(kernel.asm["cubin"])
                sass = subprocess.run([str(bin_dir / "cuobjdump"), "--dump-sass", str(cubin)],
                                      capture_output=True, text=True).stdout
                stem.with_suffix(".sass").write_text(sass)
                cubin.unlink()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
