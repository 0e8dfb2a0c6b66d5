"""Faults the deployment node must survive without moving the arm, end to end over real ROS 2
(the sim bridge and the node on one executor; the CLI in its own process for SIGTERM)."""

import threading

import numpy as np
import pytest

from real_robot.config import RobotConfig
from tests.real_robot.conftest import wait_for
from tests.real_robot.test_ros_deploy import ROBOT, SLOW_SIDEWAYS, ScriptedPolicy, start_pair, stop_pair

pytestmark = pytest.mark.ros
ARM_JOINTS = ("j1", "j2", "j3", "j4", "j5", "j6")


def test_unusable_joint_states_and_poses_are_counted_and_the_node_keeps_running(ros_context):
    """A velocity-only JointState is legal; a pose in another frame or with NaN cannot be checked
    against the box. Each is dropped and counted; an exception would have ended the executor's
    spin (and with it the control loop) without a zero command."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState

    robot = RobotConfig(name="tabletop_sim", base_frame="world", arm_joints=ARM_JOINTS, safety=ROBOT.safety)
    _, bridge, node, spinner = start_pair(ros_context, ScriptedPolicy(SLOW_SIDEWAYS), robot=robot)
    joints_pub = node.node.create_publisher(JointState, robot.topics.joint_states, 10)
    pose_pub = node.node.create_publisher(PoseStamped, robot.topics.ee_pose, 10)
    try:
        assert wait_for(lambda: bridge.steps >= 2, timeout=20)
        assert wait_for(lambda: joints_pub.get_subscription_count() > 0 and pose_pub.get_subscription_count() > 0,
                        timeout=5)
        joints_pub.publish(JointState(name=list(ARM_JOINTS), velocity=[0.0] * len(ARM_JOINTS)))
        in_camera_frame = PoseStamped()
        in_camera_frame.header.frame_id = "camera"
        not_a_number = PoseStamped()
        not_a_number.header.frame_id = robot.base_frame
        not_a_number.pose.position.x = float("nan")
        pose_pub.publish(in_camera_frame)
        pose_pub.publish(not_a_number)
        expected = ("bad_joint_states", "ee_pose_wrong_frame", "bad_ee_pose")
        assert wait_for(lambda: all(node.status()["safety_events"].get(e) for e in expected), timeout=5), \
            node.status()
        steps = bridge.steps
        assert wait_for(lambda: bridge.steps >= steps + 3, timeout=10)  # still driving the arm
        status = node.status()
    finally:
        stop_pair(bridge, node, spinner)
    assert "callback_error" not in status["safety_events"]


class ShapedPolicy(ScriptedPolicy):
    def __init__(self, shape):
        super().__init__([0.0] * 7)
        self.shape = shape

    def predict_actions(self, obs):
        self.calls += 1
        return np.full(self.shape, 0.4, dtype=np.float32)


@pytest.mark.parametrize("shape", [(1, 1, 6), (1, 1, 14)])
def test_policy_output_of_the_wrong_shape_is_counted_and_never_executed(ros_context, shape):
    """[1, 1, 6] used to fail inside a future nobody read (nothing counted), [1, 1, 14] to become
    two 7-D actions."""
    _, bridge, node, spinner = start_pair(ros_context, ShapedPolicy(shape))
    try:
        assert wait_for(lambda: node.status()["safety_events"].get("bad_action_shape", 0) >= 2, timeout=20), \
            node.status()
        status = node.status()
    finally:
        stop_pair(bridge, node, spinner)
    assert not any(action[:6].any() for _, action in bridge.command_log)
    assert status["queued_actions"] == 0 and status["step"] == 0


class HangingPolicy(ScriptedPolicy):
    """Its first inference does not return until ``release`` is set."""

    def __init__(self, action):
        super().__init__(action)
        self.release = threading.Event()

    def predict_actions(self, obs):
        if self.calls == 0:
            self.release.wait(timeout=30)
        return super().predict_actions(obs)


def test_a_hung_inference_halts_the_arm_and_its_late_result_is_dropped(ros_context):
    robot = RobotConfig(name="tabletop_sim", base_frame="world", inference_timeout_s=0.3, safety=ROBOT.safety)
    policy = HangingPolicy(SLOW_SIDEWAYS)
    _, bridge, node, spinner = start_pair(ros_context, policy, robot=robot)
    try:
        assert wait_for(lambda: node.status()["state"] == "inference_timeout", timeout=10), node.status()
        assert wait_for(lambda: bridge.command_log, timeout=5)  # the halt's zero command reached the arm
        halted = node.status()
        policy.release.set()
        assert wait_for(lambda: any(action[:6].any() for _, action in bridge.command_log), timeout=10)
        status = node.status()
    finally:
        policy.release.set()
        stop_pair(bridge, node, spinner)
    assert halted["safety_events"]["inference_timeout"] == 1
    first_motion = next(i for i, (_, action) in enumerate(bridge.command_log) if action[:6].any())
    assert first_motion > 0 and policy.calls >= 2  # zeros first; the motion came from a fresh inference
    assert status["safety_events"]["inference_timeout"] == 1


def test_sigterm_stops_deploy_like_ctrl_c_and_closes_the_bag(reach_checkpoint, tmp_path):
    """rosbags writes metadata.yaml only on close: a SIGTERM that skipped the teardown left a bag
    that bag-to-demos cannot read."""
    import signal
    import subprocess
    import sys

    bags = tmp_path / "bags"
    deploy = subprocess.Popen([sys.executable, "-m", "vla_rl.cli.main", "deploy", "--checkpoint", str(reach_checkpoint),
                               "--robot", "configs/robot/tabletop_sim.yaml", "--instruction", "reach",
                               "--record", str(bags)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: (bags / "episode_0001").is_dir() or deploy.poll() is not None, timeout=120)
        deploy.send_signal(signal.SIGTERM)
        output = deploy.communicate(timeout=60)[0]
    finally:
        if deploy.poll() is None:
            deploy.kill()
    assert deploy.returncode == 0, output[-3000:]
    assert (bags / "episode_0001" / "metadata.yaml").is_file(), output[-3000:]
    assert '"state"' in output  # the final status was printed: the same path as Ctrl-C


def test_a_latched_estop_holds_the_arm_until_it_says_false(ros_context):
    """With ``estop_latched`` the node starts halted and fails closed: no e-stop publisher, no
    motion. A transient_local e-stop publisher's false releases it."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool

    robot = RobotConfig(name="tabletop_sim", base_frame="world", estop_latched=True, safety=ROBOT.safety)
    policy = ScriptedPolicy(SLOW_SIDEWAYS)
    _, bridge, node, spinner = start_pair(ros_context, policy, robot=robot)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    try:
        assert wait_for(lambda: len(bridge.command_log) >= 3, timeout=20)  # zero commands while halted
        halted, calls_while_halted = node.status(), policy.calls
        estop_pub = node.node.create_publisher(Bool, robot.topics.estop, latched)
        estop_pub.publish(Bool(data=False))  # delivered once matched: transient_local keeps it
        assert wait_for(lambda: any(action[:6].any() for _, action in bridge.command_log), timeout=10)
    finally:
        stop_pair(bridge, node, spinner)
    assert halted["state"] == "estop" and calls_while_halted == 0
    assert not any(action[:6].any() for _, action in bridge.command_log[:3])


