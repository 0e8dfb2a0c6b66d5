"""Which commands the deployment node sends around an e-stop and at shutdown, seen by a real
subscriber over DDS (rclpy, Fast DDS on loopback). No sim bridge: the node's state is set up
directly, so each case reaches the exact moment it is about (the end-to-end counterparts with the
bridge are in test_ros_deploy.py)."""

import threading
import time

import numpy as np
import pytest

from real_robot.config import RobotConfig, TopicsConfig
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
        node.queue.append((np.asarray(action, dtype=np.float64), None))


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
