"""The robosuite suite: the env contract on all five tasks, seeded init states, action signs, errors.

Envs are built once per module (a robosuite model takes ~2 s to build, a 32-px frame ~0.1 s to render).
"""

import importlib.util
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from sim_envs import robosuite_env
from sim_envs.robosuite_env import ROBOSUITE_TASKS, RobosuiteEnv

pytestmark = pytest.mark.robosuite
needs_robosuite = pytest.mark.skipif(importlib.util.find_spec("robosuite") is None,
                                     reason="robosuite is not installed (`make setup` installs it)")
ZERO = np.zeros(7, np.float32)


def _action(**parts: float) -> np.ndarray:
    names = ["x", "y", "z", "rx", "ry", "rz", "gripper"]
    return np.array([parts.get(name, 0.0) for name in names], np.float32)


@pytest.fixture(scope="module")
def make_env():
    made: dict[tuple, RobosuiteEnv] = {}

    def get(task: str, **kwargs) -> RobosuiteEnv:
        key = (task, tuple(sorted(kwargs.items())))
        if key not in made:
            made[key] = RobosuiteEnv(task, **{"image_size": 32, **kwargs})
        return made[key]

    yield get
    for env in made.values():
        env.close()


@pytest.fixture
def lift(make_env):
    return make_env("Lift", wrist_camera=True)


def _state(env: RobosuiteEnv) -> np.ndarray:
    return env.robosuite_env.sim.data.qpos.copy()


def _cube_position(env: RobosuiteEnv) -> np.ndarray:
    sim = env.robosuite_env.sim
    return sim.data.body_xpos[sim.model.body_name2id(env.robosuite_env.cube.root_body)].copy()


@needs_robosuite
@pytest.mark.parametrize("task", ROBOSUITE_TASKS)
def test_each_task_follows_the_contract(make_env, task):
    env = make_env(task, wrist_camera=True)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(options={"init_state_id": 3, "split": "eval"})
    assert env.observation_space.contains(obs)
    assert obs["agentview_image"].shape == (32, 32, 3) and obs["wrist_image"].shape == (32, 32, 3)
    assert obs["agentview_image"].std() > 5 and obs["wrist_image"].std() > 5, "the cameras must see a scene"
    assert obs["agentview_image"].flags["C_CONTIGUOUS"] and obs["wrist_image"].flags["C_CONTIGUOUS"]
    assert info["instruction"] and info["instruction"] == env.instruction == robosuite_env.TASKS[task].instruction
    assert (info["init_state_id"], info["split"], info["success"]) == (3, "eval", False)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert reward in (0.0, 1.0) and terminated == info["success"] and not (terminated and truncated)
    assert info["instruction"] == env.instruction


@needs_robosuite
def test_images_are_the_upright_camera_view_even_beside_other_gl_contexts(make_env, lift):
    import mujoco

    make_env("Lift", max_episode_steps=3).reset()  # another env's GL context is now the current one
    obs, _ = lift.reset(options={"init_state_id": 0, "split": "eval"})
    sim = lift.robosuite_env.sim
    # mujoco.Renderer returns images top row first; robosuite hides collision geoms (group 0).
    renderer = mujoco.Renderer(sim.model._model, 32, 32)
    scene_option = mujoco.MjvOption()
    scene_option.geomgroup[0] = 0
    try:
        for _ in range(2):
            renderer.update_scene(sim.data._data, "agentview", scene_option=scene_option)
            np.testing.assert_array_equal(obs["agentview_image"], renderer.render())
            obs = lift.step(ZERO)[0]  # the renderer's context is current now
    finally:
        renderer.close()
    lift.render_mode = "rgb_array"
    try:
        np.testing.assert_array_equal(lift.render(), obs["agentview_image"])
    finally:
        lift.render_mode = None
    assert lift.render() is None


@needs_robosuite
def test_closing_another_env_leaves_this_ones_frames_intact(lift):
    """MuJoCo frees an env's GL objects by id in the current context: closing one env while another's
    context is current used to delete the other's textures and garble its frames."""
    before, _ = lift.reset(options={"init_state_id": 1, "split": "eval"})
    other = RobosuiteEnv("Lift", image_size=32)
    other.reset()
    lift.reset(options={"init_state_id": 1, "split": "eval"})  # lift's context is current
    other.close()
    after, _ = lift.reset(options={"init_state_id": 1, "split": "eval"})
    np.testing.assert_array_equal(after["agentview_image"], before["agentview_image"])
    np.testing.assert_array_equal(after["wrist_image"], before["wrist_image"])


@needs_robosuite
def test_init_states_are_a_function_of_split_and_id(lift):
    def rollout(split: str, init_state_id: int):
        obs, _ = lift.reset(options={"init_state_id": init_state_id, "split": split})
        start = (_state(lift), _cube_position(lift))
        steps = [lift.step(_action(x=0.5, gripper=1.0))[0] for _ in range(3)]
        return start, [obs, *steps]

    (state_a, cube_a), obs_a = rollout("eval", 0)
    (state_b, cube_b), _ = rollout("eval", 1)
    (state_c, cube_c), _ = rollout("train", 0)
    (state_d, cube_d), obs_d = rollout("eval", 0)  # after other episodes: nothing leaks across resets
    np.testing.assert_array_equal(state_a, state_d)
    np.testing.assert_array_equal(cube_a, cube_d)
    for first, again in zip(obs_a, obs_d):
        for key in first:
            np.testing.assert_array_equal(first[key], again[key])
    assert np.linalg.norm(cube_a[:2] - cube_b[:2]) > 1e-3 and np.linalg.norm(cube_a[:2] - cube_c[:2]) > 1e-3
    assert not np.allclose(state_a, state_b) and not np.allclose(state_a, state_c)

    # No options: a training id drawn from the env's seed, reproducibly.
    _, info_1 = lift.reset(seed=7)
    state_1 = _state(lift)
    _, info_2 = lift.reset(seed=7)
    assert info_1["split"] == "train" and info_1["init_state_id"] == info_2["init_state_id"]
    np.testing.assert_array_equal(state_1, _state(lift))


