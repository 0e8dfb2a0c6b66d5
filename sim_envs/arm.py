"""End-effector control of the tabletop arm in OpenVLA's 7-D action space.

An action ``a in [-1, 1]^7`` is ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``:
- ``a[:3] * MAX_POS_DELTA`` metres, in the world frame, relative to the *current* end-effector
  position (robosuite's delta-OSC semantics, which OpenVLA's LIBERO data uses);
- ``a[3:6] * MAX_ROT_DELTA`` radians, an axis-angle rotation in the world frame applied to the
  current end-effector orientation;
- ``a[6]``: -1 opens the gripper, +1 closes it (robosuite/LIBERO convention), linear in between.

The controller is damped-least-squares inverse kinematics: once per control step it solves for the
joint configuration that reaches the goal pose (a few Gauss-Newton iterations on a scratch
``MjData``, so the simulated state is never touched), and joint position servos track that
configuration during the physics substeps. Nothing is teleported: objects move only by contact.
"""

from __future__ import annotations

import mujoco
import numpy as np

from sim_envs.scene import ARM_JOINTS, FINGER_JOINTS, FINGER_OPEN

MAX_POS_DELTA = 0.05  # metres per control step at |a| = 1
MAX_ROT_DELTA = 0.3  # radians per control step at |a| = 1
IK_DAMPING = 0.05
IK_ITERATIONS = 4
# A downward-pointing gripper above the middle of the table: where every episode starts.
HOME_POSITION = np.array([-0.05, 0.0, 0.22])
DOWN_QUAT = np.array([0.0, 0.0, 1.0, 0.0])  # tool z axis along world -z, fingers along world y


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> rotation vector (axis * angle), angle in [0, pi]."""
    quat = quat / np.linalg.norm(quat)
    if quat[0] < 0:
        quat = -quat
    sin_half = np.linalg.norm(quat[1:])
    if sin_half < 1e-9:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(sin_half, quat[0])
    return quat[1:] / sin_half * angle


def axis_angle_to_quat(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    axis = rotvec / angle
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, a, b)
    return out


def orientation_error(goal_quat: np.ndarray, quat: np.ndarray) -> np.ndarray:
    """World-frame rotation vector that turns ``quat`` into ``goal_quat``."""
    inv = np.zeros(4)
    mujoco.mju_negQuat(inv, quat)
    return quat_to_axis_angle(quat_mul(goal_quat, inv))


def site_quat(data: mujoco.MjData, site_id: int) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, data.site_xmat[site_id])
    return quat


def damped_least_squares_ik(model: mujoco.MjModel, scratch: mujoco.MjData, site_id: int, qpos_adr: np.ndarray,
                            dof_adr: np.ndarray, limits: tuple[np.ndarray, np.ndarray], goal_pos: np.ndarray,
                            goal_quat: np.ndarray, q_init: np.ndarray, iterations: int = IK_ITERATIONS) -> np.ndarray:
    """Joint angles (at ``qpos_adr``) near ``q_init`` that put ``site_id`` at the goal pose.

    Gauss-Newton steps with damping ``IK_DAMPING`` on the 6-D pose error, clipped to ``limits``.
    ``scratch`` holds the other joints' positions and is overwritten (the simulated state is not)."""
    q = np.array(q_init, dtype=np.float64)
    jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    for _ in range(iterations):
        scratch.qpos[qpos_adr] = q
        mujoco.mj_kinematics(model, scratch)
        mujoco.mj_comPos(model, scratch)
        error = np.concatenate([goal_pos - scratch.site_xpos[site_id],
                                orientation_error(goal_quat, site_quat(scratch, site_id))])
        if np.linalg.norm(error) < 1e-4:
            break
        mujoco.mj_jacSite(model, scratch, jacp, jacr, site_id)
        jac = np.vstack([jacp[:, dof_adr], jacr[:, dof_adr]])
        q = q + jac.T @ np.linalg.solve(jac @ jac.T + (IK_DAMPING**2) * np.eye(6), error)
        q = np.clip(q, *limits)
    return q


