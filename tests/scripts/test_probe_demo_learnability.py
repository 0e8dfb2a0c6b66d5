"""scripts/probe_demo_learnability.py: its input features and one tiny end-to-end run on real demos."""

import numpy as np

from sim_envs.demos import run_expert_episode
from sim_envs.tabletop_env import TabletopEnv
from tests.scripts.conftest import load_script
from vla_rl.core.demo_file import write_demo_file


def test_features_scale_the_points_and_offset_them_from_the_gripper():
    probe = load_script("probe_demo_learnability")
    proprio = np.arange(8, dtype=np.float32)[None]
    pixels = np.array([[[32.0, 16.0], [48.0, 32.0], [16.0, 48.0]]], np.float32)  # object, goal, gripper
    row = probe.features(proprio, pixels, "Lift", ["Reach", "Lift"])[0]
    np.testing.assert_array_equal(row[:8], np.arange(8))
    np.testing.assert_allclose(row[8:14], [0.0, -0.5, 0.5, 0.0, -0.5, 0.5])  # (p / 32) - 1
    np.testing.assert_allclose(row[14:18], [0.5, -1.0, 1.0, -0.5])  # object - gripper, goal - gripper
    np.testing.assert_array_equal(row[18:], [0.0, 1.0])
    assert probe.features(proprio, pixels[:, :2], "Reach", ["Reach"]).shape == (1, 8 + 4 + 1)


def test_a_tiny_probe_runs_closed_loop_on_held_out_states(tmp_path):
    env = TabletopEnv("Reach", image_size=64, wrist_camera=False)
    episodes = [run_expert_episode(env, i, "train", noise_std=0.1, seed=i, rotation_noise=False)[0] for i in range(3)]
    env.close()
    write_demo_file(tmp_path / "Reach_demo.hdf5", episodes, {"env_name": "Reach", "suite": "tabletop"})
    result = load_script("probe_demo_learnability").main([str(tmp_path), "--tasks", "Reach", "--gripper", "--pixel-noise", "0.3",
                                 "--steps", "20", "--episodes", "2"])
    assert set(result["per_task"]) == {"Reach"} and 0 <= result["per_task"]["Reach"] <= 2
    assert result["mean_success"] == result["per_task"]["Reach"] / 2 and result["gripper"]
