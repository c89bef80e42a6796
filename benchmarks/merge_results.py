"""Join the part files of a grid that ran in several device calls into one results file.

    python benchmarks/merge_results.py OUT.json PART.json [PART.json ...]

Keeps the first part's environment stamp, concatenates the rows, and records
each part's metadata (command, ceilings) under ``meta.parts``. Only join parts
from the same machine and session: ratios are only meaningful within a run,
and every row's ratios are computed against rows of its own part.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import shared  # noqa: E402


def merge(out, parts, **meta):
    loaded = [shared.load_results(p) for p in parts]
    data = {"env": loaded[0]["env"], "meta": {**meta, "parts": [d["meta"] for d in loaded]},
            "rows": [row for d in loaded for row in d["rows"]]}
    Path(out).write_text(json.dumps(data, indent=1) + "\n")
    return data


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    data = merge(sys.argv[1], sys.argv[2:], command="python benchmarks/merge_results.py " + " ".join(sys.argv[1:]))
    print(f"wrote {sys.argv[1]}: {len(data['rows'])} rows from {len(sys.argv) - 2} parts")
