"""Run every benchmark script and write one table of figures with their same-run baselines.

    python benchmarks/run_all.py [--out benchmarks/results] [--only bench_envs bench_grpo ...]

Each script prints one JSON line per figure (``common.emit``); this collects them into
``<out>/latest.json`` and ``<out>/latest.md`` (the table docs/benchmarks.md shows), both written once
both are rendered, each replaced atomically. A record is a timed figure (``FIGURE_KEYS``: the figure,
its same-run baseline and their ratio) or a success table (``TABLE_KEYS``: ``expert_success.py``'s
successes per task, no baseline). A script that fails is listed with its exit code and the tail of its
output; a stdout line that starts with ``{`` but is no valid record becomes an error row naming what is
wrong. Each script runs in its own session: on a timeout its whole process group (its env worker
processes and the Ray it started; Ray's workers exit with their raylet) is stopped, and the figures it
printed before are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vla_rl.core.atomic_file import write_text_atomic

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_envs.py", "bench_decode.py", "bench_grpo.py", "expert_success.py", "bench_libero.py", "bench_critic.py",
           "bench_ros_latency.py", "bench_world_model.py", "bench_learner.py", "bench_mjx.py", "bench_policy_forward.py",
           "bench_prompt.py", "bench_sft_step.py"]
FIGURE_KEYS = ("figure", "value", "baseline", "baseline_value", "ratio")  # common.emit's record
TABLE_KEYS = ("figure", "per_task")  # a success table (expert_success.py): rows of task, successes, episodes
TASK_ROW_KEYS = ("task", "successes", "episodes")
STOP_GRACE_S = 10.0  # after SIGTERM, before SIGKILL


def parse_record(script: str, line: str) -> dict:
    """One stdout line that starts with ``{`` as a record, or an error row saying why it is none."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return _malformed(script, f"not JSON ({error.msg})", line)
    if not isinstance(record, dict):
        return _malformed(script, "not a JSON object", line)
    if "per_task" in record:
        missing = [k for k in TABLE_KEYS if k not in record]
        rows = record["per_task"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in TASK_ROW_KEYS)
                                                 for r in rows):
            return _malformed(script, f"per_task rows need {', '.join(TASK_ROW_KEYS)}", line)
    else:
        missing = [k for k in FIGURE_KEYS if k not in record]
    if missing:
        return _malformed(script, f"missing {', '.join(missing)}", line)
    return {"script": script, **record}


def _malformed(script: str, why: str, line: str) -> dict:
    return {"script": script, "error": f"malformed record: {why}", "output_tail": line[:800]}


def parse_output(script: str, stdout: str) -> list[dict]:
    return [parse_record(script, line.strip()) for line in stdout.splitlines() if line.strip().startswith("{")]


def stop_process_group(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group ``process`` leads (started with ``start_new_session``: the script, its Ray
    and env worker processes), SIGKILL whatever is left after ``grace_s``, and reap ``process``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader once it exits, so only the rest of the group keeps it alive
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    process.wait()


def run_script(script: str, timeout: float, directory: Path = HERE) -> list[dict]:
    """The records ``directory/script`` prints, plus an error row when it fails, times out or prints none."""
    started = time.perf_counter()
    # files, not pipes: a process that outlives the script cannot hold its output back
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, str(directory / script)], stdout=out, stderr=err, text=True,
                                   start_new_session=True)
        try:
            process.wait(timeout=timeout)
            failure = f"exit code {process.returncode}" if process.returncode != 0 else None
        except subprocess.TimeoutExpired:
            stop_process_group(process)
            failure = f"timed out after {timeout:.0f} s"
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    records = parse_output(script, stdout)
    if failure is None and not any("error" not in r for r in records):
        failure = "no figure printed"
    if failure is not None:
        records.append({"script": script, "error": failure, "output_tail": (stderr or stdout)[-800:]})
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
        if "per_task" in r:  # a success table (expert_success.py): successes / episodes per task, no baseline
            rows = ", ".join(f"{t['task']} {t['successes']}/{t['episodes']}" for t in r["per_task"])
            lines.append(f"| {r['script']} | {r['figure']} | {rows} | | | |")
            continue
        lines.append(f"| {r['script']} | {r['figure']} | {r['value']} {r.get('unit', '')} | {r['baseline']} | "
                     f"{r['baseline_value']} | {r['ratio']} |")
    if machine:
        gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
        lines += ["", f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores{gpu}, {machine.get('platform')}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--only", nargs="+", help="script names (without .py) to run")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    args = parser.parse_args(argv)
    scripts = [s for s in SCRIPTS if not args.only or s.removesuffix(".py") in args.only]
    records = []
    for script in scripts:
        print(f"running {script} ...", file=sys.stderr, flush=True)
        records += run_script(script, args.timeout)
    as_json, as_markdown = json.dumps(records, indent=1) + "\n", to_markdown(records)  # both, before either is written
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "latest.json", as_json)
    write_text_atomic(args.out / "latest.md", as_markdown)
    print(as_markdown)


if __name__ == "__main__":
    main()
