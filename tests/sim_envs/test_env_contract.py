"""One parametrised contract test over every registered tabletop task, and one over every VecEnv."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim_envs
from sim_envs.tasks import TASKS
from sim_envs.vector import TabletopVecEnv, VecEnvConfig
from vla_rl.core import TaskSpec


@pytest.fixture(params=list(TASKS))
def env(request):
    env = gym.make(sim_envs.gym_id(request.param), image_size=32, wrist_camera=True)
    yield env
    env.close()


def test_passes_gymnasium_env_checker(env):
    check_env(env.unwrapped, skip_render_check=True)


def test_reset_and_step_follow_the_contract(env):
    obs, info = env.reset(options={"init_state_id": 3, "split": "eval"})
    assert env.observation_space.contains(obs)
    assert obs["agentview_image"].shape == (32, 32, 3) and obs["wrist_image"].shape == (32, 32, 3)
    assert obs["agentview_image"].std() > 5, "the camera must see a textured scene, not a blank frame"
    assert isinstance(info["instruction"], str) and info["instruction"]
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert reward in (0.0, 1.0) and terminated == info["success"] and not (terminated and truncated)


def test_truncates_at_the_step_limit_without_success():
    env = sim_envs.tabletop_env.TabletopEnv("Lift", image_size=32, max_episode_steps=3)
    env.reset(options={"init_state_id": 0, "split": "eval"})
    flags = [env.step(np.zeros(7, np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    env.close()


@pytest.mark.parametrize("qvel", [1e3, 1e12])  # MuJoCo's bad-acceleration and bad-velocity resets
def test_a_step_whose_physics_diverges_ends_the_episode_as_a_failure(qvel, tmp_path, monkeypatch):
    """MuJoCo silently resets the simulation when the physics blows up; the episode must not go on from there."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory
    env = sim_envs.tabletop_env.TabletopEnv("Lift", image_size=32)
    env.reset(options={"init_state_id": 0, "split": "eval"})
    assert not env.step(np.zeros(7, np.float32))[4]["physics_diverged"]
    env.data.qvel[:] = qvel
    _, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
    assert (reward, terminated, truncated, info["success"], info["physics_diverged"]) == (0.0, False, True, False, True)
    env.reset(options={"init_state_id": 0, "split": "eval"})
    assert not env.step(np.zeros(7, np.float32))[4]["physics_diverged"]
    env.close()


def test_antialias_off_changes_only_the_observation_frames_edges():
    """Without multisampling the observation differs at object edges only; frames at another size
    (videos) stay antialiased, so they are the same either way."""
    frames = {}
    for antialias in (True, False):
        env = sim_envs.tabletop_env.TabletopEnv("PressButton", image_size=64, antialias=antialias)
        obs, _ = env.reset(options={"init_state_id": 0, "split": "eval"})
        frames[antialias] = obs["agentview_image"], env.render_camera("agentview", 96)
        env.close()
    (smooth_obs, smooth_video), (aliased_obs, aliased_video) = frames[True], frames[False]
    changed = (smooth_obs != aliased_obs).any(-1).mean()
    assert 0.01 < changed < 0.3, changed  # edges, not the whole scene
    np.testing.assert_array_equal(smooth_video, aliased_video)


def test_bad_actions_and_options_are_clear_errors():
    env = sim_envs.tabletop_env.TabletopEnv("Reach", image_size=32)
    env.reset(seed=1)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan] * 7))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"init_state": 1})
    with pytest.raises(KeyError, match="valid tasks"):
        sim_envs.tabletop_env.TabletopEnv("Fly")
    with pytest.raises(ValueError, match="image_size"):
        sim_envs.tabletop_env.TabletopEnv("Reach", image_size=8)
    with pytest.raises(ValueError, match=r"max_episode_steps must be >= 1 \(None: the task's own limit\), got 0"):
        sim_envs.tabletop_env.TabletopEnv("Reach", image_size=32, max_episode_steps=0)
    env.close()


