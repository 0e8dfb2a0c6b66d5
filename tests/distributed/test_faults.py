"""Injected faults during GRPO: an env worker process SIGKILLed mid-rollout, a Ray rollout actor
dying mid-rollout, the driver SIGKILLed mid-run, its newest checkpoint corrupted. Each time the
iteration completes with every requested episode collected exactly once, or the run resumes from the
last good checkpoint with its metric history continuing without a gap or a duplicate."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.test_trainer import tiny_checkpoint  # noqa: F401  (module fixture)
from vla_rl.cli.factories import eval_state_counter, load_policy, make_vec_env
from vla_rl.cli.main import main
from vla_rl.rollout.worker import LocalRolloutPool
from vla_rl.train.learner import AlgorithmConfig
from vla_rl.train.trainer import Trainer, TrainConfig

REPO = Path(__file__).resolve().parents[2]
GROUP_SIZE = 2


class CrashOnce:
    """A vector env that crashes at its ``at_step``-th step unless ``marker`` exists (then creates
    it, so the replacement built after the crash runs normally). ``how``: ``kill_env_worker``
    SIGKILLs the env's worker process (the env then raises ``EnvCrashed``), ``exit_process`` ends
    the process the env lives in (a Ray actor dies)."""

    def __init__(self, env, marker: str, at_step: int, how: str):
        self.env, self.marker, self.at_step, self.how = env, Path(marker), at_step, how
        self.steps = 0

    @property
    def spec(self):
        return self.env.spec

    def reset(self, tasks):
        return self.env.reset(tasks)

    def step(self, actions):
        self.steps += 1
        if self.steps == self.at_step and self._claim_marker():
            if self.how == "kill_env_worker":
                os.kill(self.env._processes[0].pid, signal.SIGKILL)
            else:
                os._exit(17)
        return self.env.step(actions)

    def _claim_marker(self) -> bool:
        """Create the marker atomically: with several workers reaching ``at_step`` together, a
        check-then-touch would let more than one of them crash."""
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def close(self):
        self.env.close()


def crashing_env(marker: str, how: str, at_step: int = 5):
    processes = 1 if how == "kill_env_worker" else 0
    return CrashOnce(make_vec_env("tabletop", 2, 32, False, processes), marker, at_step, how)


def _config(tmp_path, checkpoint, **overrides) -> TrainConfig:
    base = dict(init_checkpoint=checkpoint, out_dir=tmp_path / "rl", tasks=("Reach",), iterations=1,
                group_size=GROUP_SIZE, groups_per_iteration=2, max_sampling_rounds=1, eval_episodes_per_task=0,
                algorithm=AlgorithmConfig(dynamic_sampling=False, minibatch_size=64))
    base.update(overrides)
    return TrainConfig(**base)


def _one_iteration(config: TrainConfig, pool) -> tuple[Trainer, list[dict]]:
    """Train ``config`` (one iteration) on ``pool``, closing it after; returns the metric rows."""
    rows: list[dict] = []
    try:
        trainer = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False)
        trainer.run(on_iteration=rows.append)
    finally:
        pool.close()
    return trainer, rows


def _assert_iteration_complete(trainer: Trainer, metrics: dict, workers: int) -> None:
    """Each worker has 2 slots = one group of 2: every group sampled once, all kept, none twice."""
    assert metrics["sampled_groups"] == metrics["kept_groups"] == workers
    assert trainer.sampler.groups_drawn == workers
    assert metrics["decisions"] > 0 and not metrics["skipped_update"]


def test_env_worker_killed_mid_rollout_is_rebuilt_and_its_wave_recollected(tmp_path, tiny_checkpoint):  # noqa: F811
    config = _config(tmp_path, tiny_checkpoint)
    pool = LocalRolloutPool(functools.partial(crashing_env, str(tmp_path / "crashed"), "kill_env_worker"),
                            functools.partial(load_policy, str(tiny_checkpoint), 1.0), num_workers=2)
    trainer, rows = _one_iteration(config, pool)
    assert (tmp_path / "crashed").exists()  # the fault did happen
    assert rows[0]["env_restarts"] == 1 and rows[0]["actor_restarts"] == 0
    _assert_iteration_complete(trainer, rows[0], workers=2)


def test_rollout_actor_dying_mid_rollout_is_replaced_and_its_share_recollected(tmp_path, tiny_checkpoint):  # noqa: F811
    ray = pytest.importorskip("ray")
    from vla_rl.distributed.ray_pool import RayRolloutPool

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # actors unpickle this test's env class
    config = _config(tmp_path, tiny_checkpoint)
    pool = RayRolloutPool(functools.partial(crashing_env, str(tmp_path / "crashed"), "exit_process"),
                          functools.partial(load_policy, str(tiny_checkpoint), 1.0), num_workers=2)
    try:
        trainer, rows = _one_iteration(config, pool)
    finally:
        ray.shutdown()
    assert (tmp_path / "crashed").exists()
    assert rows[0]["actor_restarts"] == 1 and pool.restarts == 1
    _assert_iteration_complete(trainer, rows[0], workers=2)  # the dead actor's group re-collected, not re-drawn


def test_driver_killed_mid_run_resumes_past_a_corrupt_checkpoint_without_gaps(tmp_path, tiny_checkpoint,  # noqa: F811
                                                                             capsys):
    out = tmp_path / "rl"
    args = ["train", "--set", f"init_checkpoint={tiny_checkpoint}", "--set", "tasks=[Reach]", "--set", f"out_dir={out}",
            "--set", "iterations=6", "--set", "group_size=2", "--set", "groups_per_iteration=1",
            "--set", "max_sampling_rounds=1", "--set", "eval_episodes_per_task=0", "--set", "checkpoint_every=1",
            "--set", "algorithm.dynamic_sampling=false", "--set", "rollout={backend: local, num_workers: 1, "
                                                                  "envs_per_worker: 2}"]
    driver = subprocess.Popen([sys.executable, "-m", "vla_rl.cli.main", *args], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "iter_000003" / "manifest.json").exists():
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the driver never wrote its third checkpoint"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    finished = sorted(p.name for p in out.glob("iter_*") if (p / "manifest.json").exists())
    assert "iter_000006" not in finished  # killed mid-run
    newest = out / finished[-1]
    (newest / "model.safetensors").write_bytes(b"half a file")  # a corrupt newest checkpoint
    good = int(finished[-2].split("_")[1])
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    said = capsys.readouterr()
    assert f"resuming from {out / finished[-2]}" in said.out
    skipped = [line for line in said.err.splitlines() if "skipping checkpoint" in line]
    assert len(skipped) == 1 and newest.name in skipped[0]  # one plain line, not a UserWarning (or two)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4, 5, 6]
    state = __import__("torch").load(out / "iter_000006" / "training_state.pt", weights_only=False)
    assert state["rl"]["sampler"]["groups_drawn"] == 6  # one group per iteration: none skipped, none repeated
    assert good < int(newest.name.split("_")[1])