@needs_robosuite
def test_truncates_at_the_step_limit_and_instances_agree(make_env, lift):
    env = make_env("Lift", max_episode_steps=3)
    env.reset(options={"init_state_id": 0, "split": "eval"})
    lift.reset(options={"init_state_id": 0, "split": "eval"})
    np.testing.assert_array_equal(_state(env), _state(lift))  # another instance, the same init state
    flags = [env.step(ZERO)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


@needs_robosuite
def test_action_signs_move_the_arm_and_gripper_as_documented(lift):
    obs, _ = lift.reset(options={"init_state_id": 0, "split": "eval"})
    start = obs["proprio"].copy()
    for _ in range(10):
        obs = lift.step(_action(x=1.0))[0]
    moved = obs["proprio"][:3] - start[:3]
    assert moved[0] > 0.06, f"+x for 10 steps (goal 0.05 m/step ahead) moved only {moved}"
    assert np.all(np.abs(moved[1:]) < 0.03), moved

    yaw = obs["proprio"][5]
    for _ in range(5):
        obs = lift.step(_action(rz=1.0))[0]
    assert obs["proprio"][5] - yaw > 0.15, "+rz turns the hand about world +z"

    def finger_gap(o):
        return float(o["proprio"][6] - o["proprio"][7])

    gap = finger_gap(obs)
    for _ in range(8):
        obs = lift.step(_action(gripper=1.0))[0]
    closed = finger_gap(obs)
    for _ in range(8):
        obs = lift.step(_action(gripper=-1.0))[0]
    opened = finger_gap(obs)
    assert closed < gap - 0.02 and opened > closed + 0.04, (gap, closed, opened)


@needs_robosuite
def test_bad_actions_and_options_are_clear_errors(lift):
    lift.reset(options={"init_state_id": 0, "split": "eval"})
    with pytest.raises(ValueError, match="NaN"):
        lift.step(np.array([np.nan] * 7))
    with pytest.raises(ValueError, match="shape"):
        lift.step(np.zeros(6))
    with pytest.raises(ValueError, match="unknown reset options"):
        lift.reset(options={"init_state": 1})
    with pytest.raises(ValueError, match="split"):
        lift.reset(options={"init_state_id": 1, "split": "test"})
    with pytest.raises(IndexError, match="0..49"):
        lift.reset(options={"init_state_id": 50, "split": "eval"})


def test_bad_constructor_arguments_fail_before_robosuite_is_loaded():
    with pytest.raises(KeyError, match="valid tasks: Lift, Stack, PickPlaceCan, NutAssemblySquare, Door"):
        RobosuiteEnv("Fly")
    with pytest.raises(ValueError, match="image_size"):
        RobosuiteEnv("Lift", image_size=8)
    with pytest.raises(ValueError, match=r"max_episode_steps must be >= 1 \(None: the task's own limit\), got 0"):
        RobosuiteEnv("Lift", max_episode_steps=0)


def test_suite_and_gym_ids_need_no_robosuite():
    code = (
        "import sys, gymnasium as gym\n"
        "from sim_envs import robosuite_env as r\n"
        "suite = r.robosuite_suite()\n"
        "rows = suite.describe()\n"
        "r.register_gym_ids()\n"
        "assert [row['task'] for row in rows] == list(r.ROBOSUITE_TASKS) == suite.tasks()\n"
        "assert gym.spec('vla_rl/robosuite-Door-v0').kwargs == {'task': 'Door'}\n"
        "assert 'robosuite' not in sys.modules, 'importing the suite must not import robosuite'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    suite = robosuite_env.robosuite_suite()
    assert suite.name == "robosuite" and suite.control_hz == 20 and suite.default_image_size == 64
    assert [suite.max_steps(t) for t in ROBOSUITE_TASKS] == [200, 300, 400, 400, 300]
    assert all(suite.num_eval_states(t) == 50 for t in ROBOSUITE_TASKS)
    for row in suite.describe():
        assert set(row) == {"task", "gym_id", "max_steps", "eval_init_states", "train_init_states", "summary",
                            "instruction"}
        assert row["gym_id"] == f"vla_rl/robosuite-{row['task']}-v0" and row["instruction"]
    robosuite_env.register_gym_ids()
    spec = gym.spec("vla_rl/robosuite-Lift-v0")
    assert spec.entry_point == "sim_envs.robosuite_env:RobosuiteEnv" and spec.kwargs == {"task": "Lift"}
    with pytest.raises(KeyError, match="valid tasks"):
        suite.max_steps("Fly")


def test_eval_and_train_seeds_never_coincide():
    eval_seeds = {tuple(robosuite_env.init_state_seed(t, "eval", i)) for t in ROBOSUITE_TASKS for i in range(50)}
    train_seeds = {tuple(robosuite_env.init_state_seed(t, "train", i)) for t in ROBOSUITE_TASKS for i in range(500)}
    assert len(eval_seeds) == 250 and not eval_seeds & train_seeds
