"""scripts/ray_local_cluster.sh stop ends only its own cluster's processes (the session its head runs on
RAY_HEAD_PORT and their children), not every Ray process of the user as `ray stop --force` did. Checked with
stand-in processes whose command lines look like Ray's daemons, so no real cluster starts here."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ray_local_cluster.sh"
SLEEP = "import time; time.sleep(120)"
WITH_CHILD = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)")


def _spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True).stdout
    return [int(a) for a, b in (line.split() for line in out.splitlines()) if int(b) == pid]


def test_stop_ends_only_this_clusters_processes(tmp_path):
    session, other = f"session_test_{os.getpid()}_a", f"session_test_{os.getpid()}_b"
    root = tmp_path / "ray"
    root.mkdir()
    (root / "ray_current_cluster").write_text("127.0.0.1:16390")
    port = "16390"
    ours = [_spawn(SLEEP, f"--gcs_server_port={port}", f"--session-name={session}", f"--log_dir={root}/{session}/logs"),
            _spawn(WITH_CHILD, f"--raylet_socket_name={root}/{session}/sockets/raylet")]
    theirs = [_spawn(SLEEP, "--gcs_server_port=0", f"--session-name={other}", f"--session-dir={root}/{other}"),
              _spawn(SLEEP, f"{root}/{session}/logs/raylet.out")]  # a log viewer: the path is no daemon option
    everything = ours + theirs
    try:
        deadline = time.monotonic() + 10
        while not _children(ours[1].pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = _children(ours[1].pid)[0]
        env = {**os.environ, "RAY_HEAD_PORT": port, "RAY_TMPDIR": str(tmp_path), "RAY": "/bin/false",
               "RAY_CLUSTER_STATE": str(tmp_path / "state")}
        done = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"stopped {session} (3 processes)" in done.stdout
        for process in ours:
            process.wait(timeout=10)
        assert not _alive(worker)
        assert all(process.poll() is None for process in theirs)
        assert not (root / "ray_current_cluster").exists()  # it named this cluster
    finally:
        for process in everything:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
