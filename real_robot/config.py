"""The robot config of a deployment (``configs/robot/<arm>.yaml``): topics, command convention,
control rate, action scaling and safety limits. Typed and frozen like every run config: an unknown
key or a bad value is an error that lists the valid fields, never a silent default.

Action semantics (OpenVLA / LIBERO / our tabletop suite): a policy action is ``float32 [7]`` in
``[-1, 1]``: ``dx dy dz`` (end-effector translation in the base frame), ``droll dpitch dyaw``
(axis-angle rotation) and the gripper (-1 open, +1 closed). One action is one control period, so
``|a| = 1`` means ``translation_scale_m`` (or ``rotation_scale_rad``) per period, the scale the
policy was trained with; the node publishes it as a velocity (delta / period), the convention MoveIt
Servo's ``delta_twist_cmds`` expects. The safety limits are separate and are checked after scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vla_rl.core.config import ConfigError, load_config, option


@dataclass(frozen=True)
class TopicsConfig:
    image: str = option("/camera/image_raw", "sensor_msgs/Image of the scene camera (rgb8, bgr8, rgba8, bgra8 or mono8)")
    wrist_image: str = option("", "sensor_msgs/Image of a wrist camera; empty = none")
    joint_states: str = option("/joint_states", "sensor_msgs/JointState of the arm (and gripper)")
    ee_pose: str = option("/ee_pose", "geometry_msgs/PoseStamped of the end effector with header.frame_id = "
                                      "base_frame, for the workspace box (required: without a pose no action "
                                      "can be checked against the box, so none would be executed)")
    instruction: str = option("/vla/instruction", "std_msgs/String: the task instruction; a new one starts an episode")
    estop: str = option("/vla/estop", "std_msgs/Bool: true halts at once; motion resumes only after false")
    twist_command: str = option("/servo_node/delta_twist_cmds", "geometry_msgs/TwistStamped (command_mode: twist)")
    joint_command: str = option("/joint_trajectory_controller/joint_trajectory",
                                "trajectory_msgs/JointTrajectory (command_mode: joint_trajectory)")
    gripper_command: str = option("/gripper/command", "std_msgs/Float64 gripper closure: 0 open .. 1 closed; "
                                                      "empty = the arm has no gripper")
    status: str = option("/vla/status", "std_msgs/String JSON: state, step, latency, safety counters")

    def __post_init__(self) -> None:
        if not self.ee_pose:
            raise ConfigError("topics.ee_pose is required: the workspace box is checked against the end-effector "
                              "pose, and every action is rejected without one (publish it from the arm driver or "
                              "relay TF base_frame -> tool frame)")


@dataclass(frozen=True)
class SafetyConfig:
    workspace_min: tuple[float, float, float] = option((-0.3, -0.45, 0.0), "workspace box lower corner (m, base frame)")
    workspace_max: tuple[float, float, float] = option((0.45, 0.45, 0.5), "workspace box upper corner (m, base frame)")
    max_step_translation_m: float = option(0.09, "largest end-effector translation (norm) per control period")
    max_step_rotation_rad: float = option(0.55, "largest rotation angle per control period")
    max_linear_speed: float = option(1.0, "cap on the commanded linear speed (m/s)")
    max_angular_speed: float = option(6.0, "cap on the commanded angular speed (rad/s)")
    max_joint_step_rad: float = option(0.2, "joint_trajectory mode: largest joint change per control period")
    observation_timeout_s: float = option(0.5, "no fresh image or joint state for this long -> zero command, 'stale'")

    def __post_init__(self) -> None:
        if len(self.workspace_min) != 3 or len(self.workspace_max) != 3:
            raise ConfigError("workspace_min and workspace_max need 3 values (x, y, z)")
        if not all(math.isfinite(v) for v in (*self.workspace_min, *self.workspace_max)):
            raise ConfigError(f"workspace_min {self.workspace_min} and workspace_max {self.workspace_max} must be "
                              "finite numbers (a NaN bound would pass every comparison)")
        if any(lo >= hi for lo, hi in zip(self.workspace_min, self.workspace_max)):
            raise ConfigError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}")
        for name in ("max_step_translation_m", "max_step_rotation_rad", "max_linear_speed", "max_angular_speed",
                     "max_joint_step_rad", "observation_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"safety.{name} must be a positive number, got {value}")


@dataclass(frozen=True)
class RobotConfig:
    name: str = option("arm", "a label for logs and bags")
    base_frame: str = option("base_link", "frame_id of published commands")
    control_hz: float = option(10.0, "control loop rate; one policy action per period")
    translation_scale_m: float = option(0.05, "end-effector translation per period at |a| = 1 (training scale; "
                                              "tabletop and LIBERO/robosuite OSC: 0.05)")
    rotation_scale_rad: float = option(0.3, "rotation per period at |a| = 1 (training scale)")
    command_mode: Literal["twist", "joint_trajectory"] = option(
        "twist", "twist: end-effector velocity for MoveIt Servo; joint_trajectory: joint targets from IK on "
                 "kinematics_mjcf, for joint-space controllers")
    arm_joints: tuple[str, ...] = option((), "arm joint names in JointState order used for joint_trajectory and "
                                            "recordings; empty = every joint in the message")
    kinematics_mjcf: str = option("", "joint_trajectory mode: an MJCF of the arm with a site named by ee_site")
    ee_site: str = option("grip_site", "the MJCF site that is the end effector")
    finger_joints: tuple[str, ...] = option(
        ("finger_left", "finger_right"), "gripper joints in JointState whose positions (m) end the proprio vector of "
                                         "a policy that takes proprio (with topics.ee_pose)")
    proprio_down_quat_wxyz: tuple[float, float, float, float] = option(
        (0.0, 0.0, 1.0, 0.0), "end-effector orientation (base frame) whose proprio orientation is zero: the training "
                              "data's 'pointing straight down' (the tabletop suite's default)")
    camera: str = option("agentview", "the policy camera the scene image feeds")
    wrist_camera: str = option("wrist", "the policy camera the wrist image feeds (if topics.wrist_image is set)")
    inference_timeout_s: float = option(2.0, "an inference slower than this is reported and its action dropped; "
                                             "one still running after this long halts the arm")
    estop_latched: bool = option(
        False, "true: start halted (state estop) and move only after false arrives on topics.estop, "
               "subscribed transient_local so a late-starting node still gets the e-stop's last state; the e-stop "
               "publisher must then be transient_local too (a volatile one does not match, and the arm never "
               "moves). false: a volatile subscription that hears any e-stop publisher, and no motion is held "
               "back until a first message; recommended true on a real arm")
    topics: TopicsConfig = option(factory=TopicsConfig, doc="topic names")
    safety: SafetyConfig = option(factory=SafetyConfig, doc="limits enforced by real_robot.safety")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.control_hz) and 0 < self.control_hz <= 1000):
            raise ConfigError(f"control_hz must be in (0, 1000], got {self.control_hz}")
        for name in ("translation_scale_m", "rotation_scale_rad", "inference_timeout_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        if self.command_mode == "joint_trajectory":
            if not self.kinematics_mjcf:
                raise ConfigError("command_mode joint_trajectory needs kinematics_mjcf (the arm's MJCF for IK)")
            if not self.arm_joints:
                raise ConfigError("command_mode joint_trajectory needs arm_joints (names in the MJCF and JointState)")

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_hz


def load_robot_config(path: str | Path, overrides: list[str] = ()) -> RobotConfig:
    """Load and validate ``configs/robot/<arm>.yaml``; a missing file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"robot config {path} does not exist (see configs/robot/ for examples)")
    config = load_config(RobotConfig, path, overrides)
    if config.kinematics_mjcf and not Path(config.kinematics_mjcf).is_file() \
            and not config.kinematics_mjcf.startswith("builtin:"):
        raise FileNotFoundError(f"kinematics_mjcf {config.kinematics_mjcf} does not exist")
    return config
