"""Step 03's backward grid beside SDPA flash / cuDNN and FlexAttention, saved part by part.

    python benchmarks/step03_backward_grid.py OUT_DIR [SECONDS]

Modes "bwd" (backward alone, forward outside the timed region) and "fwd+bwd";
fp16, B=4, H=32, N 1024..16384. Stops starting new parts when SECONDS run out.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import shared  # noqa: E402
import torch  # noqa: E402

step03 = shared.load_step("03")
flash = step03.flash_attention  # differentiable: custom op with the Triton backward

out_dir, budget = Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 500
from shared.baselines import flex_attention_compiled  # noqa: E402

fns = {"03 flash": flash, "sdpa flash": shared.sdpa_backend("flash"),
       "sdpa cudnn": shared.sdpa_backend("cudnn"), "flex attention": flex_attention_compiled()}
start = time.time()
for d in (128, 64):
    for causal in (False, True):
        if time.time() - start > budget:
            print(f"SKIPPED D={d} causal={causal}: out of time")
            continue
        shapes = [(4, 32, n, d) for n in (1024, 2048, 4096, 8192, 16384)]
        rows = shared.quick_benchmark(fns, shapes=shapes, causal=causal, dtype=torch.float16,
                                      modes=("bwd", "fwd+bwd"), warmup=10, rep=50)
        tag = f"d{d}_{'causal' if causal else 'full'}"
        shared.save_results(out_dir / f"backward_{tag}.json", rows, step="03_backward",
                            command=f"python benchmarks/step03_backward_grid.py ({tag})")
