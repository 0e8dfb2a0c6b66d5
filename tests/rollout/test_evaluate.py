import numpy as np
import pytest

from sim_envs.experts import make_expert
from sim_envs.vector import TabletopVecEnv, VecEnvConfig
from vla_rl.core import TaskSpec
from vla_rl.core.stats import wilson_interval
from vla_rl.rollout.evaluate import evaluate


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-3)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-3)
    assert wilson_interval(50, 50) == pytest.approx((0.9287, 1.0), abs=1e-3)


def test_wilson_interval_always_contains_the_observed_rate():
    # 4/4 used to give an upper bound of 0.9999999999999999, a negative error bar that made the
    # success chart (and with it the end of a quickstart) fail.
    for trials in range(1, 201):
        for successes in range(trials + 1):
            low, high = wilson_interval(successes, trials)
            assert 0.0 <= low <= successes / trials <= high <= 1.0, (successes, trials)


def test_evaluate_counts_expert_success_and_idle_failure():
    specs = [TaskSpec("Reach", i, "eval") for i in range(3)] + [TaskSpec("PressButton", i, "eval") for i in range(2)]
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as env:
        experts = {}

        def expert_predict(obs):
            # evaluate asks only for the slots still running: find each row's slot by its proprio
            actions = []
            for proprio in obs.proprio:
                slot = int(np.flatnonzero(np.all(env._local.last_proprio == proprio, axis=1))[0])
                sim = env._local.current[slot]
                if experts.get(slot, (None,))[0] is not sim.layout:
                    experts[slot] = (sim.layout, make_expert(sim))
                actions.append(experts[slot][1].act())
            return np.stack(actions)[:, None]

        solved = evaluate(expert_predict, env, specs)
        idle = evaluate(lambda obs: np.zeros((obs.batch_size, 1, 7), np.float32), env, specs[:3],
                        video_specs=[specs[2]])
    table = solved.per_task()
    assert table["Reach"]["successes"] == 3 and table["PressButton"]["successes"] == 2
    assert table["Reach"]["init_state_ids"] == [0, 1, 2] and solved.mean_success == 1.0
    assert idle.mean_success == 0.0 and all(e.steps == 50 for e in idle.episodes)
    # the filmed episode keeps what the policy saw: the reset frame and one frame per step
    assert list(idle.frames) == [specs[2]] and len(idle.frames[specs[2]]) == 51
    assert idle.frames[specs[2]][0].shape == (32, 32, 3)


def test_workers_seed_the_noise_of_envs_that_have_their_own():
    """A world-model env samples noise; two rollout workers must not draw the same sequence."""
    import torch

    from tests.policy.conftest import make_policy
    from vla_rl.rollout.worker import RolloutWorker

    class NoisyEnv:  # stands in for WorldModelVecEnv's generator (tests/world_model covers the real env)
        def __init__(self):
            self.generator = torch.Generator().manual_seed(0)

    draws = [torch.rand(3, generator=RolloutWorker(NoisyEnv, make_policy, seed=seed).env.generator)
             for seed in (0, 1, 1)]
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[1], draws[2])


def test_evaluation_and_rollouts_count_the_episodes_whose_physics_diverged(tmp_path, monkeypatch):
    """A blown-up episode is a failure the report names, not one that looks like a timeout."""
    from tests.policy.conftest import make_policy
    from vla_rl.rollout.collector import collect

    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory
    specs = [TaskSpec("Lift", i, "eval") for i in range(3)]
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as env:
        calls = []

        def blow_up_slot_1_once(obs):
            if not calls:
                env._local.current[1].data.qvel[:] = 1e12  # the episode of init state 1
            calls.append(obs.batch_size)
            return np.zeros((obs.batch_size, 1, 7), np.float32)

        result = evaluate(blow_up_slot_1_once, env, specs)  # refills: 3 episodes on 2 slots
        assert [e.physics_diverged for e in result.episodes] == [False, True, False]
        assert result.per_task()["Lift"]["physics_divergences"] == 1
        assert result.episodes[1].steps == 1 and not result.episodes[1].success

        policy = make_policy(seed=1)
        act = policy.act

        def blow_up_slot_0_on_the_first_decision(obs, explore):
            if not policy.decisions:
                env._local.current[0].data.qvel[:] = 1e12
            policy.decisions.append(obs.batch_size)
            return act(obs, explore=explore)

        policy.decisions, policy.act = [], blow_up_slot_0_on_the_first_decision
        _, stats = collect(policy, env, [TaskSpec("Lift", 5, "train")] * 2, max_decisions=3)
    assert stats.physics_divergences == 1 and policy.decisions[1:] == [1, 1]  # slot 0 ended at once


@pytest.mark.slow
def test_an_env_worker_killed_mid_evaluation_costs_only_its_unfinished_episodes():
    """The crashed env is rebuilt and runs only the episodes that had not ended; a greedy policy gives them
    the outcomes, and the frames, of an undisturbed evaluation (an episode depends only on its task, init
    state and the policy)."""
    import os
    import signal

    from tests.policy.conftest import make_policy
    from vla_rl.rollout.evaluate import EvalResult, evaluate_restarting

    predict = make_policy().predict_actions
    specs = [TaskSpec("Reach", i, "eval") for i in range(2)] + [TaskSpec("PressButton", i, "eval") for i in range(2)]
    envs = []

    def make_env():
        envs.append(TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=2, image_size=32)))
        return envs[-1]

    undisturbed, restarts = evaluate_restarting(predict, make_env, specs, video_specs=specs)
    assert restarts == 0
    envs.clear()
    result, announced = EvalResult(), []

    def kill_a_worker_in_the_second_wave(obs):
        if len(result.episodes) == 2 and len(envs) == 1 and envs[0]._processes[1].is_alive():
            os.kill(envs[0]._processes[1].pid, signal.SIGKILL)
        return predict(obs)

    disturbed, restarts = evaluate_restarting(
        kill_a_worker_in_the_second_wave, make_env, specs, video_specs=specs, result=result,
        on_restart=lambda error, restart, left: announced.append((restart, left, "died" in str(error))))
    assert disturbed is result and restarts == 1 and len(envs) == 2
    assert announced == [(1, 2, True)]  # the first two episodes had ended: the other two ran again
    assert disturbed.episodes == undisturbed.episodes  # in the order of specs
    assert list(disturbed.frames) != [] and disturbed.frames.keys() == undisturbed.frames.keys()
    for spec, frames in undisturbed.frames.items():
        np.testing.assert_array_equal(np.stack(disturbed.frames[spec]), np.stack(frames))
