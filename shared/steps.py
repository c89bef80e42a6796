"""Import a step's script as a module, from anywhere: ``load_step("01")``.

The step folders start with digits, so they cannot be imported by name; this
loads the script by path (once) so tests, later steps and readers can reuse a
kernel: ``basic_attention = load_step("01").basic_attention``.
"""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP_SCRIPTS = {
    "01": ROOT / "01_basic_attention" / "basic_attention.py",
    "02": ROOT / "02_vectorized_attention" / "vectorized_attention.py",
    "03": ROOT / "03_advanced_optimizations" / "flash_attention.py",
}


def load_step(step: str, script: str = None):
    """The module of step "01", "02" or "03" (its kernel, launcher and helpers).

    ``script``: a companion script in the step's folder instead, e.g.
    ``load_step("03", "ring_attention.py")``.
    """
    if step not in STEP_SCRIPTS:
        raise ValueError(f"unknown step {step!r}; choose from {sorted(STEP_SCRIPTS)}")
    path = STEP_SCRIPTS[step] if script is None else STEP_SCRIPTS[step].parent / script
    if not path.exists():
        raise FileNotFoundError(f"{path} is not there: load_step needs the series' checkout (run from it, "
                                "or install it with `pip install -e .`, not `pip install .`)")
    name = f"step{step}_{path.stem}"  # the same name in every process (spawned workers unpickle by it)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]
