"""Every kernel of the series once, on small shapes that hit every masked edge: the workload
that `benchmarks/sanitize.sh` runs under compute-sanitizer (memcheck, racecheck, initcheck).

    python benchmarks/sanitize_kernels.py          # GPU only; prints one line per case

Ragged lengths on both sides (1, 17, 97), odd head dims (40, 80, 111), GQA and MQA, causal
top-left and lower-right, sliding windows, rows that see no key, split-KV decoding, packed
sequences, the backward (both dQ schemes), steps 01 and 02. Each result is also checked
against the float64 reference, so a run that is clean but wrong does not pass.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shared  # noqa: E402
import torch  # noqa: E402

F16, BF16 = torch.float16, torch.bfloat16


def cases():
    """(label, callable returning True when the result matches the reference)."""
    step01, step02, step03 = shared.load_step("01"), shared.load_step("02"), shared.load_step("03")

    def forward(fn, b, h, hkv, nq, nk, d, causal=False, window=None, dtype=F16, **kwargs):
        def run():
            q, k, v = shared.make_qkv(b, h, nq, d, n_k=nk, kv_heads=hkv, dtype=dtype)
            extra = {"window": window} if window is not None else {}
            return shared.test_correctness(lambda q, k, v, **kw: fn(q, k, v, **kw, **kwargs), q, k, v,
                                           causal=causal, **extra).passed
        return run

    def backward(b, h, hkv, nq, nk, d, causal=False, window=None, dq_atomic=False):
        def run():
            q, k, v = shared.make_qkv(b, h, nq, d, n_k=nk, kv_heads=hkv, dtype=F16)
            o, lse = step03.flash_attention_forward(q, k, v, causal=causal, window=window)
            do = torch.randn_like(o)
            ours = step03.flash_attention_backward(do, q, k, v, o, lse, causal=causal, window=window,
                                                   dq_atomic=dq_atomic)
            tolerance = 2e-2 if dq_atomic else None
            errors = shared.compare_gradients(ours, q, k, v, do, causal=causal, window=window)
            return all(e["ok"] or (tolerance and e["ours"] < tolerance) for e in errors)
        return run

    def split(nk, splits):
        def run():
            q, k, v = shared.make_qkv(2, 8, 1, 128, n_k=nk, kv_heads=2, dtype=BF16)
            o, _ = step03.flash_attention_forward(q, k, v, causal="lower_right", num_splits=splits)
            ref = shared.reference_attention(q, k, v, causal="lower_right")
            return (o.double() - ref).abs().max().item() < 2e-2
        return run

    def varlen():
        return step03.check_varlen_case([17, 1, 97], [33, 5, 97], 4, 2, 80, True, (20, -1), F16, grads=True)

    return [
        ("01 basic, ragged, causal", forward(step01.basic_attention, 1, 2, 2, 97, 17, 40, True)),
        ("02 vectorized, ragged", forward(step02.vectorized_attention, 2, 1, 1, 17, 97, 80)),
        ("03 forward, GQA, D=111", forward(step03.flash_attention, 1, 4, 2, 97, 130, 111, True)),
        ("03 forward, lower-right, empty rows", forward(step03.flash_attention, 1, 2, 1, 97, 33, 64,
                                                         "lower_right")),
        ("03 forward, window (17, 3)", forward(step03.flash_attention, 2, 2, 2, 200, 200, 64, False, (17, 3))),
        ("03 forward, MQA, bf16, D=256", forward(step03.flash_attention, 1, 3, 1, 65, 70, 256, True,
                                                  dtype=BF16)),
        ("03 decoding, 4 splits", split(1000, 4)),
        ("03 decoding, ragged split", split(777, 3)),
        ("03 backward, ragged, GQA, causal", backward(1, 4, 2, 97, 130, 64, True)),
        ("03 backward, D=80, lower-right window", backward(1, 2, 1, 70, 150, 80, "lower_right", (30, -1))),
        ("03 backward, atomic dQ, ragged", backward(1, 2, 2, 97, 97, 64, True, None, True)),
        ("03 varlen fwd+bwd, causal, window", varlen),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    if not shared.HAS_GPU:
        print("sanitize_kernels.py runs the kernels on a GPU (under compute-sanitizer): nothing to do here.")
        return 0
    failed = 0
    for label, run in cases():
        ok = run()
        torch.cuda.synchronize()
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {label}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
