"""Which commands the deployment node sends around an e-stop and at shutdown, seen by a real
subscriber over DDS (rclpy, Fast DDS on loopback). No sim bridge: the node's state is set up
directly, so each case reaches the exact moment it is about (the end-to-end counterparts with the
bridge are in test_ros_deploy.py)."""

import contextlib
import threading
import time

import numpy as np
import pytest

from real_robot.config import RobotConfig, SafetyConfig, TopicsConfig
from tests.real_robot.conftest import Spinner, wait_for
from tests.real_robot.test_ros_deploy import SLOW_SIDEWAYS, ScriptedPolicy

pytestmark = pytest.mark.ros


class ArmListener:
    """The arm side: a real subscription to the twist topic, keeping the linear velocities."""

    def __init__(self, context, topics: TopicsConfig):
        from geometry_msgs.msg import TwistStamped

        from real_robot.messages import twist_vectors
        from real_robot.messages import require_ros

        self.node = require_ros().create_node("arm_listener", context=context)
        self.linear: list[np.ndarray] = []
        self.node.create_subscription(TwistStamped, topics.twist_command,
                                      lambda msg: self.linear.append(twist_vectors(msg)[0]), 10)


def make_node(context, robot):
    from real_robot.node import PolicyNode

    return PolicyNode(ScriptedPolicy(SLOW_SIDEWAYS), robot, image_size=32, cameras=("agentview",),
                      instruction="move sideways", context=context)


def ready_to_move(node, action):
    """Every stream just arrived, the hand is inside the box and one action waits in the queue."""
    now = time.monotonic()
    with node.lock:
        node.last_seen = {stream: now for stream in node.last_seen}
        node.ee_position, node.ee_quat = np.array([0.0, 0.0, 0.2]), np.array([0.0, 0.0, 1.0, 0.0])
        node.queue.append((np.asarray(action, dtype=np.float64), None, 0))


class FirstPublishHeld:
    """Wraps the node's twist publisher: the first publish waits for ``release`` (a slow publish,
    made deterministic); every call still goes out through the real publisher."""

    def __init__(self, publisher):
        self.publisher = publisher
        self.publishing, self.release = threading.Event(), threading.Event()

    def publish(self, msg):
        if not self.publishing.is_set():
            self.publishing.set()
            assert self.release.wait(timeout=10)
        self.publisher.publish(msg)

    def __getattr__(self, name):
        return getattr(self.publisher, name)


def test_a_motion_chosen_before_an_estop_never_goes_out_after_its_zero_command(ros_context):
    from std_msgs.msg import Bool

    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    node, arm = make_node(ros_context, robot), ArmListener(ros_context, robot.topics)
    spinner = Spinner(ros_context)
    spinner.add(arm.node)  # the policy node is not spun: its ticks below are the only ones
    spinner.start()
    try:
        assert wait_for(lambda: node.twist_pub.get_subscription_count() > 0, timeout=10)
        ready_to_move(node, SLOW_SIDEWAYS)
        held = node.twist_pub = FirstPublishHeld(node.twist_pub)
        motion = threading.Thread(target=node._control_tick)
        motion.start()
        assert held.publishing.wait(timeout=5)  # the motion is being published ...
        estop = threading.Thread(target=node._on_estop, args=(Bool(data=True),))
        estop.start()  # ... when the e-stop arrives
        estop.join(timeout=1.0)  # unserialised, its zero command would be out by now, before the motion
        held.release.set()
        motion.join(timeout=5)
        estop.join(timeout=5)
        assert wait_for(lambda: len(arm.linear) >= 2, timeout=5)
        state = node.status()["state"]
    finally:
        held.release.set()
        spinner.stop()
        node.node.destroy_node()
        arm.node.destroy_node()
    assert arm.linear[0][1] > 0 and not arm.linear[-1].any(), arm.linear  # motion, then the zero last
    assert state == "estop"


def test_estop_is_sent_to_the_arm_even_when_the_gripper_driver_is_not_listening(ros_context):
    from std_msgs.msg import Bool

    robot = RobotConfig(base_frame="world")  # a gripper topic nobody subscribes to
    node, arm = make_node(ros_context, robot), ArmListener(ros_context, robot.topics)
    estop_pub = arm.node.create_publisher(Bool, robot.topics.estop, 10)
    spinner = Spinner(ros_context)
    spinner.add(arm.node)
    spinner.add(node.node)
    spinner.start()
    try:
        assert wait_for(lambda: estop_pub.get_subscription_count() > 0, timeout=10)
        assert wait_for(lambda: node.twist_pub.get_subscription_count() > 0, timeout=10)
        estop_pub.publish(Bool(data=True))
        assert wait_for(lambda: arm.linear, timeout=5), node.status()
        status = node.status()
    finally:
        spinner.stop()
        node.node.destroy_node()
        arm.node.destroy_node()
    assert not arm.linear[0].any() and status["state"] == "estop"
    assert status["commands_published"] >= 1


