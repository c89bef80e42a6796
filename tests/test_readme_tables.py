"""Every results table in a README is what make_tables.py generates from the committed results.

A number edited by hand, or a results file updated without regenerating the
posts, fails here; the fix is `python make_tables.py`.
"""
import importlib.util
import re
from pathlib import Path

import pytest

import shared

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_tables", ROOT / "make_tables.py")
make_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_tables)


def _block(readme: Path, marker: str) -> str:
    match = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", readme.read_text(), re.S)
    return match.group(1) if match else None


@pytest.mark.parametrize("entry", make_tables.TABLES, ids=lambda e: f"{e[0]}:{e[2]}")
def test_step_tables_match_results(entry):
    folder, results, marker, impls, own, others = entry
    readme, path = ROOT / folder / "README.md", ROOT / folder / results
    if not readme.exists() or not path.exists() or _block(readme, marker) is None:
        pytest.skip("this post or its results do not exist yet")
    data = shared.load_results(path)
    assert data["env"].get("gpu") and data["env"].get("torch") and data["env"].get("triton")
    text = shared.env_line(data["env"]) + f" Command: `{data['meta'].get('command', '?')}`.\n\n"
    text += make_tables.step_tables(data["rows"], impls, own, others)
    assert _block(readme, marker) == text.strip(), f"run `python make_tables.py` to regenerate {readme}"


def test_progression_table_matches_results():
    assert _block(ROOT / "README.md", "progression") == make_tables.progression_rows().strip()


@pytest.mark.parametrize("entry, render", [(make_tables.STEP02_SWEEP, make_tables.sweep_tables),
                                           (make_tables.STEP02_RANGE, make_tables.range_stages_tables)],
                         ids=lambda e: e[2] if isinstance(e, tuple) else "")
def test_step02_experiment_tables_match_results(entry, render):
    folder, results, marker = entry[:3]
    readme, path = ROOT / folder / "README.md", ROOT / folder / results
    if not readme.exists() or not path.exists() or _block(readme, marker) is None:
        pytest.skip("this table's results file or marker does not exist yet")
    assert _block(readme, marker) == render(shared.load_results(path)).strip(), "run `python make_tables.py`"
