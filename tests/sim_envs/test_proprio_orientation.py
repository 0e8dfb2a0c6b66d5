"""The proprio orientation of the robosuite and LIBERO suites (``sim_envs.suites.rotation_from_down``)."""

import numpy as np
from scipy.spatial.transform import Rotation

from sim_envs.suites import axis_angle_to_quat_xyzw, rotation_from_down

DOWN = Rotation.from_rotvec([np.pi, 0, 0])  # the Panda hand pointing straight down


def test_is_the_rotation_from_pointing_down_whatever_the_quaternion_sign():
    quats = np.random.default_rng(0).normal(size=(50, 4))
    expected = (Rotation.from_quat(quats) * DOWN.inv()).as_rotvec()  # scipy: (x, y, z, w), angle in [0, pi]
    np.testing.assert_allclose(rotation_from_down(quats), expected, atol=1e-9)
    np.testing.assert_allclose(rotation_from_down(-quats), expected, atol=1e-9)
    np.testing.assert_allclose(rotation_from_down(DOWN.as_quat()), [0, 0, 0], atol=1e-12)


def test_stays_continuous_while_a_downward_gripper_rolls_to_and_fro():
    # A downward gripper turning to and fro about (nearly) world x, the axis of "down" itself: the
    # angle of its raw quaternion swings across pi and w across zero, where an axis-angle wrapped into
    # [0, pi] jumps between ~+pi*axis and ~-pi*axis (the bug this convention avoids).
    angle = np.pi + 0.05 * np.sin(np.linspace(0, 6 * np.pi, 200))
    axis = np.array([1.0, 0.02, -0.03]) / np.linalg.norm([1.0, 0.02, -0.03])
    quats = np.concatenate([np.outer(np.sin(angle / 2), axis), np.cos(angle / 2)[:, None]], axis=1)
    assert (quats[:, 3] > 0).any() and (quats[:, 3] < 0).any()
    orientation = rotation_from_down(quats)
    assert np.abs(np.diff(orientation, axis=0)).max() < 0.01
    assert np.abs(orientation).max() < 0.1


def test_axis_angle_of_any_angle_converts_back_to_its_quaternion():
    rotvecs = np.array([[0, 0, 1.5 * np.pi], [0.3, -0.4, 1.2], [0, 0, 0], [2 * np.pi - 1e-3, 0, 0]])
    quats = axis_angle_to_quat_xyzw(rotvecs)
    np.testing.assert_allclose(np.linalg.norm(quats, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(Rotation.from_quat(quats).as_matrix(), Rotation.from_rotvec(rotvecs).as_matrix(),
                               atol=1e-9)