HUNG_NODE_SCRIPT = """
import threading
from real_robot.config import RobotConfig
from real_robot.messages import require_ros
from real_robot.node import PolicyNode
from tests.real_robot.test_ros_deploy import SLOW_SIDEWAYS, ScriptedPolicy

rclpy = require_ros()
context = rclpy.Context()
rclpy.init(context=context)
node = PolicyNode(ScriptedPolicy(SLOW_SIDEWAYS), RobotConfig(base_frame="world"), image_size=32,
                  cameras=("agentview",), instruction="move sideways", context=context)
started = threading.Event()
node.inference_pool.submit(lambda: (started.set(), threading.Event().wait()))  # never returns
assert started.wait(10)
node.destroy()
rclpy.shutdown(context=context)
print("destroyed", flush=True)
"""


def test_a_node_destroyed_during_a_hung_inference_lets_the_process_exit(tmp_path):
    """After SIGTERM's teardown the process must end: a thread pool's worker is joined at interpreter
    exit, so an inference that never returns kept a stopped deploy alive forever."""
    import os
    import subprocess
    import sys

    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    finished = subprocess.run([sys.executable, "-c", HUNG_NODE_SCRIPT], capture_output=True, text=True, timeout=120,
                              env=environment)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert "destroyed" in finished.stdout


def test_a_failed_recording_is_reported_keeps_what_it_wrote_and_the_node_still_tears_down(ros_context, tmp_path):
    from std_msgs.msg import String

    from real_robot.config import RobotConfig, TopicsConfig
    from real_robot.recording import BagRecorder, read_bag
    from tests.real_robot.test_node_commands import make_node

    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    recorder = BagRecorder(tmp_path / "bags", robot)
    node = make_node(ros_context, robot)
    node.recorder = recorder
    bag = recorder.start_episode(7, "move sideways")
    recorder.write("/before", String(data="kept"))
    recorder._put("/broken", "no_such_pkg/msg/Nothing", b"")  # the writer cannot add this connection
    assert wait_for(lambda: recorder.error is not None, timeout=10)
    assert "Nothing" in node.status()["recording_error"]
    with pytest.raises(RuntimeError, match="recording into"):
        node.destroy()
    assert node.inference_pool._closed  # the teardown went on after the error
    recorder.close()  # raised once, in destroy()
    topics = [topic for topic, _, _ in read_bag(bag)]  # the failed bag was closed: metadata.yaml is there
    assert "/before" in topics and "/broken" not in topics
