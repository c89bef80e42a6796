"""Every results table in a README is what make_tables.py generates from the committed results.

A number edited by hand, or a results file updated without regenerating the
posts, fails here; the fix is `python make_tables.py`.
"""
import importlib.util
import json
from pathlib import Path

import pytest

import shared

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_tables", ROOT / "make_tables.py")
make_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_tables)


@pytest.mark.parametrize("entry", make_tables.TABLES, ids=lambda e: f"{e[0]}:{e[2]}")
def test_step_tables_match_results(entry):
    folder, results, marker, impls, own, others = entry
    readme, path = make_tables.post_for(folder, marker), ROOT / folder / results
    if not readme.exists() or not path.exists() or make_tables.current_block(readme, marker) is None:
        pytest.skip("this post or its results do not exist yet")
    data = shared.load_results(path)
    assert data["env"].get("gpu") and data["env"].get("torch") and data["env"].get("triton")
    text = shared.env_line(data["env"]) + f" Command: `{data['meta'].get('command', '?')}`.\n\n"
    text += make_tables.step_tables(data["rows"], impls, own, others)
    assert make_tables.current_block(readme, marker) == text.strip(), \
        f"run `python make_tables.py` to regenerate {readme}"


def test_progression_table_matches_results():
    current = make_tables.current_block(ROOT / "README.md", "progression")
    assert current == make_tables.progression_rows().strip(), "run `python make_tables.py`"


def test_check_mode_writes_nothing_and_agrees(capsys):
    before = {p: p.read_text() for p in ROOT.glob("**/*.md") if ".venv" not in p.parts}
    assert make_tables.main(["--check"]) == 0
    assert "every table is current" in capsys.readouterr().out
    assert before == {p: p.read_text() for p in before}


def _row(impl, n, ms):
    return {"impl": impl, "batch": 4, "heads": 32, "n_q": n, "n_k": n, "kv_heads": 32, "head_dim": 64,
            "causal": False, "dtype": "float16", "mode": "fwd", "ms": ms, "tflops": 1.0, "status": "ok"}


def _write(root, folder, results, gpu, rows):
    path = root / folder / results
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"env": {"gpu": gpu}, "meta": {}, "rows": rows}))


def test_progression_takes_every_ratio_from_the_steps_own_run(tmp_path, monkeypatch):
    # Step 01 on one GPU with the legacy baseline, step 03 on another with the forced backends.
    _write(tmp_path, "01_basic_attention", "results/results.json", "GPU A",
           [_row("01 basic", n, 10.0) for n in (1024, 4096)]
           + [_row("naive torch", n, 5.0) for n in (1024, 4096)]
           + [_row("torch sdpa", n, 1.0) for n in (1024, 4096)])
    _write(tmp_path, "03_advanced_optimizations", "results/forward.json", "GPU B",
           [_row("03 flash", n, 1.0) for n in (1024, 4096)]
           + [_row("naive torch", n, 8.0) for n in (1024, 4096)]
           + [_row("sdpa flash", n, 1.5) for n in (1024, 4096)]
           + [_row("sdpa cudnn", n, 0.9) for n in (1024, 4096)])
    monkeypatch.setattr(make_tables, "ROOT", tmp_path)
    text = make_tables.progression_rows()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| step"))
    assert header.split(" | ")[3:7] == ["vs naive torch", "vs SDPA flash", "vs SDPA cuDNN",
                                        "vs SDPA, own backend choice"]
    row01 = next(line for line in lines if line.startswith("| 01 basic | 1024"))
    row03 = next(line for line in lines if line.startswith("| 03 flash | 1024"))
    assert "| 0.50x | – | – | 0.10x | GPU A |" in row01   # its own naive and SDPA rows, GPU A
    assert "| 8.00x | 1.50x | 0.90x | – | GPU B |" in row03  # never GPU A's baselines
    assert "| 02 vectorized | – | coming |" in text          # no results file yet
    caption = " ".join(lines[:lines.index("")])
    assert "not causal" in caption and "2 different GPUs" in caption
    assert "01 basic did not time SDPA flash and SDPA cuDNN" in caption


@pytest.mark.parametrize("entry, render", [(make_tables.STEP02_SWEEP, make_tables.sweep_tables),
                                           (make_tables.STEP02_RANGE, make_tables.range_stages_tables)],
                         ids=lambda e: e[2] if isinstance(e, tuple) else "")
def test_step02_experiment_tables_match_results(entry, render):
    folder, results, marker = entry[:3]
    readme, path = ROOT / folder / "README.md", ROOT / folder / results
    if not readme.exists() or not path.exists() or make_tables.current_block(readme, marker) is None:
        pytest.skip("this table's results file or marker does not exist yet")
    assert make_tables.current_block(readme, marker) == render(shared.load_results(path)).strip(), "run `python make_tables.py`"


@pytest.mark.parametrize("entry", make_tables.STEP03_EXPERIMENTS, ids=lambda e: e[2])
def test_step03_experiment_tables_match_results(entry):
    results, post, marker, render, kwargs = entry
    readme, path = ROOT / make_tables.STEP03 / post, ROOT / make_tables.STEP03 / results
    if not readme.exists() or not path.exists() or make_tables.current_block(readme, marker) is None:
        pytest.skip("this table's results file or marker does not exist yet")
    data = shared.load_results(path)
    assert data["env"].get("gpu") and data["env"].get("torch") and data["env"].get("triton")
    assert make_tables.current_block(readme, marker) == render(data, **kwargs).strip(), \
        "run `python make_tables.py`"


def test_every_step03_marker_is_generated():
    """No marker pair in step 03's post is left without a generator (an empty block would pass unseen)."""
    import re

    generated = {(readme.name, marker) for readme, marker, _ in make_tables.generated_blocks()
                 if readme.parent.name == make_tables.STEP03}
    for post in ("README.md", "BACKWARD.md"):
        path = ROOT / make_tables.STEP03 / post
        if not path.exists():
            continue
        for marker in re.findall(r"<!-- (\w+):start -->", path.read_text()):
            assert (post, marker) in generated, f"{post}: the {marker} block has no generator"


@pytest.mark.parametrize("entry", make_tables.PROFILING_TABLES, ids=lambda e: e[1])
def test_profiling_tables_match_results(entry):
    results, marker, render = entry
    readme, path = ROOT / make_tables.PROFILING / "README.md", ROOT / results
    if not readme.exists() or not path.exists() or make_tables.current_block(readme, marker) is None:
        pytest.skip("this table's results file or marker does not exist yet")
    assert make_tables.current_block(readme, marker) == render(shared.load_results(path)).strip(), \
        "run `python make_tables.py`"


def test_every_profiling_marker_is_generated_or_waits_for_its_file():
    """Each marker pair in the profiling chapter has a generator; a block is empty only while its file is missing."""
    import re

    readme = ROOT / make_tables.PROFILING / "README.md"
    if not readme.exists():
        pytest.skip("no profiling chapter yet")
    sources = {marker: results for results, marker, _ in make_tables.PROFILING_TABLES}
    sources.update({marker: excerpt for excerpt, marker in make_tables.PROFILING_EXCERPTS})
    for marker in re.findall(r"<!-- (\w+):start -->", readme.read_text()):
        assert marker in sources, f"04_profiling/README.md: the {marker} block has no generator"
        if (ROOT / sources[marker]).exists():
            assert make_tables.current_block(readme, marker), f"the {marker} block is empty: run make_tables.py"
