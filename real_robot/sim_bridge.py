"""A MuJoCo arm behind ROS 2 topics: what the deployment node sees on a real robot, from a sim env.

``SimBridge`` wraps a tabletop env (the composition root passes a factory that returns a reset env;
anything with the ``BridgedEnv`` methods works) and speaks the robot side of the conventions in
``RobotConfig``. The env is built on the executor's thread at the first timer tick: an EGL context
can be current in one thread only, so the env must render where the callbacks run.

- publishes the scene camera (``sensor_msgs/Image``, rgb8 or bgr8), the wrist camera when the env
  renders one, ``/joint_states`` and the end-effector pose (``geometry_msgs/PoseStamped``) at
  ``rate_hz``, and once more right after every executed command;
- executes ``TwistStamped`` commands (velocity x period = the delta the env applies) or
  ``JointTrajectory`` targets; the gripper is a separate controller, as on real arms: each step
  uses the newest closure received on ``/gripper/command`` (DDS does not order messages across
  topics, so a closure sent with a motion may apply from the next step);
- publishes ``/sim/status`` (JSON: steps, success, progress, end-effector position), and, given
  ``init_state`` (task, split, init_state_id), that once on the latched ``/sim/init_state``: the deployment
  node records it into its bags, so ``bag-to-demos`` keeps episodes of held-out init states marked as such.

Timing: ``lockstep=True`` advances the physics by one control period per received command, which
makes a run reproducible regardless of CPU load; ``False`` advances it every period on the timer
with the newest command (zero velocity after ``command_timeout_s``), as a real arm would.
For tests, ``freeze_camera()`` stops the camera stream, as an unplugged camera would.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable, Protocol

import numpy as np

from real_robot import messages
from real_robot.config import RobotConfig


class BridgedEnv(Protocol):
    instruction: str

    def step(self, action: np.ndarray): ...
    def step_joint_targets(self, arm_targets: np.ndarray, gripper: float): ...
    def render_camera(self, camera: str, size: int | None = None) -> np.ndarray: ...
    def joint_state(self) -> tuple[list[str], np.ndarray, np.ndarray]: ...
    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]: ...
    def is_success(self) -> bool: ...
    def progress(self) -> float: ...


class SimBridge:
    def __init__(self, make_env: Callable[[], BridgedEnv], config: RobotConfig, rate_hz: float | None = None, lockstep: bool = True,
                 image_encoding: str = "rgb8", wrist_camera: bool = False, command_timeout_s: float = 0.2,
                 node_name: str = "sim_bridge", context=None, init_state: dict | None = None):
        rclpy = messages.require_ros()
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64, String
        from trajectory_msgs.msg import JointTrajectory

        self.make_env, self.env, self.config, self.lockstep = make_env, None, config, lockstep
        self.image_encoding, self.wrist_camera = image_encoding, wrist_camera
        self.command_timeout_s = command_timeout_s
        self.node = rclpy.create_node(node_name, context=context)
        self.lock = threading.Lock()
        self.camera_frozen = False
        self.gripper = -1.0  # open until told otherwise
        self.latest_command: tuple[str, np.ndarray, float] | None = None  # (kind, payload, arrival)
        self.steps = 0
        self.success_reached = False
        self.commands_received = 0
        self.command_log: list[tuple[float, np.ndarray]] = []  # (time, executed action or targets)
        self.frame = self.wrist_frame = None
        self.commands_before_ready = 0
        topics, node = config.topics, self.node
        self.image_pub = node.create_publisher(Image, topics.image, 2)
        self.wrist_pub = node.create_publisher(Image, topics.wrist_image, 2) if wrist_camera and topics.wrist_image \
            else None
        self.joint_pub = node.create_publisher(JointState, topics.joint_states, 10)
        self.pose_pub = node.create_publisher(PoseStamped, topics.ee_pose, 10)
        self.status_pub = node.create_publisher(String, "/sim/status", 10)
        node.create_subscription(TwistStamped, topics.twist_command, self._on_twist, 10)
        node.create_subscription(JointTrajectory, topics.joint_command, self._on_trajectory, 10)
        node.create_subscription(Float64, topics.gripper_command, self._on_gripper, 10)
        self.JointState, self.PoseStamped, self.String = JointState, PoseStamped, String
        if init_state is not None:
            self.init_state_pub = node.create_publisher(String, messages.SIM_INIT_STATE_TOPIC, messages.latched_qos())
            self.init_state_pub.publish(String(data=json.dumps(init_state)))
        self.timer = node.create_timer(1.0 / (rate_hz or config.control_hz), self._tick)

    # ---- commands -----------------------------------------------------------------------------
    def _on_gripper(self, msg) -> None:
        if np.isfinite(msg.data):
            self.gripper = messages.gripper_action(msg.data)

    def _on_twist(self, msg) -> None:
        linear, angular = messages.twist_vectors(msg)
        period = self.config.period_s
        action = np.concatenate([linear * period / self.config.translation_scale_m,
                                 angular * period / self.config.rotation_scale_rad, [0.0]])
        self._command("twist", action)

    def _on_trajectory(self, msg) -> None:
        if not msg.points or self.env is None:
            return
        names, positions, _ = self.env.joint_state()
        order = {name: i for i, name in enumerate(msg.joint_names)}
        arm = [name for name in names if name in order]
        self._command("joints", np.asarray([msg.points[-1].positions[order[name]] for name in arm]))

    def _command(self, kind: str, payload: np.ndarray) -> None:
        if self.env is None:
            self.commands_before_ready += 1
            return
        self.commands_received += 1
        if self.lockstep:
            self._execute(kind, payload)
            self._publish_state()
        else:
            with self.lock:
                self.latest_command = (kind, payload, time.monotonic())

    def _execute(self, kind: str, payload: np.ndarray) -> None:
        if kind == "twist":
            action = payload.copy()
            action[6] = self.gripper
            # The arm executes what it is told; out-of-range values are the node's to prevent,
            # so count them instead of hiding them (tests assert on this log).
            self.command_log.append((time.monotonic(), action.copy()))
            self.env.step(np.clip(action, -1.0, 1.0).astype(np.float32))
        else:
            self.command_log.append((time.monotonic(), payload.copy()))
            self.env.step_joint_targets(payload, self.gripper)
        self.steps += 1
        self.success_reached |= bool(self.env.is_success())
        self._render()

    def _render(self) -> None:
        self.frame = self.env.render_camera("agentview")
        if self.wrist_camera:
            self.wrist_frame = self.env.render_camera("wrist")

    # ---- streams ------------------------------------------------------------------------------
    def freeze_camera(self, frozen: bool = True) -> None:
        self.camera_frozen = frozen

    def _tick(self) -> None:
        if self.env is None:
            self.env = self.make_env()
            self._render()
        elif not self.lockstep:
            with self.lock:
                command = self.latest_command
                self.latest_command = None
            if command is not None and time.monotonic() - command[2] <= self.command_timeout_s:
                self._execute(command[0], command[1])
            else:
                self._execute("twist", np.zeros(7))
        self._publish_state()

    def _publish_state(self) -> None:
        stamp = self.node.get_clock().now().to_msg()
        if not self.camera_frozen:
            self.image_pub.publish(messages.rgb_to_image(self.frame, stamp, "agentview_camera", self.image_encoding))
            if self.wrist_pub is not None and self.wrist_frame is not None:
                self.wrist_pub.publish(messages.rgb_to_image(self.wrist_frame, stamp, "wrist_camera",
                                                             self.image_encoding))
        names, positions, velocities = self.env.joint_state()
        joints = self.JointState(name=names, position=[float(q) for q in positions],
                                 velocity=[float(v) for v in velocities])
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)
        position, quat = self.env.ee_pose()
        pose = self.PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, self.config.base_frame
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in position)
        pose.pose.orientation.w, pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z = \
            (float(v) for v in quat)
        self.pose_pub.publish(pose)
        self.status_pub.publish(self.String(data=json.dumps(self.status())))

    def status(self) -> dict:
        if self.env is None:
            return {"steps": 0, "ready": False}
        return {"ready": True, "steps": self.steps, "success": bool(self.env.is_success()), "success_reached": self.success_reached,
                "progress": float(self.env.progress()), "ee_position": [float(v) for v in self.env.ee_pose()[0]],
                "commands_received": self.commands_received,
                "commands_before_ready": self.commands_before_ready, "camera_frozen": self.camera_frozen}

    def destroy(self) -> None:
        """Stop and release the env's renderers (call from the thread that spun the node)."""
        self.timer.cancel()
        self.node.destroy_node()
        if self.env is not None:
            self.env.close()
