"""Run every benchmark script and write one table of figures with their same-run baselines.

    python benchmarks/run_all.py [--out benchmarks/results] [--only bench_envs bench_grpo ...]

Each script prints one JSON line (``common.emit``); this collects them into
``<out>/latest.json`` and ``<out>/latest.md`` (the table docs/benchmarks.md shows). A script that
fails is listed with its exit code and the tail of its output instead of a figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_envs.py", "bench_decode.py", "bench_grpo.py", "expert_success.py", "bench_libero.py", "bench_critic.py",
           "bench_ros_latency.py", "bench_world_model.py", "bench_learner.py", "bench_mjx.py", "bench_policy_forward.py",
           "bench_prompt.py", "bench_sft_step.py"]


def run_script(script: str, timeout: float) -> list[dict]:
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(HERE / script)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"script": script, "error": f"timed out after {timeout:.0f} s"}]
    records = []
    for line in done.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                records.append({"script": script, **json.loads(line)})
            except json.JSONDecodeError:
                pass
    if done.returncode != 0 or not records:
        tail = (done.stderr or done.stdout)[-800:]
        records.append({"script": script, "error": f"exit code {done.returncode}", "output_tail": tail})
    for record in records:
        record["script_seconds"] = round(time.perf_counter() - started, 1)
    return records


def to_markdown(records: list[dict]) -> str:
    lines = ["| script | figure | value | baseline | baseline value | ratio |", "|---|---|---|---|---|---|"]
    machine = None
    for r in records:
        if "error" in r:
            lines.append(f"| {r['script']} | **failed**: {r['error']} | | | | |")
            continue
        machine = machine or r.get("machine")
        if "value" not in r:  # a per-task table (expert_success.py): successes / episodes per task
            rows = ", ".join(f"{t['task']} {t['successes']}/{t['episodes']}" for t in r.get("per_task", []))
            lines.append(f"| {r['script']} | {r['figure']} | {rows} | | | |")
            continue
        lines.append(f"| {r['script']} | {r['figure']} | {r['value']} {r.get('unit', '')} | {r['baseline']} | "
                     f"{r['baseline_value']} | {r['ratio']} |")
    if machine:
        gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
        lines += ["", f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores{gpu}, {machine.get('platform')}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--only", nargs="+", help="script names (without .py) to run")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    args = parser.parse_args()
    scripts = [s for s in SCRIPTS if not args.only or s.removesuffix(".py") in args.only]
    records = []
    for script in scripts:
        print(f"running {script} ...", file=sys.stderr, flush=True)
        records += run_script(script, args.timeout)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(records, indent=1) + "\n")
    (args.out / "latest.md").write_text(to_markdown(records))
    print(to_markdown(records))


if __name__ == "__main__":
    main()
