"""Compile the series' Triton kernels for a GPU that is not here: catch compile errors and read
the generated PTX/SASS without spending device time.

    TRITON_INTERPRET=0 python benchmarks/compile_offline.py                 # every kernel, sm_90
    TRITON_INTERPRET=0 python benchmarks/compile_offline.py --dump out/     # + .ptx/.sass/.ttgir files
    TRITON_INTERPRET=0 python benchmarks/compile_offline.py --hopper        # + the Hopper experiments'
                                        # variants and candidate configs (benchmarks/hopper_experiments.py)
    TRITON_INTERPRET=0 python benchmarks/compile_offline.py --only "0[12] " --json res.json   # steps 01, 02
    TRITON_INTERPRET=0 python benchmarks/compile_offline.py --only "^02-paired "   # step 02, pair_rows=True
    TRITON_INTERPRET=0 python benchmarks/compile_offline.py --excerpts 04_profiling/results/excerpts

Triton needs no GPU to compile: this script gives it a stand-in driver that names the
target (compute capability 9.0, Hopper), records the launches the step-03 launcher would
make for a set of calls (forward, decoding, packed sequences, backward), and compiles each
with ``warmup`` instead of launching it. Steps 01 and 02 are compiled the same way, through
their own launchers (``basic_attention``, ``vectorized_attention``) at D = 64 and 128, causal
and not. It prints, per kernel: registers and spills (from
ptxas), shared memory, and whether the tensor-core instructions are wgmma (Hopper) or
mma.sync (Ampere-style). The binaries are never run here. Use the Triton version the GPU
has (3.6.0 beside torch 2.11): `pip install --target DIR triton==3.6.0` and PYTHONPATH=DIR.
"""
import argparse
import json
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
        # the shape benchmarks/profile_kernels.py profiles under ncu: the same binaries
        ("profiled D=64", fwd_bwd(4, 16, 16, 2048, 2048, 64, False, None, torch.float16)),
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


class RecordingKernel:
    """Stands in for a step-01/02 ``@triton.jit`` kernel: ``kernel[grid](...)`` compiles, launches nothing."""

    def __init__(self, kernel, record):
        self.kernel, self.record = kernel, record

    def __getitem__(self, grid):
        def compile_only(*args, **meta):
            compiled = self.kernel.warmup(*args, grid=grid, **meta)
            self.record(self.kernel.__name__, meta, compiled)
        return compile_only


def step_calls(steps):
    """(label, function) pairs for steps 01 and 02 through their own launchers, at the shape that
    benchmarks/profile_kernels.py profiles (fp16, B=4, H=16, N=2048): Triton specialises on integer
    arguments (equal to 1, divisible by 16), so another shape could compile other binaries."""
    def forward(module, fn, d, causal, **kwargs):
        def run():
            q, k, v = shared.make_qkv(4, 16, 2048, d, dtype=torch.float16, device="cpu")
            getattr(module, fn)(q, k, v, causal=causal, **kwargs)
        return run

    out = [(f"{step} D={d}{' causal' if causal else ''}", forward(module, fn, d, causal))
           for step, module, fn in steps for d in (64, 128) for causal in (False, True)]
    # step 02's paired-rows experiment (benchmarks/step02_paired_rows.py); "02-paired", not "02 ",
    # so that --excerpts (and --only "^02 ") leave it out
    out += [(f"02-paired D={d}{' causal' if causal else ''}", forward(module, fn, d, causal, pair_rows=True))
            for step, module, fn in steps if step == "02" for d in (64, 128) for causal in (False, True)]
    return out


# SASS instructions counted in each dumped kernel: tensor cores (Hopper's HGMMA, Ampere-style HMMA),
# fp32 FMAs, warp shuffles, global loads (LDG), global-to-shared copies (LDGSTS: cp.async; UTMALDG: TMA).
SASS_OPS = ("HGMMA", "HMMA", "FFMA", "SHFL", "LDG", "LDGSTS", "UTMALDG")

