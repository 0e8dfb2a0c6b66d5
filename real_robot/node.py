"""The deployment node: a VLA policy driving an arm over ROS 2, through the safety layer.

Threads:
- the ROS executor runs the subscriptions and the control timer (``control_hz``);
- one inference thread runs the policy, so a slow forward pass never blocks the callbacks, the
  e-stop or the watchdog.

Each control period (``_control_tick``):
1. ``SafetyFilter.halt_reason``: an active e-stop or stale sensor data -> zero command, the action
   queue is dropped, the state says why;
2. otherwise the next queued action (a policy emits ``K >= 1`` actions per inference; a chunk is
   executed one action per period) goes through ``SafetyFilter.filter_action`` and is published as
   a ``TwistStamped`` (velocity = delta / period) plus the gripper closure, or as a
   ``JointTrajectory`` from the injected IK;
3. when the queue is empty, an inference on the newest observation is started (also started as
   soon as a new image arrives after the last command, so a command follows its observation
   within one period). An action that becomes ready after its tick has passed is sent at once
   rather than at the next tick; commands stay at least 0.9 periods apart either way.

Every tick publishes ``/vla/status`` (JSON). A new instruction starts a new episode (step 0, empty
queue, a new bag when recording). The node depends only on the ``Policy`` contract: the CLI loads
the checkpoint and injects the policy (and the IK for joint-space arms).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from real_robot import messages
from real_robot.config import RobotConfig
from real_robot.safety import CartesianCommand, SafetyFilter
from vla_rl.core.types import ObsBatch

log = logging.getLogger("vla_rl.deploy")
PROPRIO_DIM = 8


class ActionPolicy(Protocol):
    def predict_actions(self, obs: ObsBatch) -> np.ndarray: ...  # float [B, K, 7]


class JointSolver(Protocol):
    def solve_delta(self, q: np.ndarray, translation: np.ndarray, rotation: np.ndarray) -> np.ndarray: ...


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # policy camera -> uint8 [S, S, 3]
    sequence: int                  # increases with every scene image
    received: float                # monotonic seconds


class LatencyStats:
    """Rolling inference latencies (ms) for the status message."""

    def __init__(self, window: int = 200):
        self.values: deque[float] = deque(maxlen=window)

    def add(self, milliseconds: float) -> None:
        self.values.append(milliseconds)

    def summary(self) -> dict[str, float | None]:
        if not self.values:
            return {"last": None, "mean": None, "p95": None}
        array = np.asarray(self.values)
        return {"last": round(float(array[-1]), 2), "mean": round(float(array.mean()), 2),
                "p95": round(float(np.percentile(array, 95)), 2)}


class PolicyNode:
    def __init__(self, policy: ActionPolicy, config: RobotConfig, image_size: int, cameras: tuple[str, ...],
                 instruction: str = "", joint_solver: JointSolver | None = None, recorder=None,
                 node_name: str = "vla_policy", context=None, proprio_dim: int = 0):
        """``proprio_dim``: the policy's proprio input (0 = none, 8 = EE position, EE orientation
        relative to ``config.proprio_down_quat_wxyz``, finger positions), built from
        ``topics.ee_pose`` and the ``config.finger_joints`` of ``topics.joint_states``."""
        rclpy = messages.require_ros()
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Float64, String
        from trajectory_msgs.msg import JointTrajectory

        if config.command_mode == "joint_trajectory" and joint_solver is None:
            raise ValueError("command_mode joint_trajectory needs a joint_solver (IK for the arm)")
        if config.camera not in cameras:
            raise ValueError(f"the policy reads cameras {cameras}; the robot config feeds {config.camera!r}")
        if len(cameras) > 1 and not config.topics.wrist_image:
            raise ValueError(f"the policy needs cameras {cameras}; set topics.wrist_image for the second one")
        if proprio_dim not in (0, PROPRIO_DIM):
            raise ValueError(f"the node builds {PROPRIO_DIM}-D proprio; the policy takes {proprio_dim}")
        if proprio_dim and not (config.topics.ee_pose and config.finger_joints):
            raise ValueError("the policy takes proprio: set topics.ee_pose and finger_joints in the robot config")
        self.proprio_dim = proprio_dim
        self.policy, self.config, self.image_size, self.cameras = policy, config, image_size, cameras
        self.joint_solver, self.recorder = joint_solver, recorder
        self.safety = SafetyFilter(config)
        self.node = rclpy.create_node(node_name, context=context)
        self.lock = threading.Lock()
        self.inference_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vla-inference")
        self.pending: Future | None = None
        self.queue: deque[tuple[np.ndarray, float | None]] = deque()  # (action, its observation's arrival)
        self.latency = LatencyStats()   # inference alone
        self.reaction = LatencyStats()  # image arrival -> its first command published
        self.instruction = instruction
        self.episode, self.step = (1 if instruction else 0), 0
        self.estop = False
        self.state = "waiting_for_instruction" if not instruction else "starting"
        self.latest: Observation | None = None
        self.wrist: np.ndarray | None = None
        self.sequence = 0
        self.inferred_sequence = -1
        self.epoch = 0  # bumped when queued actions become invalid (e-stop, stale, new instruction)
        self.last_seen: dict[str, float | None] = {"image": None, "joint_states": None}
        if config.topics.ee_pose:
            self.last_seen["ee_pose"] = None
        if config.topics.wrist_image:
            self.last_seen["wrist_image"] = None
        self.ee_position: np.ndarray | None = None
        self.ee_quat: np.ndarray | None = None
        self.fingers: np.ndarray | None = None
        self.joints: np.ndarray | None = None
        self.gripper_action: float | None = None

        topics, node = config.topics, self.node
        node.create_subscription(Image, topics.image, self._on_image, 2)
        if topics.wrist_image:
            node.create_subscription(Image, topics.wrist_image, self._on_wrist_image, 2)
        node.create_subscription(JointState, topics.joint_states, self._on_joint_states, 10)
        if topics.ee_pose:
            node.create_subscription(PoseStamped, topics.ee_pose, self._on_ee_pose, 10)
        node.create_subscription(String, topics.instruction, self._on_instruction, 10)
        node.create_subscription(Bool, topics.estop, self._on_estop, 10)
        if config.command_mode == "twist":
            self.twist_pub = node.create_publisher(TwistStamped, topics.twist_command, 10)
        else:
            self.trajectory_pub = node.create_publisher(JointTrajectory, topics.joint_command, 10)
        self.gripper_pub = node.create_publisher(Float64, topics.gripper_command, 10) if topics.gripper_command \
            else None
        self.status_pub = node.create_publisher(String, topics.status, 10)
        self.timer = node.create_timer(config.period_s, self._control_tick)
        self.Float64, self.String = Float64, String
        self.commands_published = 0
        self.last_command_time = float("-inf")
        if recorder is not None and instruction:
            recorder.start_episode(self.episode, instruction)
        log.info("policy node up: %s mode at %.1f Hz, cameras %s", config.command_mode, config.control_hz, cameras)

    # ---- subscriptions --------------------------------------------------------------------------
    def _record(self, topic: str, msg) -> None:
        if self.recorder is not None and self.episode:
            self.recorder.write(topic, msg)

    def _rejected(self, event: str, error: Exception) -> None:
        """A message that cannot be used is dropped (the watchdog then halts the arm if nothing
        usable follows); counted, and logged the first time."""
        with self.lock:
            self.safety.count(event)
            first = self.safety.counts[event] == 1
        if first:
            log.error("%s: %s (further ones are only counted in /vla/status)", event, error)

    def _on_image(self, msg) -> None:
        try:
            rgb = messages.square_resize(messages.image_to_rgb(msg), self.image_size)
        except ValueError as error:
            return self._rejected("bad_image", error)
        now = time.monotonic()
        with self.lock:
            self.sequence += 1
            images = {self.config.camera: rgb}
            if self.wrist is not None:
                images[self.config.wrist_camera] = self.wrist
            self.latest = Observation(images, self.sequence, now)
            self.last_seen["image"] = now
        self._record(self.config.topics.image, msg)
        self._maybe_start_inference()

    def _on_wrist_image(self, msg) -> None:
        try:
            rgb = messages.square_resize(messages.image_to_rgb(msg), self.image_size)
        except ValueError as error:
            return self._rejected("bad_image", error)
        with self.lock:
            self.wrist = rgb
            self.last_seen["wrist_image"] = time.monotonic()
        self._record(self.config.topics.wrist_image, msg)

    def _on_joint_states(self, msg) -> None:
        try:
            positions = messages.joint_positions(msg, self.config.arm_joints)
            fingers = messages.joint_positions(msg, self.config.finger_joints) if self.proprio_dim else None
        except KeyError as error:
            return self._rejected("bad_joint_states", error)
        with self.lock:
            self.joints = positions
            self.fingers = fingers
            self.last_seen["joint_states"] = time.monotonic()
        self._record(self.config.topics.joint_states, msg)

    def _on_ee_pose(self, msg) -> None:
        with self.lock:
            self.ee_position = messages.pose_position(msg)
            self.ee_quat = messages.pose_quaternion_wxyz(msg)
            self.last_seen["ee_pose"] = time.monotonic()
        self._record(self.config.topics.ee_pose, msg)

    def _on_instruction(self, msg) -> None:
        text = msg.data.strip()
        with self.lock:
            self.instruction = text
            self.episode += 1
            self.step = 0
            self._drop_actions()
        if self.recorder is not None:
            self.recorder.start_episode(self.episode, text)
        self._record(self.config.topics.instruction, msg)
        log.info("episode %d: %r", self.episode, text)

    def _on_estop(self, msg) -> None:
        with self.lock:
            if msg.data and not self.estop:
                self.safety.count("estop")
                log.warning("e-stop: halting")
            if not msg.data and self.estop:
                log.warning("e-stop released")
            self.estop = bool(msg.data)
            if self.estop:
                self._drop_actions()
        self._record(self.config.topics.estop, msg)
        if self.estop:
            self._control_tick()  # halt now, not at the next period

    # ---- inference ----------------------------------------------------------------------------
    def _drop_actions(self) -> None:
        self.queue.clear()
        self.epoch += 1

    def _maybe_start_inference(self) -> None:
        with self.lock:
            if (self.pending is not None or self.queue or self.latest is None or not self.instruction
                    or self.estop or self.state in ("stale", "waiting_for_robot", "waiting_for_observations")
                    or self.latest.sequence <= self.inferred_sequence
                    # act only on what the camera saw after the last command went out
                    or self.latest.received <= self.last_command_time):
                return
            observation, instruction, epoch = self.latest, self.instruction, self.epoch
            self.inferred_sequence = observation.sequence
            self.pending = self.inference_pool.submit(self._infer, observation, instruction, epoch)

    def _proprio(self) -> np.ndarray:
        """The training layout's 8-D proprio from the latest pose and finger positions (zeros for a
        policy that takes none)."""
        if not self.proprio_dim:
            return np.zeros(PROPRIO_DIM, np.float32)
        from sim_envs.arm import orientation_error

        with self.lock:
            position, quat, fingers = self.ee_position, self.ee_quat, self.fingers
        if position is None or quat is None or fingers is None:
            raise ValueError("no end-effector pose or finger joint state yet for the policy's proprio")
        rotation = orientation_error(quat / np.linalg.norm(quat), np.asarray(self.config.proprio_down_quat_wxyz))
        return np.concatenate([position, rotation, fingers]).astype(np.float32)

    def _infer(self, observation: Observation, instruction: str, epoch: int) -> None:
        started = time.perf_counter()
        try:
            missing = [c for c in self.cameras if c not in observation.images]
            if missing:
                raise ValueError(f"no image yet for cameras {missing}")
            images = {c: observation.images[c][None] for c in self.cameras}
            obs = ObsBatch(images=images, proprio=self._proprio()[None], instructions=[instruction])
            actions = np.asarray(self.policy.predict_actions(obs))[0]  # [K, 7]
            error = None
        except Exception as exc:  # noqa: BLE001 - reported in the status, never kills the node
            actions, error = None, exc
        milliseconds = 1000 * (time.perf_counter() - started)
        with self.lock:
            self.pending = None
            self.latency.add(milliseconds)
            if error is not None:
                self.safety.count("inference_error")
                log.error("inference failed: %s", error)
                return
            if milliseconds > 1000 * self.config.inference_timeout_s:
                self.safety.count("slow_inference")
                log.warning("inference took %.0f ms (> %.0f ms): action dropped", milliseconds,
                            1000 * self.config.inference_timeout_s)
                return
            if epoch == self.epoch and not self.estop:
                chunk = np.asarray(actions, dtype=np.float64).reshape(-1, 7)
                self.queue.extend((action, observation.received if i == 0 else None) for i, action in enumerate(chunk))
            late = time.monotonic() - self.last_command_time >= self.config.period_s
        if late:
            # The tick that would have sent this action has passed: send it now instead of waiting
            # for the next one (commands stay at least one period apart, see _control_tick).
            self._control_tick()

    # ---- control loop ---------------------------------------------------------------------------
    def _control_tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            reason = self.safety.halt_reason(now, self.estop, dict(self.last_seen))
            if not self._robot_listening():
                self.state, command = "waiting_for_robot", None
            elif reason == "stale" and self.commands_published == 0:
                # Start-up: nothing commanded yet, so nothing to stop; wait without publishing.
                self.state, command = "waiting_for_observations", None
            elif reason is not None:
                if self.state != reason:
                    if reason == "stale":
                        self.safety.count("stale")
                        log.warning("stale observations (%s): halting", self._stale_streams(now))
                    self._drop_actions()
                self.state = reason
                command = CartesianCommand.zero()
            elif not self.instruction:
                self.state, command = "waiting_for_instruction", None
            elif self.queue and now - self.last_command_time >= 0.9 * self.config.period_s:
                self.state = "running"
                action, observed = self.queue.popleft()
                self.last_command_time = now  # claimed under the lock: a concurrent tick waits a period
                command = self.safety.filter_action(action, self.ee_position)
                if observed is not None:  # the first action of a chunk: time since its image arrived
                    self.reaction.add(1000 * (time.monotonic() - observed))
                for event in self.safety.last_events:
                    log.info("safety: %s at step %d", event, self.step)
                self.step += 1
                if self.recorder is not None:
                    self.recorder.write_action(self._executed_action(command))
            else:
                self.state, command = ("running" if self.step else "starting"), None
            joints = None if self.joints is None else self.joints.copy()
        if command is not None:
            self._publish(command, joints)
        self._publish_status()
        self._maybe_start_inference()

    def _executed_action(self, command: CartesianCommand) -> np.ndarray:
        """The command after the safety layer, back in policy units (what the arm was told to do)."""
        return np.concatenate([command.translation / self.config.translation_scale_m,
                               command.rotation / self.config.rotation_scale_rad,
                               [0.0 if command.holds_gripper else command.gripper]])

    def _robot_listening(self) -> bool:
        """Commands go out only once the arm (and gripper) controllers subscribe: a command sent
        before DDS has matched them would be lost, and the first step of an episode with it."""
        arm = self.twist_pub if self.config.command_mode == "twist" else self.trajectory_pub
        gripper_ok = self.gripper_pub is None or self.gripper_pub.get_subscription_count() > 0
        return arm.get_subscription_count() > 0 and gripper_ok

    def _stale_streams(self, now: float) -> list[str]:
        timeout = self.config.safety.observation_timeout_s
        return [name for name, seen in self.last_seen.items() if seen is None or now - seen > timeout]

    def _publish(self, command: CartesianCommand, joints: np.ndarray | None) -> None:
        stamp = self.node.get_clock().now().to_msg()
        frame = self.config.base_frame
        if self.gripper_pub is not None and not command.holds_gripper:  # before the arm command: a lockstep arm reads it when that arrives
            gripper = self.Float64(data=messages.gripper_closure(command.gripper))
            self.gripper_pub.publish(gripper)
            self._record(self.config.topics.gripper_command, gripper)
        if self.config.command_mode == "twist":
            linear, angular = command.velocities(self.config.period_s)
            msg = messages.twist_message(linear, angular, stamp, frame)
            self.twist_pub.publish(msg)
            self._record(self.config.topics.twist_command, msg)
        elif joints is not None:
            moving = np.any(command.translation) or np.any(command.rotation)
            target = self.joint_solver.solve_delta(joints, command.translation, command.rotation) if moving else joints
            limited = self.safety.limit_joint_step(joints, target)
            msg = messages.joint_trajectory_message(self.config.arm_joints, joints if limited is None else limited,
                                                    self.config.period_s, stamp, frame)
            self.trajectory_pub.publish(msg)
            self._record(self.config.topics.joint_command, msg)
        self.commands_published += 1
        self.last_command_time = time.monotonic()

    def status(self) -> dict:
        with self.lock:
            return {"state": self.state, "episode": self.episode, "step": self.step, "instruction": self.instruction,
                    "queued_actions": len(self.queue), "commands_published": self.commands_published,
                    "inference_latency_ms": self.latency.summary(),
                    "observation_to_command_ms": self.reaction.summary(), "safety_events": dict(self.safety.counts)}

    def _publish_status(self) -> None:
        msg = self.String(data=json.dumps(self.status()))
        self.status_pub.publish(msg)
        self._record(self.config.topics.status, msg)

    def destroy(self) -> None:
        self.timer.cancel()
        self.inference_pool.shutdown(wait=True)
        if self.recorder is not None:
            self.recorder.close()
        self.node.destroy_node()