def test_destroy_sends_a_final_zero_twist(ros_context):
    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    node, arm = make_node(ros_context, robot), ArmListener(ros_context, robot.topics)
    spinner = Spinner(ros_context)
    spinner.add(arm.node)
    spinner.start()
    try:
        assert wait_for(lambda: node.twist_pub.get_subscription_count() > 0, timeout=10)
        node.destroy()
        assert wait_for(lambda: arm.linear, timeout=5)
    finally:
        spinner.stop()
        arm.node.destroy_node()
    assert len(arm.linear) == 1 and not arm.linear[0].any()


class ActionsRecorded:
    """Stands in for the BagRecorder (the real one is exercised end to end in test_ros_deploy.py):
    keeps the executed actions the node records."""

    def __init__(self):
        self.actions: list[np.ndarray] = []
        self.error = None

    def write_action(self, action, image_header=None):
        self.actions.append(np.asarray(action))

    def write(self, topic, msg):
        pass

    def start_episode(self, episode, instruction):
        pass

    def close(self):
        pass


def estop_right_after_the_choice(node):
    """The e-stop's state change lands between the tick's choice and its publish (its own tick
    then waits on publish_lock)."""
    choose = node._choose_command

    def choose_then_estop(now):
        chosen = choose(now)
        node.estop = True
        return chosen

    node._choose_command = choose_then_estop


@pytest.mark.parametrize("action", [SLOW_SIDEWAYS, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]], ids=["motion", "gripper_only"])
def test_a_command_chosen_before_an_estop_is_cancelled_and_not_recorded(ros_context, action):
    """Not only motions: a command that only closes the gripper must not go out after the e-stop
    either, and a command that never went out is not recorded as executed."""
    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    node, arm = make_node(ros_context, robot), ArmListener(ros_context, robot.topics)
    node.recorder, recorded = ActionsRecorded(), None
    try:
        assert wait_for(lambda: node.twist_pub.get_subscription_count() > 0, timeout=10)
        ready_to_move(node, action)
        node._control_tick()  # the control case: sent and recorded
        assert node.status()["commands_published"] == 1 and len(node.recorder.actions) == 1
        ready_to_move(node, action)
        node.last_command_time = float("-inf")  # due now
        estop_right_after_the_choice(node)
        node._control_tick()
        status, recorded = node.status(), list(node.recorder.actions)
    finally:
        node.node.destroy_node()
        arm.node.destroy_node()
    assert status["commands_published"] == 1, status  # nothing after the choice went out
    assert len(recorded) == 1


def test_destroy_does_not_wait_for_a_hung_inference(ros_context):
    """SIGTERM's path (destroy) sends the final zero and closes the bag even when an inference
    never returns: waiting for it first would hold the node with the arm moving."""
    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    node, arm = make_node(ros_context, robot), ArmListener(ros_context, robot.topics)
    node.recorder = recorder = ActionsRecorded()
    closed = threading.Event()
    recorder.close = closed.set
    spinner = Spinner(ros_context)
    spinner.add(arm.node)
    spinner.start()
    hung = threading.Event()
    try:
        assert wait_for(lambda: node.twist_pub.get_subscription_count() > 0, timeout=10)
        node.inference_pool.submit(hung.wait, 60)  # an inference that does not return
        stopping = threading.Thread(target=node.destroy)
        stopping.start()
        assert closed.wait(timeout=20), "destroy() waited for the hung inference before closing the bag"
        assert wait_for(lambda: arm.linear, timeout=5)
        stopping.join(timeout=20)
        assert not stopping.is_alive()
    finally:
        hung.set()
        spinner.stop()
        arm.node.destroy_node()
    assert not arm.linear[-1].any()


def test_a_latched_estop_released_before_the_streams_arrive_is_start_up_not_stale(ros_context):
    """With estop_latched the node starts by sending halts; those are not motion, so streams that
    have not arrived yet afterwards are still start-up (waiting), not a stale-data halt."""
    from std_msgs.msg import Bool

    robot = RobotConfig(base_frame="world", estop_latched=True, topics=TopicsConfig(gripper_command=""))
    node = make_node(ros_context, robot)
    try:
        node._control_tick()  # halted by the latch: a zero goes out
        assert node.status()["commands_published"] == 1
        node._on_estop(Bool(data=False))
        node._control_tick()
        status = node.status()
    finally:
        node.node.destroy_node()
    assert status["state"] in ("waiting_for_robot", "waiting_for_observations"), status
    assert "stale" not in status["safety_events"], status


