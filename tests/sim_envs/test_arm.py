import mujoco
import numpy as np
import pytest

from sim_envs.arm import DOWN_QUAT, MAX_POS_DELTA, orientation_error
from sim_envs.tabletop_env import SUBSTEPS, TabletopEnv


@pytest.fixture
def env():
    env = TabletopEnv("Reach", image_size=32)
    env.reset(options={"init_state_id": 0, "split": "eval"})
    yield env
    env.close()


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_position_action_moves_the_end_effector_that_way(env, axis, sign):
    start = env.arm.ee_position()
    action = np.zeros(7)
    action[axis] = 0.5 * sign
    for _ in range(3):
        env.step(action)
    moved = env.arm.ee_position() - start
    assert 0.6 * 1.5 * MAX_POS_DELTA < sign * moved[axis] < 1.2 * 1.5 * MAX_POS_DELTA
    assert np.linalg.norm(np.delete(moved, axis)) < 0.01


def test_zero_action_holds_pose_and_yaw_action_turns(env):
    start_pos, start_quat = env.arm.ee_position(), env.arm.ee_quat()
    for _ in range(10):
        env.step(np.zeros(7))
    assert np.linalg.norm(env.arm.ee_position() - start_pos) < 0.005
    assert np.linalg.norm(orientation_error(start_quat, env.arm.ee_quat())) < 0.02
    for _ in range(2):
        env.step(np.array([0, 0, 0, 0, 0, 1.0, 0]))
    turned = orientation_error(env.arm.ee_quat(), start_quat)
    assert turned[2] > 0.4 and abs(turned[0]) < 0.05 and abs(turned[1]) < 0.05


def test_ik_solution_reaches_the_goal_pose(env):
    goal = np.array([0.1, -0.15, 0.08])
    q = env.arm.data.qpos[env.arm.arm_qpos_adr].copy()
    for _ in range(10):
        q = env.arm.solve_ik(goal, DOWN_QUAT, q)
    scratch = mujoco.MjData(env.model)
    scratch.qpos[:] = env.data.qpos
    scratch.qpos[env.arm.arm_qpos_adr] = q
    mujoco.mj_kinematics(env.model, scratch)
    assert np.linalg.norm(scratch.site_xpos[env.arm.site_id] - goal) < 1e-3


def test_gripper_closes_and_opens(env):
    for _ in range(4):
        env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    closed = env.arm.gripper_qpos()
    for _ in range(4):
        env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    opened = env.arm.gripper_qpos()
    assert np.all(closed < 0.005) and np.all(opened > 0.04)
    assert SUBSTEPS * env.model.opt.timestep == pytest.approx(0.1)


def test_proprio_orientation_is_continuous_near_the_home_pose():
    """Relative to pointing down, the orientation stays small and never flips sign (unlike raw
    axis-angle at a rotation of pi)."""
    from sim_envs.demos import run_expert_episode

    env = TabletopEnv("Stack", image_size=32)
    episode, _ = run_expert_episode(env, 4, "eval")
    env.close()
    orientation = episode.obs["ee_ori"]
    assert np.abs(orientation[0]).max() < 0.05
    assert np.abs(np.diff(orientation, axis=0)).max() < 0.5
