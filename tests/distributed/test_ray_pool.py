"""Real Ray actors: weight broadcast with versions, parallel collection, an actor killed mid-run."""

import numpy as np
import pytest

from tests.train.test_trainer import tiny_checkpoint  # noqa: F401  (module fixture)
from vla_rl.cli.factories import make_pool
from vla_rl.core import TaskSpec
from vla_rl.train.trainer import RolloutConfig

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_pool_versions_collects_and_survives_a_killed_actor(ray_session, tiny_checkpoint):  # noqa: F811
    rollout = RolloutConfig(backend="ray", num_workers=2, envs_per_worker=2)
    pool = make_pool(rollout, "tabletop", tiny_checkpoint, temperature=1.0, seed=0)
    try:
        assert len(pool.node_ids) == 2 and pool.slots_per_worker == 2
        state = {k: v.clone() for k, v in _load_weights(tiny_checkpoint).items()}
        pool.set_weights(state, version=3)
        shares = [[TaskSpec("Reach", 0, "train")] * 2, [TaskSpec("PressButton", 1, "train")] * 2]
        results = pool.collect(shares)
        assert [len(batch.success) for batch, _ in results] == [2, 2]
        assert {batch.policy_version for batch, _ in results} == {3}
        assert [spec.task for spec in results[1][0].task_specs] == ["PressButton"] * 2

        pool.kill_actor(0)
        results = pool.collect(shares)  # actor 0 is replaced, gets version 3, its share is re-collected
        assert pool.restarts == 1
        assert [len(batch.success) for batch, _ in results] == [2, 2]
        assert {batch.policy_version for batch, _ in results} == {3}
        outcomes = pool.evaluate([TaskSpec("Reach", i, "eval") for i in range(3)])
        assert sorted(o.spec.init_state_id for o in outcomes) == [0, 1, 2]
        by_expected = pool.evaluate([TaskSpec("Reach", i, "eval") for i in range(3)], "expected")  # through Ray
        assert sorted(o.spec.init_state_id for o in by_expected) == [0, 1, 2]
        assert all(np.isfinite(batch.old_logprobs).all() for batch, _ in results)

        # an actor that dies between calls (while the learner updates) is replaced at the weight broadcast, and
        # the replacement, with the dead actor's seed, collects with the new version what actor 1 did
        seeded = [[TaskSpec("Reach", 0, "train")] * 2] * 2
        reference = pool.collect(seeded, sampling_seed=5)
        pool.kill_actor(1)
        pool.set_weights(state, version=4)
        assert pool.restarts == 2
        again = pool.collect(seeded, sampling_seed=5)
        assert {batch.policy_version for batch, _ in again} == {4}
        assert np.array_equal(again[1][0].actions, reference[1][0].actions)  # the same weights, seed and round
    finally:
        pool.close()


def _load_weights(checkpoint):
    from vla_rl.policy.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint)
    return model.state_dict()


def test_each_actor_renders_on_its_own_gpu_with_egl():
    from vla_rl.distributed.ray_pool import egl_device_for

    assert egl_device_for([3], {"MUJOCO_GL": "egl"}) == "3"
    assert egl_device_for(["1", "2"], {"MUJOCO_GL": "egl"}) == "1"
    assert egl_device_for([3], {"MUJOCO_GL": "egl", "MUJOCO_EGL_DEVICE_ID": "0"}) is None  # the user's choice wins
    assert egl_device_for([3], {"MUJOCO_GL": "osmesa"}) is None and egl_device_for([], {"MUJOCO_GL": "egl"}) is None


def test_an_empty_address_starts_a_local_ray_and_auto_joins_the_running_one(monkeypatch):
    """Without an address ray.init would join a running cluster (RAY_ADDRESS, /tmp/ray/ray_current_cluster):
    `vla-rl train` without --ray-address must start its own Ray (address="local")."""
    from vla_rl.distributed import ray_pool

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert ray_pool.init_ray("", num_cpus=2) == {"CPU": 2.0}
    assert ray_pool.init_ray("auto") == {"CPU": 2.0}
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2
    assert calls[1]["address"] == "auto"


def test_a_ray_address_nothing_answers_on_is_a_one_line_error_at_once(tmp_path, capsys, monkeypatch,
                                                                      tiny_checkpoint):  # noqa: F811
    """ray.init retries an unreachable address for a minute or more, then names its own flag."""
    import socket
    import time

    import ray

    from vla_rl.cli.main import main

    # as in a fresh `vla-rl train` process, whatever Ray session earlier tests of this process left running
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with socket.socket() as silent:  # bound, never listening: connecting is refused
        silent.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        code = main(["train", "--set", f"init_checkpoint={tiny_checkpoint}", "--set", f"out_dir={tmp_path / 'run'}",
                     "--ray-address", address])
    assert code == 2 and time.monotonic() - started < 30
    error = capsys.readouterr().err
    assert error.startswith("error: no Ray cluster answers at --ray-address") and "Traceback" not in error
