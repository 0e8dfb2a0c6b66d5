"""One parametrised contract test over every registered tabletop task."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim_envs
from sim_envs.tasks import TASKS


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
