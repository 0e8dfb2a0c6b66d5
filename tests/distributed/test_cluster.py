"""A real two-node Ray cluster on loopback (two raylets, `scripts/ray_local_cluster.sh`) and a GRPO
job submitted with `ray job submit ... vla-rl train --ray-address auto`: its rollout actors must
land on both nodes."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ray_local_cluster.sh"


def _ray_env() -> dict:
    return {**os.environ, "RAY": str(Path(sys.executable).parent / "ray"), "RAY_AUTH_MODE": "token",
            "RAY_ADDRESS": "http://127.0.0.1:8265"}


def _ray(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "ray"), *args], env=_ray_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_grpo_job_spreads_rollout_actors_over_two_nodes(tmp_path):
    import ray

    from tests.policy.conftest import make_policy
    from vla_rl.policy.checkpoint import save_checkpoint

    ray.shutdown()  # this process must not hold a local Ray that `ray stop` would kill under it
    policy = make_policy()
    checkpoint = save_checkpoint(tmp_path / "sft" / "step_000001", policy.model, policy.action_tokenizer,
                                 extra={"trained_tasks": ["Reach"]})
    started = subprocess.run([str(SCRIPT), "start", "1"], env=_ray_env(), capture_output=True, text=True, timeout=240)
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        status = _ray("status", "--address=127.0.0.1:6390").stdout
        for _ in range(30):  # the second raylet registers a moment after `ray start` returns
            if "node_second" in status:
                break
            time.sleep(1)
            status = _ray("status", "--address=127.0.0.1:6390").stdout
        assert "node_head" in status and "node_second" in status, status
        train = (f"cd {REPO} && {sys.executable} -m vla_rl.cli.main train --ray-address auto "
                 f"--set init_checkpoint={checkpoint} --set tasks=[Reach] --set out_dir={tmp_path / 'rl'} "
                 "--set iterations=1 --set group_size=2 --set groups_per_iteration=2 --set max_sampling_rounds=1 "
                 "--set eval_episodes_per_task=0 --set rollout.num_workers=2 --set rollout.envs_per_worker=2 "
                 "--set rollout.cpus_per_worker=1")
        submitted = _ray("job", "submit", "--", "bash", "-c", train, timeout=600)
        logs = submitted.stdout + submitted.stderr
        assert submitted.returncode == 0 and "succeeded" in logs, logs[-3000:]
        nodes = re.search(r"rollout workers on nodes: \[([^\]]*)\]", logs)
        assert nodes, logs[-3000:]
        assert len(set(re.findall(r"'([0-9a-f]+)'", nodes.group(1)))) == 2  # one actor on each node
        assert (tmp_path / "rl" / "iter_000001").is_dir()
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=_ray_env(), capture_output=True, timeout=120)
