"""The safety layer between a policy and a physical arm: every limit in one place, no ROS in it.

A policy action becomes a command only through ``SafetyFilter``; it fails closed:
- ``halt_reason``: an active e-stop, or a required sensor stream (image, joint states, end-effector
  pose) with no message within ``observation_timeout_s``, halts the arm (zero command) with the
  state named;
- ``filter_action``: an action with NaN/inf or the wrong shape is rejected (zero command); values
  outside ``[-1, 1]`` are clipped; the scaled translation and rotation are limited per step and in
  speed; the end-effector target is clamped into the workspace box (without a known pose the action
  is rejected, since the box cannot be checked);
- ``limit_joint_step``: in joint-space mode, a non-finite IK solution is rejected and joint changes
  are limited per step.

Every intervention increments ``counts[event]``, which the node publishes in ``/vla/status``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from real_robot.config import RobotConfig

ACTION_DIM = 7


@dataclass(frozen=True)
class CartesianCommand:
    """One control period's end-effector command in the base frame."""

    translation: np.ndarray  # float64 [3], metres this period
    rotation: np.ndarray     # float64 [3], axis-angle radians this period
    gripper: float           # -1 open .. +1 closed (the policy's convention)

    @staticmethod
    def zero(gripper: float | None = None) -> "CartesianCommand":
        """Hold still; ``gripper=None`` means "leave the gripper where it is"."""
        return CartesianCommand(np.zeros(3), np.zeros(3), float("nan") if gripper is None else gripper)

    @property
    def holds_gripper(self) -> bool:
        return not np.isfinite(self.gripper)

    @property
    def moves(self) -> bool:
        return bool(np.any(self.translation) or np.any(self.rotation))

    def velocities(self, period_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Linear (m/s) and angular (rad/s) velocity that realise this command over one period."""
        return self.translation / period_s, self.rotation / period_s


class SafetyFilter:
    def __init__(self, config: RobotConfig):
        self.robot = config
        self.config = config.safety
        self.lower = np.asarray(self.config.workspace_min, dtype=np.float64)
        self.upper = np.asarray(self.config.workspace_max, dtype=np.float64)
        self.counts: Counter[str] = Counter()
        self.last_events: list[str] = []
        self.last_rejection: str | None = None  # why the last filter_action rejected its action, if it did

    # ---- gates --------------------------------------------------------------------------------
    def halt_reason(self, now: float, estop: bool, last_seen: dict[str, float | None]) -> str | None:
        """``"estop"``, ``"stale"`` or None. ``last_seen`` maps each required stream to the time
        (same clock as ``now``) its latest message arrived, None if it never did."""
        if estop:
            return "estop"
        timeout = self.config.observation_timeout_s
        if any(seen is None or now - seen > timeout for seen in last_seen.values()):
            return "stale"
        return None

    # ---- actions ------------------------------------------------------------------------------
    def filter_action(self, action: np.ndarray, ee_position: np.ndarray | None) -> CartesianCommand:
        """A safe command for one policy action (zero command if the action must be rejected)."""
        self.last_events, self.last_rejection = [], None
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            return self._reject("bad_action_shape")
        if not np.all(np.isfinite(action)):
            return self._reject("nonfinite_action")
        if ee_position is None or not np.all(np.isfinite(ee_position)):
            return self._reject("unknown_ee_pose")
        if np.any(np.abs(action) > 1.0):
            self._event("action_clipped")
            action = np.clip(action, -1.0, 1.0)
        translation = action[:3] * self.robot.translation_scale_m
        rotation = action[3:6] * self.robot.rotation_scale_rad
        period = self.robot.period_s
        translation = self._limit_norm(translation, min(self.config.max_step_translation_m,
                                                        self.config.max_linear_speed * period), "translation_limited")
        rotation = self._limit_norm(rotation, min(self.config.max_step_rotation_rad,
                                                  self.config.max_angular_speed * period), "rotation_limited")
        translation = self._inside_workspace(np.asarray(ee_position, dtype=np.float64), translation)
        return CartesianCommand(translation, rotation, float(action[6]))

    def limit_joint_step(self, current: np.ndarray, target: np.ndarray) -> np.ndarray | None:
        """Joint targets no further than ``max_joint_step_rad`` from ``current``; None if the
        solution is not finite (the caller sends no motion)."""
        if not np.all(np.isfinite(target)):
            self.counts["nonfinite_joint_target"] += 1
            self.last_events.append("nonfinite_joint_target")
            return None
        step = target - current
        limit = self.config.max_joint_step_rad
        if np.any(np.abs(step) > limit):
            self._event("joint_step_limited")
            step = np.clip(step, -limit, limit)
        return current + step

    def count(self, event: str) -> None:
        """Count an intervention decided outside the filter (e-stop, stale data, a slow inference)."""
        self.counts[event] += 1

    # ---- helpers ------------------------------------------------------------------------------
    def _inside_workspace(self, position: np.ndarray, translation: np.ndarray) -> np.ndarray:
        """Per axis: inside the box, stop at its wall; outside it (e.g. started there), allow only
        motion back towards it, never a jump and never further out."""
        inside = (position >= self.lower) & (position <= self.upper)
        within = np.clip(position + translation, self.lower, self.upper) - position
        inward = np.where(position < self.lower, np.maximum(translation, 0.0), np.minimum(translation, 0.0))
        limited = np.where(inside, within, inward)
        if not np.allclose(limited, translation):
            self._event("workspace_clamped")
        return limited

    def _limit_norm(self, vector: np.ndarray, limit: float, event: str) -> np.ndarray:
        norm = float(np.linalg.norm(vector))
        if norm > limit:
            self._event(event)
            return vector * (limit / norm)
        return vector

    def _event(self, name: str) -> None:
        self.counts[name] += 1
        self.last_events.append(name)

    def _reject(self, name: str) -> CartesianCommand:
        self._event(name)
        self.last_rejection = name
        return CartesianCommand.zero()