class MjcfKinematics:
    """End-effector deltas -> joint targets for any arm with an MJCF (joint-space deployments).

    ``solve_delta(q, translation, rotation)``: the joint angles that move ``site`` by ``translation``
    (m) and rotate it by the axis-angle ``rotation`` (rad), both in the model's world frame, starting
    from joint angles ``q`` (in ``joints`` order)."""

    def __init__(self, xml: str, joints: tuple[str, ...], site: str, iterations: int = 8):
        self.model = mujoco.MjModel.from_xml_string(xml) if xml.lstrip().startswith("<") else \
            mujoco.MjModel.from_xml_path(xml)
        self.data = mujoco.MjData(self.model)
        try:
            self.site_id = self.model.site(site).id
            ids = [self.model.joint(name).id for name in joints]
        except KeyError as error:
            raise KeyError(f"the MJCF lacks the site {site!r} or one of the joints {joints}: {error}") from error
        self.qpos_adr = self.model.jnt_qposadr[ids]
        self.dof_adr = self.model.jnt_dofadr[ids]
        self.limits = (self.model.jnt_range[ids, 0], self.model.jnt_range[ids, 1])
        self.iterations = iterations

    def site_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), site_quat(self.data, self.site_id)

    def solve_delta(self, q: np.ndarray, translation: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        position, quat = self.site_pose(q)
        goal_quat = quat_mul(axis_angle_to_quat(np.asarray(rotation, dtype=np.float64)), quat)
        return damped_least_squares_ik(self.model, self.data, self.site_id, self.qpos_adr, self.dof_adr, self.limits,
                                       position + translation, goal_quat, q, self.iterations)


class ArmController:
    """Maps 7-D actions to actuator targets for one arm in one MjModel/MjData pair."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData):
        self.model = model
        self.data = data
        self._scratch = mujoco.MjData(model)
        self.site_id = model.site("grip_site").id
        self.arm_qpos_adr = np.array([model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self.arm_dof_adr = np.array([model.joint(j).dofadr[0] for j in ARM_JOINTS])
        self.finger_qpos_adr = np.array([model.joint(j).qposadr[0] for j in FINGER_JOINTS])
        self.arm_act = np.array([model.actuator(f"a_{j}").id for j in ARM_JOINTS])
        self.finger_act = np.array([model.actuator(f"a_{j}").id for j in FINGER_JOINTS])
        self.joint_low = model.jnt_range[[model.joint(j).id for j in ARM_JOINTS], 0]
        self.joint_high = model.jnt_range[[model.joint(j).id for j in ARM_JOINTS], 1]

    # ---- state read-out -------------------------------------------------------------------
    def ee_position(self, data: mujoco.MjData | None = None) -> np.ndarray:
        data = self.data if data is None else data
        return data.site_xpos[self.site_id].copy()

    def ee_quat(self, data: mujoco.MjData | None = None) -> np.ndarray:
        return site_quat(self.data if data is None else data, self.site_id)

    def gripper_qpos(self) -> np.ndarray:
        return self.data.qpos[self.finger_qpos_adr].copy()

    def proprio(self) -> np.ndarray:
        """8-D proprio (the layout of OpenVLA's LIBERO setup): EE position, EE orientation, fingers.

        The orientation is the world-frame rotation vector from "pointing straight down" to the
        current orientation. LIBERO's raw axis-angle of a downward gripper sits at a rotation of
        pi, where the vector flips sign between steps; relative to down it stays near zero.
        """
        return np.concatenate(
            [self.ee_position(), orientation_error(self.ee_quat(), DOWN_QUAT), self.gripper_qpos()]
        ).astype(np.float32)

    # ---- control --------------------------------------------------------------------------
    def solve_ik(self, goal_pos: np.ndarray, goal_quat: np.ndarray, q_init: np.ndarray) -> np.ndarray:
        """Joint angles near ``q_init`` that put the grip site at the goal pose (DLS iterations)."""
        self._scratch.qpos[:] = self.data.qpos
        return damped_least_squares_ik(self.model, self._scratch, self.site_id, self.arm_qpos_adr, self.arm_dof_adr,
                                       (self.joint_low, self.joint_high), goal_pos, goal_quat, q_init)

    def set_action(self, action: np.ndarray) -> None:
        """Turn one 7-D action into actuator targets held for the next control period."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        goal_pos = self.ee_position() + action[:3] * MAX_POS_DELTA
        rot = axis_angle_to_quat(action[3:6] * MAX_ROT_DELTA)
        goal_quat = quat_mul(rot, self.ee_quat())
        q_now = self.data.qpos[self.arm_qpos_adr]
        self.set_joint_targets(self.solve_ik(goal_pos, goal_quat, q_now), action[6])

    def set_joint_targets(self, arm_targets: np.ndarray, gripper: float) -> None:
        """Servo targets of the arm joints and the fingers (gripper -1 open .. +1 closed)."""
        self.data.ctrl[self.arm_act] = arm_targets
        self.data.ctrl[self.finger_act] = FINGER_OPEN * (1.0 - float(np.clip(gripper, -1.0, 1.0))) / 2.0

    def reset_to(self, q_arm: np.ndarray, gripper_open: bool = True) -> None:
        """Place the arm at ``q_arm`` at rest, with servos holding it there."""
        finger = FINGER_OPEN if gripper_open else 0.0
        self.data.qpos[self.arm_qpos_adr] = q_arm
        self.data.qvel[self.arm_dof_adr] = 0.0
        self.data.qpos[self.finger_qpos_adr] = finger
        self.data.ctrl[self.arm_act] = q_arm
        self.data.ctrl[self.finger_act] = finger

    def home_configuration(self, position: np.ndarray = HOME_POSITION) -> np.ndarray:
        """Joint angles of a downward-pointing gripper at ``position`` (solved, then cached)."""
        q = np.array([0.0, -0.9, 1.9, 0.0, 0.6, 0.0])
        for _ in range(30):
            q = self.solve_ik(position, DOWN_QUAT, q)
        return q
