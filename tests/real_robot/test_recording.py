"""Pairing recorded actions with the images they were decided from, on bags written by the real BagRecorder
(rclpy's serialiser, rosbags' MCAP writer). The node-driven counterpart is in test_ros_deploy.py."""

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
    recorder.write(robot.topics.image, first)  # the policy decides a chunk of two from this image ...
    recorder.write(robot.topics.ee_pose, pose_message(0.2))
    recorder.write(robot.topics.image, image_message(20, 2))  # ... while newer frames arrive
    recorder.write_action(np.full(7, 0.5), first.header if with_headers else None)
    recorder.write(robot.topics.image, image_message(30, 3))
    recorder.write_action(np.full(7, -0.5), first.header if with_headers else None)
    recorder.close()
    return bag


def test_actions_are_paired_with_the_image_they_were_decided_from(tmp_path):
    from real_robot.recording import bag_to_episode

    episode = bag_to_episode(record(tmp_path, with_headers=True), image_size=8)
    np.testing.assert_array_equal(episode.actions[:, 0], [0.5, -0.5])
    assert (episode.obs["agentview_rgb"] == 10).all()  # both actions of the chunk: the first image
    np.testing.assert_allclose(episode.obs["ee_pos"][:, 2], [0.1, 0.1])  # the pose the policy read with it


def test_bags_without_the_headers_pair_each_action_with_the_newest_image(tmp_path):
    from real_robot.recording import bag_to_episode

    episode = bag_to_episode(record(tmp_path, with_headers=False), image_size=8)
    assert [int(frames.mean()) for frames in episode.obs["agentview_rgb"]] == [20, 30]