def test_an_exception_in_the_control_tick_is_counted_and_halts_the_arm(ros_context):
    """The timer's tick must not end the spin (and with it the node) on an exception: it is counted
    as control_error and a zero command goes out."""
    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    node = make_node(ros_context, robot)

    def broken(now):
        raise RuntimeError("IK solver failed")

    node._choose_command = broken
    try:
        node._timer_tick()
        status = node.status()
    finally:
        node.node.destroy_node()
    assert status["safety_events"].get("control_error") == 1, status
    assert status["commands_published"] == 1  # the zero


@contextlib.contextmanager
def node_and_arm(ros_context, robot):
    """A policy node that is not spun (the test's ticks are its only ones) and a spun arm listener that its
    twist publisher has matched; both destroyed afterwards."""
    node, arm = make_node(ros_context, robot), ArmListener(ros_context, robot.topics)
    spinner = Spinner(ros_context)
    spinner.add(arm.node)
    spinner.start()
    try:
        assert wait_for(lambda: node.twist_pub.get_subscription_count() > 0, timeout=10)
        yield node, arm
    finally:
        spinner.stop()
        node.node.destroy_node()
        arm.node.destroy_node()


def tick_once(node):
    """One control tick with every stream fresh, as if a period had passed since the last command."""
    now = time.monotonic()
    with node.lock:
        node.last_seen = {stream: now for stream in node.last_seen}
        node.last_command_time = float("-inf")
    node._control_tick()


def test_a_chunk_queued_before_the_robot_stopped_listening_never_runs(ros_context):
    """The arm controller went away (MoveIt Servo restarting, say) with actions queued: when it comes back,
    those actions, decided from an image of before the wait, must not run."""
    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    node = make_node(ros_context, robot)  # nobody subscribes to its twist topic: the robot is not listening
    try:
        ready_to_move(node, SLOW_SIDEWAYS)
        epoch = node.epoch
        tick_once(node)
        assert node.status()["state"] == "waiting_for_robot"
        assert not node.queue and node.epoch > epoch  # an inference in flight is dropped too
    finally:
        node.node.destroy_node()


def test_a_chunk_queued_when_the_data_went_stale_at_start_up_never_runs(ros_context):
    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    node = make_node(ros_context, robot)
    try:
        ready_to_move(node, SLOW_SIDEWAYS)
        with node.lock:
            node.last_seen["image"] = None  # the camera dropped out before the arm first moved
        node._control_tick()
        assert node.status()["state"] in ("waiting_for_observations", "waiting_for_robot")
        assert not node.queue
    finally:
        node.node.destroy_node()


@pytest.mark.parametrize("pose_updates", ["never", "lagging"])
def test_the_workspace_box_counts_the_commands_a_lagging_pose_does_not_show(ros_context, pose_updates):
    """The hand is 2 cm above the box's floor and the pose does not show the arm's motion, either because no
    new pose arrives (a slow publisher) or because each new one was measured before the commands went out (a
    pose that lags behind the arm): four downward steps of 1 cm must stop at the floor, not each be clamped
    against the same old position."""
    from geometry_msgs.msg import PoseStamped

    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""),
                        safety=SafetyConfig(workspace_min=(-0.3, -0.45, 0.18)))
    down = [0.0, 0.0, -0.2, 0.0, 0.0, 0.0, 0.0]  # 0.2 x translation_scale_m (5 cm) = 1 cm per period
    with node_and_arm(ros_context, robot) as (node, arm):
        ready_to_move(node, down)
        node.queue.extend((np.asarray(down), None, 0) for _ in range(3))
        old_pose = PoseStamped()
        old_pose.header.frame_id, old_pose.header.stamp = "world", node.node.get_clock().now().to_msg()
        old_pose.pose.position.z, old_pose.pose.orientation.w = 0.2, 1.0
        for _ in range(4):
            if pose_updates == "lagging":
                node._on_ee_pose(old_pose)  # arrives now, measured before any command
            tick_once(node)
        assert wait_for(lambda: len(arm.linear) == 4, timeout=5)
    travelled = sum(linear[2] for linear in arm.linear) * robot.period_s
    assert travelled == pytest.approx(-0.02, abs=1e-9), [linear[2] * robot.period_s for linear in arm.linear]


def test_a_nonfinite_action_drops_the_rest_of_its_chunk(ros_context):
    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    nan = [float("nan")] * 7
    with node_and_arm(ros_context, robot) as (node, arm):
        ready_to_move(node, SLOW_SIDEWAYS)
        node.queue.extend([(np.asarray(nan), None, 0), (np.asarray(SLOW_SIDEWAYS), None, 0)])
        for _ in range(3):
            tick_once(node)
        assert wait_for(lambda: len(arm.linear) == 2, timeout=5)
        time.sleep(0.2)  # a third command, if one went out, has arrived by now
    assert len(arm.linear) == 2 and arm.linear[0][1] > 0 and not arm.linear[1].any(), arm.linear
    assert node.safety.counts["nonfinite_action"] == 1
