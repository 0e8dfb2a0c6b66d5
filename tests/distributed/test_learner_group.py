"""`vla-rl train` with two data-parallel learners: Ray actors joined by torch.distributed (gloo),
checkpointed and resumed with their optimiser state."""

import json

import pytest

from tests.train.test_trainer import tiny_checkpoint  # noqa: F401  (module fixture)
from vla_rl.cli.main import main

ray = pytest.importorskip("ray")


def _train(tmp_path, checkpoint, iterations: int, *extra: str) -> list[str]:
    return ["train", "--set", f"init_checkpoint={checkpoint}", "--set", "tasks=[Reach]",
            "--set", f"out_dir={tmp_path / 'rl'}", "--set", f"iterations={iterations}", "--set", "group_size=2",
            "--set", "groups_per_iteration=2", "--set", "max_sampling_rounds=1", "--set", "eval_episodes_per_task=0",
            "--set", "checkpoint_every=1", "--set", "algorithm.dynamic_sampling=false",
            "--set", "algorithm.minibatch_size=16", "--set", "algorithm.microbatch_size=4",
            "--set", "rollout={backend: local, num_workers: 1, envs_per_worker: 4}",
            "--set", "learner.num_learners=2", "--set", "learner.threads=1", *extra]


def _cpus_freed(cpus: float, wait_s: float = 20) -> bool:
    import time

    deadline = time.monotonic() + wait_s  # Ray frees resources asynchronously
    while ray.available_resources().get("CPU", 0) < cpus and time.monotonic() < deadline:
        time.sleep(0.5)
    return ray.available_resources().get("CPU", 0) >= cpus


def test_two_learners_train_checkpoint_and_resume(tmp_path, tiny_checkpoint, capsys):  # noqa: F811
    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(_train(tmp_path, tiny_checkpoint, 1)) == 0
        out = capsys.readouterr().out
        assert "learner rank 0/2" in out and "learner rank 1/2" in out and "gloo" in out
        assert _cpus_freed(2)  # the learner actors and their placement group are released
        state = __import__("torch").load(tmp_path / "rl" / "iter_000001" / "training_state.pt", weights_only=False)
        assert state["rl"]["learner"]["optimizer"]["state"]  # the replicas' Adam moments, saved by rank 0
        assert main(_train(tmp_path, tiny_checkpoint, 2, "--resume")) == 0
    finally:
        ray.shutdown()
    lines = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2]
    assert all(line["optimizer_steps"] >= 1 for line in lines)  # (an untrained policy fails: zero advantages)


def test_rank_zero_keeps_the_rendezvous_port_it_hands_out():
    """The port stays bound from the moment it is handed out: a port probed and released could be taken by
    another process before rank 0 bound it again, and the group would not form."""
    import socket

    from vla_rl.distributed.learner_group import _LearnerActor
    from vla_rl.train.learner import AlgorithmConfig, LearnerConfig

    actor = _LearnerActor("unused", AlgorithmConfig(), LearnerConfig(), 0, 1.0, "unused")
    _, port = actor.open_rendezvous()
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("0.0.0.0", port))
