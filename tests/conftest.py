"""Make the repo importable and pick the interpreter before any test imports triton."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shared  # noqa: E402,F401  (sets TRITON_INTERPRET=1 when there is no GPU)
