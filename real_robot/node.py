"""The deployment node: a VLA policy driving an arm over ROS 2, through the safety layer.

Threads:
- the ROS executor runs the subscriptions and the control timer (``control_hz``);
- one inference thread runs the policy, so a slow forward pass never blocks the callbacks, the
  e-stop or the watchdog.

Each control period (``_control_tick``):
1. ``SafetyFilter.halt_reason``: an active e-stop or stale sensor data (or an inference running
   past ``inference_timeout_s``) -> zero command (twist mode; joint mode sends nothing, see
   ``_publish``), the action queue is dropped, the state says why. A halt goes out whether or not
   every controller listens; motion only once they all do;
2. otherwise the next queued action (a policy emits ``K >= 1`` actions per inference; a chunk is
   executed one action per period) goes through ``SafetyFilter.filter_action`` and is published as
   a ``TwistStamped`` (velocity = delta / period) plus the gripper closure, or as a
   ``JointTrajectory`` from the injected IK;
3. when the queue is empty, an inference on the newest observation is started (also started as
   soon as a new image arrives after the last command, so a command follows its observation
   within one period). An action that becomes ready after its tick has passed is sent at once
   rather than at the next tick; commands stay at least 0.9 periods apart either way.

Choosing a command and publishing it happen under one lock (``publish_lock``), so a motion chosen
on one thread never goes out after a zero command another thread sent for a newer e-stop.
Subscription callbacks never raise (``_guarded``): an exception would end the executor's spin.

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
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from real_robot import messages
from real_robot.background_worker import DaemonWorker
from real_robot.config import RobotConfig
from real_robot.safety import ACTION_DIM, CartesianCommand, SafetyFilter
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
    header: Any                    # the scene image's std_msgs/Header: a recording pairs actions with it


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
        if proprio_dim and not config.finger_joints:
            raise ValueError("the policy takes proprio: set finger_joints in the robot config")
        self.proprio_dim = proprio_dim
        self.policy, self.config, self.image_size, self.cameras = policy, config, image_size, cameras
        self.joint_solver, self.recorder = joint_solver, recorder
        self.safety = SafetyFilter(config)
        self.node = rclpy.create_node(node_name, context=context)
        self.lock = threading.Lock()
        self.publish_lock = threading.Lock()  # held from choosing a command to publishing it
        self.inference_pool = DaemonWorker("vla-inference")  # a hung inference cannot hold the exit
        self.pending: Future | None = None
        self.pending_since, self.pending_timed_out = 0.0, False  # when it started; inference_timeout counted
        # (action, the observation its chunk was decided from, its index in the chunk)
        self.queue: deque[tuple[np.ndarray, Observation | None, int]] = deque()
        self.latency = LatencyStats()   # inference alone
        self.reaction = LatencyStats()  # image arrival -> its first command published
        self.instruction = instruction
        self.episode, self.step = (1 if instruction else 0), 0
        self.estop = config.estop_latched  # latched: halted until the e-stop says false
        self.state = "waiting_for_instruction" if not instruction else "starting"
        self.latest: Observation | None = None
        self.wrist: np.ndarray | None = None
        self.sequence = 0
        self.inferred_sequence = -1
        self.epoch = 0  # bumped when queued actions become invalid (e-stop, stale, new instruction)
        self.last_seen: dict[str, float | None] = {"image": None, "joint_states": None, "ee_pose": None}
        if config.topics.wrist_image:
            self.last_seen["wrist_image"] = None
        self.ee_position: np.ndarray | None = None
        # the translations sent, with when (ROS clock ns, monotonic s): a pose measured before a command went out
        # cannot show it, whether the pose is slow to publish or lags behind the arm, so the workspace box is
        # checked against the pose plus the translations sent after the pose was measured (see _expected_position)
        self.translations_sent: deque[tuple[int, float, np.ndarray]] = deque(maxlen=256)
        self.ee_pose_stamp_ns, self.ee_pose_received = 0, float("-inf")
        self.latest_sensor_messages: dict[str, Any] = {}  # topic -> newest message, replayed into a new episode's bag
        self.ee_quat: np.ndarray | None = None
        self.fingers: np.ndarray | None = None
        self.joints: np.ndarray | None = None
        self.gripper_action: float | None = None

        topics, node, guarded = config.topics, self.node, self._guarded
        node.create_subscription(Image, topics.image, guarded(self._on_image), 2)
        if topics.wrist_image:
            node.create_subscription(Image, topics.wrist_image, guarded(self._on_wrist_image), 2)
        node.create_subscription(JointState, topics.joint_states, guarded(self._on_joint_states), 10)
        node.create_subscription(PoseStamped, topics.ee_pose, guarded(self._on_ee_pose), 10)
        node.create_subscription(String, topics.instruction, guarded(self._on_instruction), 10)
        node.create_subscription(Bool, topics.estop, guarded(self._on_estop), self._estop_qos())
        node.create_subscription(String, messages.SIM_INIT_STATE_TOPIC, guarded(self._on_sim_init_state),
                                 messages.latched_qos())
        if config.command_mode == "twist":
            self.twist_pub = node.create_publisher(TwistStamped, topics.twist_command, 10)
        else:
            self.trajectory_pub = node.create_publisher(JointTrajectory, topics.joint_command, 10)
        self.gripper_pub = node.create_publisher(Float64, topics.gripper_command, 10) if topics.gripper_command \
            else None
        self.status_pub = node.create_publisher(String, topics.status, 10)
        self.timer = node.create_timer(config.period_s, self._timer_tick)
        self.Float64, self.String = Float64, String
        self.commands_published = 0
        self.moved = False  # a command other than a halt has gone out (start-up ends)
        self.closing = False  # destroy() has sent the final zero: nothing may follow it
        self.last_command_time = float("-inf")
        if recorder is not None and instruction:
            recorder.start_episode(self.episode, instruction)
        log.info("policy node up: %s mode at %.1f Hz, cameras %s", config.command_mode, config.control_hz, cameras)

    # ---- subscriptions --------------------------------------------------------------------------
    def _record(self, topic: str, msg) -> None:
        topics = self.config.topics
        if topic in (topics.image, topics.wrist_image, topics.joint_states, topics.ee_pose,
                     messages.SIM_INIT_STATE_TOPIC):
            with self.lock:
                self.latest_sensor_messages[topic] = msg
        if self.recorder is not None and self.episode:
            self.recorder.write(topic, msg)

    def _guarded(self, callback):
        """``callback`` that never raises: an exception in a subscription callback would end the
        executor's spin, and with it the control timer, without a zero command. It is counted as
        ``callback_error`` instead (the watchdog halts the arm if no usable data follows)."""
        def guarded_callback(msg) -> None:
            try:
                callback(msg)
            except Exception as error:  # noqa: BLE001 - see the docstring
                self._rejected("callback_error", error)
        return guarded_callback

    def _estop_qos(self):
        """Volatile depth 10, or (``estop_latched``) reliable transient_local depth 1: the newest
        e-stop state reaches a node that starts after it was published."""
        if not self.config.estop_latched:
            return 10
        return messages.latched_qos()

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
            self.latest = Observation(images, self.sequence, now, msg.header)
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
        try:  # a velocity-only JointState is legal, and no use: it must not refresh the watchdog
            positions = messages.joint_positions(msg, self.config.arm_joints)
            fingers = messages.joint_positions(msg, self.config.finger_joints) if self.proprio_dim else None
        except (KeyError, IndexError, ValueError) as error:
            return self._rejected("bad_joint_states", error)
        with self.lock:
            self.joints = positions
            self.fingers = fingers
            self.last_seen["joint_states"] = time.monotonic()
        self._record(self.config.topics.joint_states, msg)

    def _on_ee_pose(self, msg) -> None:
        if msg.header.frame_id != self.config.base_frame:  # the workspace box is in the base frame
            return self._rejected("ee_pose_wrong_frame", ValueError(
                f"end-effector pose in frame {msg.header.frame_id!r}, not base_frame {self.config.base_frame!r}"))
        position, quat = messages.pose_position(msg), messages.pose_quaternion_wxyz(msg)
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat)) and np.linalg.norm(quat) > 0):
            return self._rejected("bad_ee_pose", ValueError(f"non-finite pose {position}, quaternion {quat}"))
        with self.lock:
            self.ee_position, self.ee_quat = position, quat
            self.ee_pose_stamp_ns, self.ee_pose_received = messages.stamp_ns(msg.header), time.monotonic()
            self.last_seen["ee_pose"] = self.ee_pose_received
        self._record(self.config.topics.ee_pose, msg)

    def _on_sim_init_state(self, msg) -> None:
        """A simulated robot's init state (split and id): only recorded, so that its bags say whether they were
        recorded on held-out init states (SFT refuses those)."""
        self._record(messages.SIM_INIT_STATE_TOPIC, msg)

    def _on_instruction(self, msg) -> None:
        text = msg.data.strip()
        with self.lock:
            self.instruction = text
            self.episode += 1
            self.step = 0
            self._drop_actions()
        if self.recorder is not None:
            self.recorder.start_episode(self.episode, text)
            with self.lock:
                latest = dict(self.latest_sensor_messages)
            for topic, sensor_msg in latest.items():  # the first inference may use what arrived before the episode
                self.recorder.write(topic, sensor_msg)
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
            self.pending_since, self.pending_timed_out = time.monotonic(), False
            future = self.pending = self.inference_pool.submit(self._infer, observation, instruction, epoch)
        future.add_done_callback(self._inference_finished)  # outside the lock: it may run right here

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
            output = np.asarray(self.policy.predict_actions(obs), dtype=np.float64)
            # [1, K, 7] and nothing else: a reshape would turn [1, 1, 14] into two actions
            shape_ok = output.ndim == 3 and output.shape[0] == 1 and output.shape[1] >= 1 \
                and output.shape[2] == ACTION_DIM
            chunk, error = (output[0], None) if shape_ok else (None, None)
        except Exception as exc:  # noqa: BLE001 - reported in the status, never kills the node
            output, chunk, error = None, None, exc
        milliseconds = 1000 * (time.perf_counter() - started)
        with self.lock:
            self.pending = None
            timed_out = self.pending_timed_out  # already counted and halted for as inference_timeout
            self.latency.add(milliseconds)
            if error is not None:
                self.safety.count("inference_error")
                log.error("inference failed: %s", error)
                return
            if chunk is None:
                self.safety.count("bad_action_shape")
                log.error("the policy returned actions of shape %s, not [1, K, %d]: dropped", output.shape, ACTION_DIM)
                return
            if milliseconds > 1000 * self.config.inference_timeout_s:
                if not timed_out:
                    self.safety.count("slow_inference")
                log.warning("inference took %.0f ms (> %.0f ms): action dropped", milliseconds,
                            1000 * self.config.inference_timeout_s)
                return
            if epoch == self.epoch and not self.estop:
                self.queue.extend((action, observation, index) for index, action in enumerate(chunk))
            late = time.monotonic() - self.last_command_time >= self.config.period_s
        if late:
            # The tick that would have sent this action has passed: send it now instead of waiting
            # for the next one (commands stay at least one period apart, see _control_tick).
            self._control_tick()

    def _inference_finished(self, future: Future) -> None:
        """Anything ``_infer`` did not catch is logged and counted here; a future's exception is
        otherwise never read, and the node would silently stop acting."""
        error = future.exception()
        if error is None:
            return
        with self.lock:
            if self.pending is future:
                self.pending = None
            self.safety.count("inference_error")
        log.error("inference thread failed: %r", error)

    # ---- control loop ---------------------------------------------------------------------------
    def _control_tick(self) -> None:
        # Choosing a command and publishing it is one step under publish_lock: the timer, the
        # e-stop callback and the inference thread all tick, and without it a motion chosen just
        # before an e-stop could go out after the e-stop's zero command.
        with self.publish_lock:
            if self.closing:
                return
            with self.lock:
                command, halt, executed, joints, epoch = self._choose_command(time.monotonic())
            if command is not None and not halt:
                with self.lock:  # an e-stop or halt that arrived since the choice cancels the command (gripper too)
                    if self.estop or self.epoch != epoch:
                        command = None
            if command is not None and self._publish(command, joints) and not halt:
                sent = (self.node.get_clock().now().nanoseconds, time.monotonic(), command.translation)
                with self.lock:
                    self.moved = True
                    self.translations_sent.append(sent)
                if executed is not None:  # only what went out: a cancelled or unsent command moved nothing
                    self.recorder.write_action(*executed)
        self._publish_status()
        self._maybe_start_inference()

    def _timer_tick(self) -> None:
        """The timer's ``_control_tick``, which must not end the spin: an exception (an IK solver
        failing, say) is counted as ``control_error`` and the arm is sent a zero command."""
        try:
            self._control_tick()
        except Exception as error:  # noqa: BLE001 - see the docstring
            self._rejected("control_error", error)
            try:
                with self.publish_lock:
                    if not self.closing:
                        self._publish(CartesianCommand.zero(), None)
            except Exception as second:  # noqa: BLE001 - nothing more to do than say so
                log.error("the zero command after a control error failed too: %r", second)

    def _choose_command(self, now: float) -> tuple[CartesianCommand | None, bool, tuple | None,
                                                   np.ndarray | None, int]:
        """The command for this tick (None: publish nothing), whether it is a halt, what to record once it is
        sent (the executed action and the header of the image it was decided from; None: nothing), the joints and
        the epoch; call under the lock."""
        reason = self.safety.halt_reason(now, self.estop, dict(self.last_seen))
        if reason is None and self._inference_hung(now):
            reason = "inference_timeout"
        command, executed = None, None
        if reason == "stale" and not self.moved:
            # Start-up: nothing has moved yet, so nothing to stop; wait without publishing. Actions decided
            # (or being decided) before the data went stale must not run when it comes back.
            self._enter_waiting("waiting_for_observations" if self._robot_listening() else "waiting_for_robot")
        elif reason is not None:
            # A halt is published whether or not every controller listens: the arm's may.
            if self.state != reason:
                if reason == "stale":
                    self.safety.count("stale")
                    log.warning("stale observations (%s): halting", self._stale_streams(now))
                self._drop_actions()
            self.state = reason
            command = CartesianCommand.zero()
        elif not self._robot_listening():
            self._enter_waiting("waiting_for_robot")  # motion only once the arm (and gripper) controllers match
        elif not self.instruction:
            self.state = "waiting_for_instruction"
        elif self.queue and now - self.last_command_time >= 0.9 * self.config.period_s:
            self.state = "running"
            action, observation, index = self.queue.popleft()
            self.last_command_time = now  # claimed under the lock: a concurrent tick waits a period
            command = self.safety.filter_action(action, self._expected_position())
            if self.safety.last_rejection in ("nonfinite_action", "bad_action_shape"):
                self._drop_actions()  # the rest of a chunk with garbage in it is not trusted either
            if observation is not None and index == 0:  # the first action of a chunk: time since its image arrived
                self.reaction.add(1000 * (time.monotonic() - observation.received))
            for event in self.safety.last_events:
                log.info("safety: %s at step %d", event, self.step)
            self.step += 1
            if self.recorder is not None and self.safety.last_rejection is None:
                # A rejected action moved nothing: recording it would teach SFT a step that never happened.
                # the chunk's first action is paired with the image it was decided from; the later ones with the
                # newest image before them, the observation at their step (the same image for all K would give SFT
                # one observation with K different targets)
                decided_from = observation.header if observation is not None and index == 0 else None
                executed = (self._executed_action(command), decided_from)
        else:
            self.state = "running" if self.step else "starting"
        joints = None if self.joints is None else self.joints.copy()
        return command, reason is not None, executed, joints, self.epoch

    def _expected_position(self) -> np.ndarray | None:
        """The latest pose plus the translations sent after it was measured (by its header stamp; one that is
        zero, a driver that does not stamp, by its arrival). A pose measured while a command was executing shows
        part of it, so the box can still be overshot by up to one step (docs/ros.md); a pose that arrives often
        but lags behind the arm, or arrives rarely, no longer lets every step be checked against the same place."""
        if self.ee_position is None:
            return None
        if self.ee_pose_stamp_ns:
            after = [t for ros_ns, _, t in self.translations_sent if ros_ns > self.ee_pose_stamp_ns]
        else:
            after = [t for _, sent, t in self.translations_sent if sent > self.ee_pose_received]
        return self.ee_position + np.sum(after, axis=0) if after else self.ee_position

    def _enter_waiting(self, state: str) -> None:
        """A wait in which the arm must not move: queued actions and an inference in flight are dropped on entry
        (their image is from before the wait, and the scene may have changed by the time it ends)."""
        if self.state != state:
            self._drop_actions()
        self.state = state

    def _inference_hung(self, now: float) -> bool:
        """An inference running longer than ``inference_timeout_s`` halts the arm (counted once);
        its result, if it ever comes, is dropped (the epoch moves on)."""
        if self.pending is None or now - self.pending_since <= self.config.inference_timeout_s:
            return False
        if not self.pending_timed_out:
            self.pending_timed_out = True
            self.safety.count("inference_timeout")
            log.error("inference running for %.1f s (> inference_timeout_s): halting", now - self.pending_since)
        return True

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

    def _publish(self, command: CartesianCommand, joints: np.ndarray | None) -> bool:
        """Send one command; call under publish_lock. In joint mode a command without motion sends
        no trajectory: the controller ends the last one-period target (at most
        ``max_joint_step_rad`` away) and holds it, whereas commanding the last measured position
        would pull a moving arm back. (An empty JointTrajectory is no stop either: current
        ros2_controllers' joint trajectory controller rejects it as "Empty trajectory received".)"""
        stamp = self.node.get_clock().now().to_msg()
        frame = self.config.base_frame
        sent = False
        if self.gripper_pub is not None and not command.holds_gripper:  # before the arm command: a lockstep arm reads it when that arrives
            gripper = self.Float64(data=messages.gripper_closure(command.gripper))
            self.gripper_pub.publish(gripper)
            self._record(self.config.topics.gripper_command, gripper)
            sent = True
        if self.config.command_mode == "twist":
            linear, angular = command.velocities(self.config.period_s)
            msg = messages.twist_message(linear, angular, stamp, frame)
            self.twist_pub.publish(msg)
            self._record(self.config.topics.twist_command, msg)
            sent = True
        elif command.moves and joints is not None:
            target = self.joint_solver.solve_delta(joints, command.translation, command.rotation)
            limited = self.safety.limit_joint_step(joints, target)
            if limited is not None:  # a non-finite IK solution sends nothing
                msg = messages.joint_trajectory_message(self.config.arm_joints, limited, self.config.period_s,
                                                        stamp, frame)
                self.trajectory_pub.publish(msg)
                self._record(self.config.topics.joint_command, msg)
                sent = True
        if sent:
            with self.lock:
                self.commands_published += 1
                self.last_command_time = time.monotonic()
        return sent

    def status(self) -> dict:
        with self.lock:
            return {"state": self.state, "episode": self.episode, "step": self.step, "instruction": self.instruction,
                    "queued_actions": len(self.queue), "commands_published": self.commands_published,
                    "inference_latency_ms": self.latency.summary(),
                    "observation_to_command_ms": self.reaction.summary(), "safety_events": dict(self.safety.counts),
                    "recording_error": None if self.recorder is None or self.recorder.error is None
                    else repr(self.recorder.error)}

    def _publish_status(self) -> None:
        msg = self.String(data=json.dumps(self.status()))
        self.status_pub.publish(msg)
        self._record(self.config.topics.status, msg)

    def destroy(self) -> None:
        """Stop the loop and leave the arm still: queued and in-flight actions are dropped, the
        last command is a zero twist (a servo would otherwise run the last twist until its own
        timeout), and the recording is closed (its metadata is written only then)."""
        self.timer.cancel()
        with self.lock:
            self.instruction = ""  # no new inference (the pool is closing) ...
            self._drop_actions()  # ... and a late result queues nothing
        with self.publish_lock:  # the final zero is the last command: a tick after it returns at once
            self.closing = True
            if self.config.command_mode == "twist":
                self._publish(CartesianCommand.zero(), None)
        if self.config.command_mode == "twist":
            from rclpy.duration import Duration

            self.twist_pub.wait_for_all_acked(Duration(seconds=1))  # delivered before the node goes
        try:
            if self.recorder is not None:
                self.recorder.close()  # raises what its writer hit, after the rest of the teardown
        finally:
            # Not before the zero and the bag: a hung inference (the case inference_timeout_s exists for)
            # would otherwise hold a SIGTERM'd node with the arm moving and the bag unwritten.
            self.inference_pool.shutdown()
            self.node.destroy_node()
