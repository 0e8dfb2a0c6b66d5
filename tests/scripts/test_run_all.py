"""benchmarks/run_all.py: malformed records become error rows, a timeout keeps the figures printed before it
and stops the script's whole process group, and the two result files are written together."""

import json
import os
import textwrap
import time

import pytest

from tests.scripts.conftest import BENCHMARKS, load_script

FIGURE = {"figure": "f_per_s", "value": 2.0, "unit": "1/s", "baseline": "b_per_s", "baseline_value": 1.0,
          "ratio": 2.0, "machine": {"cpu": "x", "cores": 2, "gpu": None, "platform": "p"}}
TABLE = {"figure": "expert_success_rate", "per_task": [{"task": "Reach", "successes": 50, "episodes": 50}]}


@pytest.fixture(scope="module")
def run_all():
    return load_script("run_all", BENCHMARKS)


def test_only_complete_records_are_figures_and_the_rest_error_rows(run_all):
    stdout = "\n".join([json.dumps(FIGURE), json.dumps(TABLE), json.dumps({"value": 1.0}), "{not json",
                        json.dumps({"figure": "t", "per_task": [{"task": "Reach"}]}), "a log line"])
    records = run_all.parse_output("bench_x.py", stdout)
    assert [r.get("figure") for r in records[:2]] == ["f_per_s", "expert_success_rate"]
    assert records[2]["error"] == "malformed record: missing figure, baseline, baseline_value, ratio"
    assert records[3]["error"].startswith("malformed record: not JSON")
    assert records[4]["error"] == "malformed record: per_task rows need task, successes, episodes"
    table = run_all.to_markdown(records)  # error rows render; no KeyError
    assert table.count("**failed**: malformed record") == 3 and "| bench_x.py | f_per_s | 2.0 1/s |" in table


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie no one reaped yet is dead too
    except FileNotFoundError:
        return True


def test_a_timeout_keeps_the_printed_figures_and_stops_the_whole_process_group(run_all, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = tmp_path / "bench_hangs.py"
    script.write_text(textwrap.dedent(f"""
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print(json.dumps({FIGURE!r}), flush=True)
        time.sleep(600)
    """))
    started = time.monotonic()
    records = run_all.run_script(script.name, timeout=3, directory=tmp_path)
    assert time.monotonic() - started < 30
    assert records[0]["figure"] == "f_per_s"
    assert records[1]["error"] == "timed out after 3 s"
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _dead(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _dead(grandchild):
        os.kill(grandchild, 9)
        pytest.fail("the script's child process outlived the timeout")


def test_main_writes_both_files_from_the_same_records(run_all, tmp_path, monkeypatch):
    out = tmp_path / "results"
    out.mkdir()
    (out / "latest.md").write_text("stale\n")
    monkeypatch.setattr(run_all, "run_script", lambda script, timeout: run_all.parse_output(
        script, json.dumps(FIGURE) + "\n" + json.dumps({"value": 3})))
    run_all.main(["--out", str(out), "--only", "bench_envs"])
    records = json.loads((out / "latest.json").read_text())
    assert [r.get("figure", r.get("error")) for r in records] == ["f_per_s", "malformed record: missing figure, "
                                                                 "baseline, baseline_value, ratio"]
    assert (out / "latest.md").read_text() == run_all.to_markdown(records)


def test_the_machine_record_counts_the_cores_a_benchmark_may_use(monkeypatch):
    """Under a cpuset the per-core figures divide by the cores the process may run on, as recorded."""
    common = load_script("common", BENCHMARKS)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    record = common.machine()
    assert record["cores"] == 1 and record["machine_cores"] == os.cpu_count()
