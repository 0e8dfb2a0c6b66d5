"""LIBERO through our env contract: every suite steps, the official protocol holds, resets are reproducible.

LIBERO scenes are heavy on a CPU renderer (0.2-0.4 s per frame), so the tests share envs and use
32-px images; the whole file takes about a minute on 2 cores.
"""

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest

import sim_envs
from sim_envs.libero_env import LIBERO_SUITES, NUM_NOOP_STEPS, LiberoEnv, parse_task, task_info
from sim_envs.vector import SimVecEnv, VecEnvConfig
from vla_rl.core.types import TaskSpec

pytestmark = pytest.mark.libero


@pytest.fixture(scope="module")
def goal_env():
    env = LiberoEnv("libero_goal_00", image_size=32, wrist_camera=True)
    yield env
    env.close()


@pytest.mark.parametrize("suite", list(LIBERO_SUITES))
def test_one_task_of_every_suite_follows_the_contract(suite):
    env = gym.make(sim_envs.libero_env.gym_id(f"{suite}_01"), image_size=32)
    try:
        assert env.unwrapped.max_episode_steps == LIBERO_SUITES[suite]["max_steps"]
        obs, info = env.reset(options={"init_state_id": 7, "split": "eval"})
        assert env.observation_space.contains(obs)
        assert obs["agentview_image"].dtype == np.uint8 and obs["agentview_image"].std() > 5
        assert info["instruction"] == task_info(f"{suite}_01")["instruction"] and info["split"] == "eval"
        for _ in range(2):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
            assert reward in (0.0, 1.0) and terminated == info["success"] and not (terminated and truncated)
    finally:
        env.close()


def test_gymnasium_env_checker(goal_env):
    from gymnasium.utils.env_checker import check_env

    check_env(goal_env, skip_render_check=True)


def test_resets_are_reproducible_and_splits_differ(goal_env):
    def reset(split, init_state_id):
        obs, _ = goal_env.reset(options={"init_state_id": init_state_id, "split": split})
        return obs, goal_env._env.get_sim_state().copy()

    first, state = reset("eval", 4)
    reset("train", 9)  # whatever ran in between must not leak into the next reset
    again, state_again = reset("eval", 4)
    assert np.array_equal(state, state_again)
    assert all(np.array_equal(first[key], again[key]) for key in first)
    assert goal_env.elapsed_steps == 0  # the no-op steps do not count against the limit
    _, other = reset("eval", 5)
    train, train_state = reset("train", 4)
    _, train_again = reset("train", 4)
    assert not np.array_equal(state, other) and not np.array_equal(state, train_state)
    assert np.array_equal(train_state, train_again)


def test_frames_stay_right_with_another_env_in_the_process(goal_env):
    """robosuite renders into whichever GL context is current; each env must re-activate its own."""
    before, _ = goal_env.reset(options={"init_state_id": 6, "split": "eval"})
    other = LiberoEnv("libero_spatial_02", image_size=48)
    try:
        other.reset(options={"init_state_id": 0, "split": "eval"})
        after, _ = goal_env.reset(options={"init_state_id": 6, "split": "eval"})
        other.step(np.zeros(7))
        stepped, *_ = goal_env.step(np.zeros(7))
    finally:
        other.close()  # while goal_env's context is current: it must free only its own GL objects
    assert np.array_equal(before["agentview_image"], after["agentview_image"])
    assert np.array_equal(before["wrist_image"], after["wrist_image"])
    assert stepped["agentview_image"].std() > 5
    after_close, _ = goal_env.reset(options={"init_state_id": 6, "split": "eval"})
    assert np.array_equal(before["agentview_image"], after_close["agentview_image"])


def test_eval_state_is_the_official_one_after_the_no_op_steps(goal_env):
    """Without no-op steps the sim state is exactly LIBERO's stored init state (apart from time)."""
    stored = sim_envs.libero_env.fixed_init_states("libero_goal_00")[2]
    goal_env.num_noop_steps = 0
    try:
        goal_env.reset(options={"init_state_id": 2, "split": "eval"})
        np.testing.assert_allclose(goal_env._env.get_sim_state()[1:], stored[1:])
    finally:
        goal_env.num_noop_steps = NUM_NOOP_STEPS