def test_an_eval_reset_without_an_id_draws_one_of_the_eval_states():
    env = sim_envs.tabletop_env.TabletopEnv("Reach", image_size=32)
    ids = {env.reset(seed=seed, options={"split": "eval"})[1]["init_state_id"] for seed in range(5)}
    assert ids <= set(range(50)) and len(ids) > 1
    env.close()


def test_instruction_names_the_target_and_layout_varies():
    env = sim_envs.tabletop_env.TabletopEnv("Lift", image_size=32)
    seen_colors, seen_positions = set(), set()
    for i in range(8):
        _, info = env.reset(options={"init_state_id": i, "split": "eval"})
        target_color = env.layout["colors"][env.layout["target"]]
        assert target_color in info["instruction"]
        for distractor in env.layout["colors"][1:]:
            assert distractor not in info["instruction"]
        seen_colors.add(target_color)
        seen_positions.add(tuple(env.layout["positions"][0]))
    assert len(seen_colors) > 2 and len(seen_positions) == 8
    env.close()


# ---- the VecEnv contract, over every VecEnv: the simulator's and the world model's -------------------------------
VEC_SPECS = [TaskSpec("Reach", 0, "eval"), TaskSpec("Lift", 0, "eval")]


class DoneForOneInstruction:
    """A stand-in critic: "done" for the episode of instruction ``done_for`` from its second scoring on."""

    def __init__(self):
        self.done_for, self.calls = None, 0

    def score(self, episodes):
        from vla_rl.core.types import CriticOutput

        self.calls += 1
        done = np.zeros((len(episodes.instructions), episodes.frames.shape[1]), np.float32)
        done[:, 1] = [float(self.calls >= 2 and text == self.done_for) for text in episodes.instructions]
        return CriticOutput(progress=np.zeros_like(done), done_prob=done)


def _sim_vec_env():
    """Slot 0's expert reaches the target in a few steps; slot 1 (Lift, not moving) runs on."""
    from sim_envs.experts import make_expert

    venv = TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32))
    venv.reset(VEC_SPECS)
    expert = make_expert(venv._local.current[0])
    return venv, lambda: np.stack([expert.act(), np.zeros(7, np.float32)])


def _world_model_vec_env():
    """The critic calls slot 0's imagined episode done at its second step; slot 1 runs on."""
    import torch

    from sim_envs.suites import get_suite
    from world_model.env import WorldModelVecEnv
    from world_model.model import VideoWorldModel, WorldModelConfig

    torch.manual_seed(0)
    critic = DoneForOneInstruction()
    model = VideoWorldModel(WorldModelConfig(image_size=32, channels=(32, 32), attention_last=False, sampling_steps=1))
    venv = WorldModelVecEnv(model, critic, TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)),
                            get_suite("tabletop").max_steps)
    critic.done_for = venv.reset(VEC_SPECS).instructions[0]
    return venv, lambda: np.zeros((2, 7), np.float32)


@pytest.mark.parametrize("make_vec_env", [_sim_vec_env, _world_model_vec_env], ids=["sim", "world_model"])
def test_a_finished_vec_env_slot_repeats_its_final_flags_success_included(make_vec_env):
    """Autoreset is off: after its episode ends, a slot returns zero reward and the flags of its last
    step (terminated, truncated, success) on every later step, while the other slots run on."""
    venv, actions = make_vec_env()
    try:
        for _ in range(50):
            result = venv.step(actions())
            if result.terminated[0] or result.truncated[0]:
                break
        assert result.terminated[0] and result.success[0] and result.reward[0] == 1.0
        for _ in range(2):
            later = venv.step(actions())
            assert (later.terminated[0], later.truncated[0], later.success[0], later.reward[0]) == (True, False, True, 0)
            assert not (later.terminated[1] or later.truncated[1] or later.success[1])
    finally:
        venv.close()