# The excerpts 04_profiling/README.md shows: (file, kernel file stem, asm kind, pattern, lines before, after).
# Each is cut from the compiled kernel around the first line that matches the pattern.
EXCERPTS = [
    ("step03_forward_wgmma.ptx", "profiled_D=64_flash_attention_forward_kernel", "ptx",
     r"wgmma\.mma_async", 4, 6),
    ("step03_forward_wgmma.sass", "profiled_D=64_flash_attention_forward_kernel", "sass", r"HGMMA", 6, 8),
    ("step02_d128_causal_loop.ptx", "02_D=128_causal_vectorized_attention_kernel", "ptx",
     r"shfl\.sync\.bfly", 8, 6),
    ("step02_d128_causal_loop.sass", "02_D=128_causal_vectorized_attention_kernel", "sass", r"SHFL\.BFLY", 12, 10),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: Hopper)")
    parser.add_argument("--dump", type=Path, help="write each kernel's .ttgir, .ptx and .sass here")
    parser.add_argument("--only", help="compile only the calls whose label matches this regular expression")
    parser.add_argument("--json", type=Path, help="also write every compiled kernel's resources to this JSON file")
    parser.add_argument("--excerpts", type=Path,
                        help="write the short PTX/SASS excerpts and the resources of steps 01-03 that "
                             "04_profiling/README.md shows into this folder (compiles what they need)")
    parser.add_argument("--hopper", action="store_true",
                        help="also the Hopper experiments' variants and configs (labels \"hopper ...\")")
    args = parser.parse_args(argv)
    if args.excerpts:
        args.dump = args.dump or ROOT / "scratch" / "compile_offline"  # the whole files: not committed
        args.json = args.json or args.excerpts / "resources.json"
        args.only = args.only or r"^0[12] |^profiled "
    triton.runtime.driver.set_active(shared.runtime.OfflineDriver(args.arch))
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
    steps = []
    for step, fn, kernel in (("01", "basic_attention", "basic_attention_kernel"),
                             ("02", "vectorized_attention", "vectorized_attention_kernel")):
        module = shared.load_step(step)
        setattr(module, kernel, RecordingKernel(getattr(module, kernel),
                                                lambda name, meta, k: compiled.append((name, meta, k))))
        steps.append((step, module, fn))
    resources = []
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    failures = 0
    todo = calls(fa) + step_calls(steps)
    if args.hopper or (args.only and "hopper" in args.only):
        todo += hopper_calls(fa)
    for label, run in todo:
        if args.only and not re.search(args.only, label):
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
            blocks = {k: meta[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK_M1", "BLOCK_N1", "BLOCK_M2",
                                           "BLOCK_N2") if k in meta}
            print(f"ok   {label:<24} {name:<32} {blocks} warps={meta.get('num_warps', 4)} "
                  f"stages={meta.get('num_stages', 3)} regs={regs.group(1) if regs else '?'} "
                  f"spills={spill.group(1) if spill else '?'}B smem={kernel.metadata.shared}B {mma}")
            resources.append({"label": label, "kernel": name, **blocks, "num_warps": meta.get("num_warps", 4),
                              "num_stages": meta.get("num_stages", 3),
                              "registers": int(regs.group(1)) if regs else None,
                              "spill_store_bytes": int(spill.group(1)) if spill else None,
                              "shared_bytes": kernel.metadata.shared, "mma": mma})
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
                resources[-1]["sass_counts"] = {op: len(re.findall(rf"\b{op}\b", sass)) for op in SASS_OPS}
                resources[-1]["sass_counts"]["all"] = len(re.findall(r"^\s+/\*[0-9a-f]{4,}\*/", sass, re.M))
                cubin.unlink()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"triton": triton.__version__, "target": f"cuda sm_{args.arch}a",
                                         "kernels": resources}, indent=1) + "\n")
    if args.excerpts:
        failures += write_excerpts(args.dump, args.excerpts)
    return 1 if failures else 0


def write_excerpts(dump, dest):
    """Cut EXCERPTS out of the dumped kernels into dest/*.txt, each headed by where it comes from."""
    missing = 0
    for out_name, stem, kind, pattern, before, after in EXCERPTS:
        path = dump / f"{stem}.{kind}"
        lines = path.read_text().splitlines() if path.exists() else []
        hit = next((i for i, line in enumerate(lines) if re.search(pattern, line)), None)
        if hit is None:
            print(f"FAIL excerpt {out_name}: no line matching {pattern!r} in {path}")
            missing += 1
            continue
        count = sum(bool(re.search(pattern, line)) for line in lines)
        head = (f"// {path.name}: lines {hit + 1 - before}-{hit + 1 + after} of {len(lines)}, around the first of "
                f"{count} lines matching /{pattern}/\n// Triton {triton.__version__}, target sm_90a, compiled "
                "offline by benchmarks/compile_offline.py --excerpts (no GPU)\n")
        cut = lines[max(0, hit - before):hit + after + 1]
        if kind == "sass":  # drop the instruction encodings: /* 0x... */ comments, and lines of nothing else
            cut = [re.sub(r"\s*/\* 0x[0-9a-f]+ \*/", "", line) for line in cut]
            cut = [line for line in cut if line.strip()]
        body = "\n".join(line.rstrip() for line in cut)
        (dest / f"{out_name}.txt").write_text(head + body + "\n")
        print(f"wrote {dest / out_name}.txt")
    return missing


if __name__ == "__main__":
    sys.exit(main())