def test_step_limit_gripper_and_errors(goal_env):
    goal_env.max_episode_steps = 3
    try:
        goal_env.reset(options={"init_state_id": 0, "split": "eval"})
        open_fingers = goal_env._observation(goal_env._env.env._get_observations())["proprio"][6]
        flags = []
        for _ in range(3):
            obs, _, terminated, truncated, _ = goal_env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))  # close
            flags.append((terminated, truncated))
        assert flags == [(False, False), (False, False), (False, True)]
        assert obs["proprio"][6] < open_fingers - 0.005, "gripper +1 must close the fingers"
    finally:
        goal_env.max_episode_steps = LIBERO_SUITES["libero_goal"]["max_steps"]
    with pytest.raises(ValueError, match="NaN"):
        goal_env.step(np.array([np.nan] * 7))
    with pytest.raises(ValueError, match="shape"):
        goal_env.step(np.zeros(6))
    with pytest.raises(ValueError, match="unknown reset options"):
        goal_env.reset(options={"init_state": 1})
    with pytest.raises(IndexError, match="50 evaluation init states"):
        goal_env.reset(options={"init_state_id": 50, "split": "eval"})
    assert 0 <= goal_env.reset(options={"split": "eval"})[1]["init_state_id"] < 50  # without an id: one of them
    with pytest.raises(KeyError, match="valid tasks"):
        parse_task("libero_goal_10")


def test_motion_action_moves_the_end_effector_the_right_way(goal_env):
    obs, _ = goal_env.reset(options={"init_state_id": 1, "split": "eval"})
    start = obs["proprio"][:3].copy()
    for _ in range(8):
        obs, *_ = goal_env.step(np.array([0, 0, 1.0, 0, 0, 0, -1]))  # +z: up
    assert obs["proprio"][2] - start[2] > 0.03


def test_orientation_is_continuous_and_converted_demos_agree_with_it(goal_env, tmp_path):
    """Small alternating roll actions keep the gripper near "down", a rotation of about pi, where the
    old proprio (an axis-angle with its angle wrapped into [0, pi]) flipped between ~+pi and ~-pi on
    every step. A LIBERO dataset recorded along the same steps (``ee_ori`` = robosuite's
    quat2axisangle of ``robot0_eef_quat``, as LIBERO's create_dataset.py stores it) must convert to
    exactly the live proprio."""
    from robosuite.utils.transform_utils import quat2axisangle

    from sim_envs.dataset_convert import convert_hdf5
    from tests.sim_envs.test_dataset_convert import write_libero
    from vla_rl.core.demo_file import read_demo_file

    quats = []
    observe = goal_env._observation
    goal_env._observation = lambda raw: quats.append(np.array(raw["robot0_eef_quat"])) or observe(raw)
    try:
        obs, _ = goal_env.reset(options={"init_state_id": 0, "split": "eval"})
        proprio = [obs["proprio"]]
        for step in range(12):
            obs, *_ = goal_env.step(np.array([0, 0, 0, -0.3 if step % 2 else 0.3, 0, 0, -1]))
            proprio.append(obs["proprio"])
    finally:
        del goal_env._observation
    proprio = np.array(proprio)
    assert np.abs(np.diff(proprio[:, 3:6], axis=0)).max() < 0.5
    assert np.abs(proprio[:, 3:6]).max() < 0.5  # the gripper points (nearly) down: near zero

    source = write_libero(tmp_path / "demo.hdf5", steps=(len(quats),))
    with h5py.File(source, "a") as f:
        obs_group = f["data/demo_0/obs"]
        del obs_group["ee_ori"], obs_group["ee_pos"], obs_group["ee_states"]
        obs_group["ee_states"] = np.concatenate([proprio[:, :3], [quat2axisangle(q.copy()) for q in quats]], axis=1)
    convert_hdf5(source, tmp_path / "out", task="libero_goal_00", show_progress=False)
    (episode,) = read_demo_file(tmp_path / "out" / "libero_goal_00_demo.hdf5")
    np.testing.assert_allclose(episode.proprio()[:, 3:6], proprio[:, 3:6], atol=1e-5)


