"""Shared by the benchmark scripts: machine description and the one-JSON-line output."""

from __future__ import annotations

import json
import os
import platform
import time


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    from sim_envs.vector import usable_cpus

    # the cores this process may run on (a cpuset narrows them), beside the machine's
    return {"cpu": cpu, "cores": usable_cpus(), "machine_cores": os.cpu_count(), "gpu": gpu_name(),
            "python": platform.python_version(),
            "platform": platform.platform()}


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name (``nvidia-smi``), or None on a machine without one."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=20).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return names[0].strip() or None


def _three_significant(x: float) -> float:
    """``x`` to 3 significant digits: a ratio of 0.0004 must not print as 0.0."""
    return float(f"{x:.3g}")


def emit(figure: str, value: float, unit: str, baseline_name: str, baseline: float, **extra) -> dict:
    """Print one JSON line: the figure, its same-run baseline, their ratio and the machine."""
    record = {
        "figure": figure, "value": round(value, 3), "unit": unit, "baseline": baseline_name,
        "baseline_value": round(baseline, 3), "ratio": _three_significant(value / baseline) if baseline else None,
        **extra, "machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(json.dumps(record), flush=True)
    return record
