"""Join the part files of a grid that ran in several device calls into one results file.

    python benchmarks/merge_results.py OUT.json PART.json [PART.json ...]

Keeps the first part's environment stamp, concatenates the rows, and records
each part's metadata (command, ceilings) under ``meta.parts``. Only joins parts
from the same GPU (it refuses others): ratios are only meaningful within a run,
and every row's ratios are computed against rows of its own part.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import shared  # noqa: E402


def merge(out, parts, **meta):
    loaded = [shared.load_results(p) for p in parts]
    gpus = {d["env"].get("gpu") for d in loaded}
    if len(gpus) > 1:
        raise ValueError(f"parts from different GPUs ({', '.join(sorted(map(str, gpus)))}): "
                         "keep them in separate results files")
    data = {"env": loaded[0]["env"], "meta": {**meta, "parts": [d["meta"] for d in loaded]},
            "rows": [row for d in loaded for row in d["rows"]]}
    Path(out).write_text(json.dumps(data, indent=1) + "\n")
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the merged results file to write")
    parser.add_argument("parts", type=Path, nargs="+", help="the part files, in order")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    try:
        data = merge(args.out, args.parts, command="python benchmarks/merge_results.py " + " ".join(argv))
    except ValueError as exc:
        sys.exit(f"merge_results.py: {exc}")
    print(f"wrote {args.out}: {len(data['rows'])} rows from {len(args.parts)} parts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
