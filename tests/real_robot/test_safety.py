"""The safety layer on its own (no ROS): every limit, with hand-computed expectations."""

import numpy as np
import pytest

from real_robot.config import RobotConfig, SafetyConfig, TopicsConfig, load_robot_config
from real_robot.safety import CartesianCommand, SafetyFilter
from vla_rl.core.config import ConfigError

ROBOT = RobotConfig(control_hz=10.0, translation_scale_m=0.05, rotation_scale_rad=0.3,
                    safety=SafetyConfig(workspace_min=(-0.3, -0.3, 0.0), workspace_max=(0.3, 0.3, 0.4),
                                        max_step_translation_m=0.06, max_step_rotation_rad=0.2,
                                        max_linear_speed=0.5, max_angular_speed=6.0, observation_timeout_s=0.5))
CENTRE = np.array([0.0, 0.0, 0.2])


def action(*values):
    return np.array(values, dtype=np.float64)


def test_in_range_action_passes_unchanged():
    safety = SafetyFilter(ROBOT)
    command = safety.filter_action(action(0.5, -0.2, 0.1, 0.1, 0.0, -0.1, 1.0), CENTRE)
    np.testing.assert_allclose(command.translation, [0.025, -0.01, 0.005])
    np.testing.assert_allclose(command.rotation, [0.03, 0.0, -0.03])
    assert command.gripper == 1.0 and not safety.counts
    linear, angular = command.velocities(ROBOT.period_s)
    np.testing.assert_allclose(linear, [0.25, -0.1, 0.05])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_actions_become_zero_commands(bad):
    safety = SafetyFilter(ROBOT)
    command = safety.filter_action(action(0.1, bad, 0, 0, 0, 0, 0), CENTRE)
    assert not command.translation.any() and not command.rotation.any() and command.holds_gripper
    assert safety.counts["nonfinite_action"] == 1


def test_wrong_shape_and_unknown_pose_are_rejected():
    safety = SafetyFilter(ROBOT)
    assert not safety.filter_action(np.zeros(6), CENTRE).translation.any()
    assert not safety.filter_action(action(1, 0, 0, 0, 0, 0, 0), None).translation.any()
    assert safety.counts == {"bad_action_shape": 1, "unknown_ee_pose": 1}


def test_out_of_range_values_are_clipped_then_step_and_speed_limited():
    safety = SafetyFilter(ROBOT)
    command = safety.filter_action(action(3.0, 0, 0, 0, 0, 0, -7.0), CENTRE)
    # clipped to 1 -> 0.05 m, under the 0.06 m step limit and 0.5 m/s * 0.1 s = 0.05 m speed limit
    np.testing.assert_allclose(command.translation, [0.05, 0, 0])
    assert command.gripper == -1.0 and safety.counts["action_clipped"] == 1
    diagonal = safety.filter_action(action(1, 1, 1, 0, 0, 0, 0), CENTRE)
    # |(0.05, 0.05, 0.05)| = 0.0866 > min(0.06, 0.05) -> scaled to norm 0.05, same direction
    assert np.linalg.norm(diagonal.translation) == pytest.approx(0.05)
    np.testing.assert_allclose(diagonal.translation / np.linalg.norm(diagonal.translation), np.ones(3) / np.sqrt(3))
    assert safety.counts["translation_limited"] == 1
    rotation = safety.filter_action(action(0, 0, 0, 1, 1, 0, 0), CENTRE).rotation
    assert np.linalg.norm(rotation) == pytest.approx(0.2)  # 0.424 rad -> the 0.2 rad step limit
    assert safety.counts["rotation_limited"] == 1