def test_episodes_may_run_past_liberos_default_horizon(goal_env):
    """LIBERO builds robosuite with horizon=1000 and ignore_done=False: robosuite then refuses every step
    after its 1000th ("executing action in terminated episode"), no-op steps included, whatever our
    own step limit says."""
    goal_env.reset(options={"init_state_id": 2, "split": "train"})
    goal_env._env.env.timestep = 5000  # as if 5000 steps had run
    for _ in range(2):
        goal_env.step(np.zeros(7))


def test_frames_follow_robosuites_image_convention(goal_env, monkeypatch):
    """Under robosuite's "opencv" convention the frames come out in the same orientation (rotated by
    180 degrees from the raw OpenGL render), not mirrored."""
    import robosuite.macros

    reference, _ = goal_env.reset(options={"init_state_id": 5, "split": "eval"})
    monkeypatch.setattr(robosuite.macros, "IMAGE_CONVENTION", "opencv")
    env = LiberoEnv("libero_goal_00", image_size=32, wrist_camera=True)
    try:
        obs, _ = env.reset(options={"init_state_id": 5, "split": "eval"})
    finally:
        env.close()
    for key in ("agentview_image", "wrist_image"):
        assert not np.array_equal(reference[key], reference[key][:, ::-1])  # a mirror would show
        np.testing.assert_array_equal(obs[key], reference[key])


def test_vector_env_runs_libero_tasks_in_a_worker_process():
    config = VecEnvConfig(suite="libero_spatial", num_envs=2, num_workers=1, image_size=32)
    with SimVecEnv(config) as venv:
        assert venv.spec.max_episode_steps == 220 and venv.spec.control_hz == 20
        obs = venv.reset([TaskSpec("libero_spatial_00", 0, "eval"), TaskSpec("libero_spatial_03", 1, "eval")])
        assert obs.images["agentview"].shape == (2, 32, 32, 3) and obs.proprio.shape == (2, 8)
        assert "cookie box" in obs.instructions[1]
        result = venv.step(np.zeros((2, 7), np.float32))
        assert result.reward.shape == (2,) and not result.done.any()
        with pytest.raises(KeyError, match="valid tasks"):
            venv.reset([TaskSpec("Reach", 0, "eval")] * 2)


def test_envs_list_shows_every_suite_with_its_tasks_and_init_states(capsys):
    from vla_rl.cli.main import main

    assert main(["envs", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    suites = {row["suite"]: row for row in listing["suites"]}
    for suite, info in LIBERO_SUITES.items():
        assert suites[suite]["tasks"] == info["tasks"]
        assert suites[suite]["eval_init_states"] == 50 * info["tasks"]
    assert suites["robosuite"]["tasks"] == 5
    rows = [row for row in listing["tasks"] if row["suite"] == "libero_10"]
    assert all(row["max_steps"] == 520 and row["instruction"] for row in rows)


def test_a_downloaded_libero_dataset_converts_under_our_task_name(tmp_path, capsys):
    """As LIBERO writes its datasets: named ``<LIBERO task name>_demo.hdf5``, with the BDDL file's own
    ``(:language ...)`` text in ``problem_info`` (not ``task.language``, which our env gives)."""
    from tests.sim_envs.test_libero_task_names import write_libero_dataset
    from vla_rl.cli.main import main

    suite_dir = tmp_path / "libero_spatial"
    suite_dir.mkdir()
    source, dataset_text = write_libero_dataset(suite_dir, "libero_spatial_07")
    env_instruction = task_info("libero_spatial_07")["instruction"]
    assert dataset_text != env_instruction  # "Pick the akita black bowl on the stove ..."
    assert main(["convert-demos", str(suite_dir), "--out", str(tmp_path / "out"), "--image-size", "8"]) == 0
    assert "libero_spatial_07" in capsys.readouterr().out
    with h5py.File(tmp_path / "out" / "libero_spatial_07_demo.hdf5") as f:
        assert f["data/demo_0/obs/agentview_rgb"].shape[1:] == (8, 8, 3)
        assert f["data/demo_0"].attrs["instruction"] == env_instruction
        assert f["data"].attrs["source_instruction"] == dataset_text and f["data"].attrs["instruction_from"] == "env"
