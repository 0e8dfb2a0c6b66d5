"""Shared by the tests of scripts/ and benchmarks/: load a script file as a module (neither is a package)."""

import importlib.util
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
BENCHMARKS = SCRIPTS.parent / "benchmarks"


def load_script(name: str, directory: Path = SCRIPTS):
    """``<directory>/<name>.py`` (``scripts/`` by default) as a fresh module."""
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
