"""RLlib interop: every suite's tasks registered as RLlib envs, and `vla-rl baseline rllib-ppo` end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.rllib.env.env_context import EnvContext  # noqa: E402
from ray.tune.registry import ENV_CREATOR, _global_registry  # noqa: E402

from sim_envs.tasks import TASKS  # noqa: E402
from vla_rl.cli.main import main  # noqa: E402
from vla_rl.core.config import ConfigError  # noqa: E402
from vla_rl.distributed.rllib_envs import (  # noqa: E402
    SEED_FORMULA, make_rllib_env, register_rllib_envs, rllib_env_name)

BASELINE_KEYS = {"env", "suite", "task", "env_steps", "iterations", "wall_seconds", "train_seconds", "curve",
                 "held_out", "held_out_curve", "seeds", "init_states", "observation", "config", "code_commit",
                 "mujoco_version", "gymnasium_version", "ray_version"}


def _created(name, env_config):
    return _global_registry.get(ENV_CREATOR, name)(env_config)


def test_every_tabletop_task_registers_and_steps_from_the_tune_registry():
    names = register_rllib_envs(["tabletop"])
    assert names == [rllib_env_name("tabletop", task) for task in TASKS]
    rng = np.random.default_rng(0)
    for name in names:
        env = _created(name, EnvContext({"seed": 3}, worker_index=1, vector_index=0))
        try:
            assert env.action_space.shape == (7,)
            assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
            obs, info = env.reset()
            assert env.observation_space.contains(obs), name
            assert info["split"] == "train"
            for _ in range(3):
                obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
                assert env.observation_space.contains(obs), name
                assert isinstance(info["success"], bool) and reward in (0.0, 1.0)
        finally:
            env.close()


def test_state_observation_holds_the_simulator_state_and_resets_follow_the_split():
    env = make_rllib_env("tabletop", "Reach", {"init_split": "eval", "seed": 1})
    obs, info = env.reset()
    assert info["split"] == "eval" and 0 <= info["init_state_id"] < 50
    names = env.get_wrapper_attr("state_layout").names
    data = env.unwrapped.data
    block0 = obs[names.index("block0.x"):names.index("block0.x") + 3]
    np.testing.assert_allclose(block0, data.body("block0").xpos, atol=1e-5)
    np.testing.assert_allclose(obs[:3], env.unwrapped.arm.proprio()[:3], atol=1e-5)
    assert obs[names.index("layout.target")] == 0
    obs_again, info_again = env.reset(options={"split": "eval", "init_state_id": info["init_state_id"]})
    np.testing.assert_allclose(obs_again, obs)  # the same held-out init state, the same state vector
    # a train-split env reset to the eval split draws a held-out state
    train_env = make_rllib_env("tabletop", "Reach", {"seed": 1})
    assert train_env.reset()[1]["split"] == "train"
    held_out = train_env.reset(options={"split": "eval"})[1]
    assert held_out["split"] == "eval" and 0 <= held_out["init_state_id"] < 50
    # the same seed on a fresh env gives the same init state (RLlib seeds envs this way)
    twin = make_rllib_env("tabletop", "Reach", {"init_split": "eval", "seed": 1})
    assert twin.reset()[1]["init_state_id"] == info["init_state_id"]
    shaped = make_rllib_env("tabletop", "Reach", {"reward": "progress"})
    shaped.reset(seed=0)
    _, reward, *_ = shaped.step(np.array([1, 0, -1, 0, 0, 0, -1], np.float32))
    assert reward != 0.0  # the progress change, not only the sparse success


def _init_states(env, resets: int = 4, seed: int | None = None) -> list[int]:
    ids = [env.reset(seed=seed)[1]["init_state_id"]]
    return ids + [env.reset()[1]["init_state_id"] for _ in range(resets - 1)]


def test_each_runner_and_sub_env_draws_its_own_init_states():
    # RLlib 2.60 builds every sub-env of a runner from one EnvContext (vector_index 0)
    context = EnvContext({"seed": 7}, worker_index=1, vector_index=0)
    first, second = make_rllib_env("tabletop", "Reach", context), make_rllib_env("tabletop", "Reach", context)
    assert first.stream == (7, 1, 0) and second.stream == (7, 1, 1)
    assert _init_states(first) != _init_states(second)
    # debugging(seed=7) resets sub-env i of runner w with 7 + w + i: runner 1's sub-env 1 and runner 2's sub-env 0
    # both get 9, yet draw different streams
    runner2 = make_rllib_env("tabletop", "Reach", EnvContext({"seed": 7}, worker_index=2, vector_index=0))
    assert _init_states(second, seed=9) != _init_states(runner2, seed=9)
    # the same (seed, runner, sub-env) reproduces its stream
    again = EnvContext({"seed": 7}, worker_index=1, vector_index=0)
    make_rllib_env("tabletop", "Reach", again)
    assert _init_states(make_rllib_env("tabletop", "Reach", again), seed=9) == _init_states(second, seed=9)


def test_robosuite_and_libero_register_by_name_without_importing_them():
    code = ("import sys; from vla_rl.distributed.rllib_envs import register_rllib_envs; names = register_rllib_envs(); "
            "assert 'vla_rl/robosuite/Lift' in names and 'vla_rl/robosuite/Door' in names, names; "
            "assert 'vla_rl/libero_spatial/libero_spatial_00' in names and 'vla_rl/libero_90/libero_90_89' in names; "
            "assert 'robosuite' not in sys.modules and 'libero' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.robosuite
def test_robosuite_state_env_steps():
    pytest.importorskip("robosuite")
    register_rllib_envs(["robosuite"])
    env = _created("vla_rl/robosuite/Lift", {})
    try:
        obs, _ = env.reset()
        assert env.observation_space.contains(obs)
        assert "cube_main.x" in env.get_wrapper_attr("state_layout").names
        obs, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
    finally:
        env.close()


@pytest.mark.libero
def test_libero_state_env_steps():
    pytest.importorskip("libero")
    from sim_envs.libero_env import LiberoSetupError

    register_rllib_envs(["libero_spatial"])
    try:
        env = _created("vla_rl/libero_spatial/libero_spatial_00", {"init_split": "eval"})
    except LiberoSetupError as error:
        pytest.skip(str(error))
    try:
        obs, info = env.reset()
        assert env.observation_space.contains(obs) and info["split"] == "eval"
        obs, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
    finally:
        env.close()


def test_unknown_suite_task_or_env_option_is_a_clear_error(capsys):
    with pytest.raises(KeyError, match="valid suites: tabletop, robosuite"):
        register_rllib_envs(["mujoco_playground"])
    with pytest.raises(KeyError, match="valid tasks: Reach, Lift"):
        make_rllib_env("tabletop", "Fly", {})
    with pytest.raises(ConfigError, match="observation"):
        make_rllib_env("tabletop", "Reach", {"obs": "state"})
    with pytest.raises(ValueError, match="tabletop"):
        make_rllib_env("robosuite", "Lift", {"reward": "progress"})
    assert main(["baseline", "rllib-ppo", "--task", "Fly"]) == 2
    assert "valid tasks: Reach" in capsys.readouterr().err
    assert main(["baseline", "rllib-ppo", "--suite", "gym", "--task", "Reach"]) == 2
    assert "valid suites" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_tiny_ppo_run_through_the_cli_writes_the_baseline_report(ray_session, tmp_path):
    out = tmp_path / "ppo"
    code = main(["baseline", "rllib-ppo", "--task", "Reach", "--timesteps", "400", "--out", str(out),
                 "--num-env-runners", "0", "--seed", "3", "--set", "train_batch_size=200",
                 "--set", "minibatch_size=100", "--set", "num_epochs=2", "--set", "eval_episodes=4",
                 "--set", "hidden_sizes=[16]", "--set", "progress_bar=false"])
    assert code == 0
    report = json.loads((out / "baseline.json").read_text())
    assert BASELINE_KEYS <= set(report)
    assert report["env"] == "vla_rl/tabletop/Reach" and report["env_steps"] >= 400 and report["iterations"] == 2
    assert [row["env_steps"] for row in report["curve"]] == [200, 400]
    assert all({"episode_return_mean", "train_success_rate"} <= set(row) for row in report["curve"])
    held_out = report["held_out"]
    assert held_out["split"] == "eval" and held_out["deterministic"]
    assert held_out["init_state_ids"] == [0, 1, 2, 3] and held_out["episodes"] == 4
    assert held_out["wilson95_low"] <= held_out["success_rate"] <= held_out["wilson95_high"]
    assert report["config"]["seed"] == 3 and report["seeds"]["rllib_seed"] == 3
    assert report["seeds"]["train_env_init_state_streams"] == SEED_FORMULA
    assert report["observation"]["dim"] == len(report["observation"]["entries"]) == 31
    assert (out / "learning_curve.png").stat().st_size > 0


def test_more_env_runners_than_cpus_is_a_clear_error_not_a_hang(ray_session, tmp_path, capsys):
    code = main(["baseline", "rllib-ppo", "--task", "Reach", "--timesteps", "400", "--out", str(tmp_path / "ppo"),
                 "--num-env-runners", "3", "--set", "progress_bar=false"])
    assert code == 2
    assert "cannot host 3 RLlib EnvRunners (1 CPU each): CPU needed 3, available 2" in capsys.readouterr().err


def test_the_baseline_starts_its_own_local_ray_and_stops_it_when_the_runners_do_not_fit(monkeypatch, tmp_path):
    from vla_rl.distributed.rllib_baseline import PPOBaselineConfig, run_ppo_baseline

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(("init", kwargs)))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", {})))
    config = PPOBaselineConfig(num_env_runners=2, out_dir=tmp_path, progress_bar=False)
    with pytest.raises(ValueError, match="CPU needed 2, available 1"):
        run_ppo_baseline(config)
    assert calls[0][0] == "init" and calls[0][1]["address"] == "local"  # never a running cluster
    assert calls[1][0] == "shutdown"