def test_workspace_box_clamps_targets_and_never_pushes_further_out():
    safety = SafetyFilter(ROBOT)
    near_wall = np.array([0.28, 0.0, 0.2])
    command = safety.filter_action(action(1, 0, 0, 0, 0, 0, 0), near_wall)  # wants x = 0.33
    np.testing.assert_allclose(command.translation, [0.02, 0, 0], atol=1e-12)
    assert safety.counts["workspace_clamped"] == 1
    outside = np.array([0.35, 0.0, -0.02])  # beyond x max and below the table plane
    out = safety.filter_action(action(1, 0.2, -1, 0, 0, 0, 0), outside)
    # the step limit scales (0.05, 0.01, -0.05) to norm 0.05 first; then x and z may not go further out
    np.testing.assert_allclose(out.translation, [0.0, 0.01 * 0.05 / np.linalg.norm([0.05, 0.01, 0.05]), 0.0],
                               atol=1e-12)
    back = safety.filter_action(action(-1, 0, 1, 0, 0, 0, 0), outside)
    np.testing.assert_allclose(back.translation, [-0.05 / np.sqrt(2), 0, 0.05 / np.sqrt(2)], atol=1e-12)


def test_halt_reasons_estop_first_then_stale_streams():
    safety = SafetyFilter(ROBOT)
    fresh = {"image": 10.0, "joint_states": 10.2}
    assert safety.halt_reason(10.3, False, fresh) is None
    assert safety.halt_reason(10.3, True, fresh) == "estop"
    assert safety.halt_reason(10.6, False, fresh) == "stale"  # image 0.6 s old > 0.5 s
    assert safety.halt_reason(10.3, False, {"image": 10.0, "joint_states": None}) == "stale"


def test_joint_steps_limited_and_nonfinite_ik_rejected():
    safety = SafetyFilter(ROBOT)  # max_joint_step_rad default 0.2
    current = np.zeros(3)
    np.testing.assert_allclose(safety.limit_joint_step(current, np.array([0.5, -0.1, -0.9])), [0.2, -0.1, -0.2])
    assert safety.limit_joint_step(current, np.array([0.0, np.nan, 0.0])) is None
    assert safety.counts == {"joint_step_limited": 1, "nonfinite_joint_target": 1}


def test_a_rejected_action_is_named_and_a_clipped_one_is_not():
    safety = SafetyFilter(ROBOT)
    safety.filter_action(action(0.1, np.nan, 0, 0, 0, 0, 0), CENTRE)
    assert safety.last_rejection == "nonfinite_action"
    command = safety.filter_action(action(3.0, 0, 0, 0, 0, 0, 1.0), CENTRE)
    assert safety.last_rejection is None and command.moves and not CartesianCommand.zero().moves


def test_zero_command_holds_the_gripper():
    assert CartesianCommand.zero().holds_gripper and not CartesianCommand.zero(1.0).holds_gripper


def test_robot_config_rejects_bad_values_and_unknown_keys(tmp_path):
    with pytest.raises(ConfigError, match="workspace_min"):
        SafetyConfig(workspace_min=(0.5, 0, 0), workspace_max=(0.4, 1, 1))
    with pytest.raises(ConfigError, match="observation_timeout_s"):
        SafetyConfig(observation_timeout_s=0.0)
    for bound in (float("nan"), float("inf")):  # NaN passes `lo >= hi`; every comparison is False
        with pytest.raises(ConfigError, match="finite"):
            SafetyConfig(workspace_min=(bound, -0.4, 0.0))
    with pytest.raises(ConfigError, match="ee_pose"):
        TopicsConfig(ee_pose="")  # no pose, no box check: every action would be rejected
    with pytest.raises(ConfigError, match="kinematics_mjcf"):
        RobotConfig(command_mode="joint_trajectory", arm_joints=("j1",))
    path = tmp_path / "arm.yaml"
    path.write_text("control_hz: 10\nsafety: {max_speed: 1.0}\n")
    with pytest.raises(ConfigError, match="max_speed"):
        load_robot_config(path)
    with pytest.raises(FileNotFoundError, match="configs/robot"):
        load_robot_config(tmp_path / "missing.yaml")


def test_shipped_robot_configs_load():
    from pathlib import Path

    configs = sorted(Path("configs/robot").glob("*.yaml"))
    assert configs
    for path in configs:
        load_robot_config(path)
