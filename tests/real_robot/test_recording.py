"""Pairing recorded actions with the images they were decided from, on bags written by the real BagRecorder
(rclpy's serialiser, rosbags' MCAP writer). The node-driven counterpart is in test_ros_deploy.py."""

import json

import numpy as np
import pytest

from real_robot.config import RobotConfig

pytestmark = pytest.mark.ros


def image_message(value: int, seconds: int):
    from builtin_interfaces.msg import Time

    from real_robot.messages import rgb_to_image

    return rgb_to_image(np.full((8, 8, 3), value, np.uint8), Time(sec=seconds, nanosec=0), "camera")


def pose_message(z: float):
    from geometry_msgs.msg import PoseStamped

    pose = PoseStamped()
    pose.header.frame_id, pose.pose.position.z, pose.pose.orientation.w = "world", z, 1.0
    return pose


def record(tmp_path, with_headers: bool):
    from real_robot.recording import BagRecorder

    robot = RobotConfig(base_frame="world")
    recorder = BagRecorder(tmp_path / "bags", robot)
    bag = recorder.start_episode(1, "reach")
    first = image_message(10, 1)
    recorder.write(robot.topics.ee_pose, pose_message(0.1))
    recorder.write(robot.topics.image, first)  # the policy decides a chunk of two actions from this image ...
    recorder.write(robot.topics.ee_pose, pose_message(0.2))
    recorder.write(robot.topics.image, image_message(20, 2))  # ... while newer frames arrive
    recorder.write_action(np.full(7, 0.5), first.header if with_headers else None)
    recorder.write(robot.topics.image, image_message(30, 3))
    recorder.write_action(np.full(7, -0.5))  # the chunk's second action: the node names no image for it
    recorder.close()
    return bag


def test_actions_are_paired_with_the_image_they_were_decided_from(tmp_path):
    from real_robot.recording import bag_to_episode

    episode = bag_to_episode(record(tmp_path, with_headers=True), image_size=8)
    np.testing.assert_array_equal(episode.actions[:, 0], [0.5, -0.5])
    # the chunk's first action with the image it was decided from (and the pose read with it), not the newer one;
    # its second with the observation at its own step
    assert [int(frames.mean()) for frames in episode.obs["agentview_rgb"]] == [10, 30]
    np.testing.assert_allclose(episode.obs["ee_pos"][:, 2], [0.1, 0.2])


def test_bags_without_the_headers_pair_each_action_with_the_newest_image(tmp_path):
    from real_robot.recording import bag_to_episode

    episode = bag_to_episode(record(tmp_path, with_headers=False), image_size=8)
    assert [int(frames.mean()) for frames in episode.obs["agentview_rgb"]] == [20, 30]


def test_a_zero_stamp_is_no_match_and_the_conversion_says_so(tmp_path):
    """A camera driver that leaves its stamps at zero: every image has the same stamp, so the named one cannot
    be told apart; the action falls back to the newest image, with a warning."""
    from real_robot.recording import BagRecorder, bag_to_episode

    robot = RobotConfig(base_frame="world")
    recorder = BagRecorder(tmp_path / "bags", robot)
    bag = recorder.start_episode(1, "reach")
    unstamped = image_message(10, 0)
    recorder.write(robot.topics.image, unstamped)
    recorder.write(robot.topics.image, image_message(20, 0))
    recorder.write_action(np.zeros(7), unstamped.header)
    recorder.close()
    with pytest.warns(UserWarning, match="1 executed actions"):
        episode = bag_to_episode(bag, image_size=8)
    assert int(episode.obs["agentview_rgb"].mean()) == 20


def test_closing_returns_even_when_the_last_bag_fails_to_close(tmp_path, monkeypatch):
    """A full disk when the bag's footer is written at shutdown: close() must raise, not wait forever for the
    writer thread (the node's teardown waits on it)."""
    import threading

    from rosbags.rosbag2 import Writer

    from real_robot.recording import BagRecorder

    def disk_full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Writer, "close", disk_full)
    recorder = BagRecorder(tmp_path / "bags", RobotConfig(base_frame="world"))
    recorder.start_episode(1, "reach")
    outcome = []

    def close():
        try:
            recorder.close()
        except RuntimeError as error:
            outcome.append(error)

    closing = threading.Thread(target=close, daemon=True)
    closing.start()
    closing.join(timeout=10)
    assert not closing.is_alive() and "No space left" in str(outcome[0])


def test_a_new_episodes_bag_starts_with_the_sensor_messages_its_first_inference_may_use(ros_context, tmp_path):
    """The first inference of an episode may run on an image that arrived before the instruction; the new bag
    gets the newest image, joint state and pose, so its first action has its image in the same bag."""
    from std_msgs.msg import String

    from real_robot.config import TopicsConfig
    from real_robot.recording import BagRecorder, bag_to_episode, read_bag
    from tests.real_robot.test_node_commands import make_node

    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    node = make_node(ros_context, robot)
    try:
        node.recorder = recorder = BagRecorder(tmp_path / "bags", robot)
        before = image_message(40, 7)
        node._on_image(before)  # between episodes
        node._on_ee_pose(pose_message(0.3))
        node._on_instruction(String(data="reach the block"))
        recorder.write_action(np.zeros(7), before.header)
        recorder.close()
    finally:
        node.node.destroy_node()
    topics = [topic for topic, _, _ in read_bag(recorder.bags[-1])]
    assert robot.topics.image in topics and robot.topics.ee_pose in topics
    episode = bag_to_episode(recorder.bags[-1], image_size=8)
    assert int(episode.obs["agentview_rgb"].mean()) == 40


def test_a_bag_recorded_on_a_held_out_sim_init_state_stays_held_out(ros_context, tmp_path):
    """A sim bridge names its init state on /sim/init_state; the bag records it, the converted episode keeps
    its split and id, and SFT refuses an episode of an evaluation init state (held-out success stays honest)."""
    from std_msgs.msg import String

    from real_robot.config import TopicsConfig
    from real_robot.messages import SIM_INIT_STATE_TOPIC
    from real_robot.recording import BagRecorder, bag_to_episode
    from tests.real_robot.test_node_commands import make_node
    from vla_rl.core.demo_file import write_demo_file
    from vla_rl.policy.sft import load_demos

    robot = RobotConfig(base_frame="world", topics=TopicsConfig(gripper_command=""))
    node = make_node(ros_context, robot)
    try:
        node.recorder = recorder = BagRecorder(tmp_path / "bags", robot)
        node._on_sim_init_state(String(data=json.dumps({"task": "Reach", "split": "eval", "init_state_id": 3})))
        for episode in range(2):  # the second bag gets it too, though it was published once
            image = image_message(40, 7 + episode)
            node._on_image(image)
            node._on_instruction(String(data="reach the block"))
            recorder.write_action(np.zeros(7), image.header)
        recorder.close()
    finally:
        node.node.destroy_node()
    episodes = [bag_to_episode(bag, image_size=8, task="Reach") for bag in recorder.bags]
    assert [(e.split, e.init_state_id) for e in episodes] == [("eval", 3), ("eval", 3)]
    write_demo_file(tmp_path / "demos" / "Reach_demo.hdf5", episodes, {"env_name": "Reach"})
    with pytest.raises(ValueError, match="evaluation init state 3"):
        load_demos(tmp_path / "demos", 1)
    assert SIM_INIT_STATE_TOPIC == "/sim/init_state"
