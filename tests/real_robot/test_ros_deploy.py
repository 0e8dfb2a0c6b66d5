"""End to end over real ROS 2 (rclpy, Fast DDS on loopback): the MuJoCo sim bridge publishes the
tabletop arm, the deployment node drives it with a trained checkpoint through the safety layer."""

import json

import numpy as np
import pytest

from real_robot.config import RobotConfig, SafetyConfig
from tests.real_robot.conftest import REACH_INIT_STATE, Spinner, wait_for

pytestmark = pytest.mark.ros
ROBOT = RobotConfig(name="tabletop_sim", base_frame="world",
                    safety=SafetyConfig(workspace_min=(-0.35, -0.4, 0.0), workspace_max=(0.35, 0.4, 0.45)))


def load_policy(checkpoint):
    from vla_rl.policy.checkpoint import load_checkpoint
    from vla_rl.policy.policy import VLAPolicy

    model, tokenizer, _ = load_checkpoint(checkpoint)
    return VLAPolicy(model, tokenizer, seed=0)


def direct_rollout(policy, steps):
    """The same policy in the same scene without ROS: the reference the ROS path must reproduce."""
    from sim_envs.tabletop_env import TabletopEnv
    from vla_rl.core import ObsBatch

    env = TabletopEnv("Reach", image_size=32)
    obs, _ = env.reset(options={"init_state_id": REACH_INIT_STATE, "split": "train"})
    actions, success = [], False
    for _ in range(steps):
        batch = ObsBatch({"agentview": obs["agentview_image"][None]}, obs["proprio"][None], [env.instruction])
        action = policy.predict_actions(batch)[0, 0]
        actions.append(action)
        obs, _, success, _, _ = env.step(action)
        if success:
            break
    env.close()
    return np.asarray(actions), success


def start_pair(context, policy, robot=ROBOT, recorder=None, instruction=True):
    from real_robot.node import PolicyNode
    from real_robot.sim_bridge import SimBridge
    from sim_envs.init_states import get_layout
    from sim_envs.tabletop_env import TabletopEnv

    def make_env():
        env = TabletopEnv("Reach", image_size=32)
        env.reset(options={"init_state_id": REACH_INIT_STATE, "split": "train"})
        return env

    text = get_layout("Reach", REACH_INIT_STATE, "train")["instruction"]
    bridge = SimBridge(make_env, robot, context=context)
    node = PolicyNode(policy, robot, image_size=32, cameras=("agentview",), recorder=recorder,
                      instruction=text if instruction else "", context=context)
    if recorder is not None:
        recorder.start_episode(node.episode, text)
    spinner = Spinner(context)
    spinner.add(bridge.node)
    spinner.add(node.node)
    return text, bridge, node, spinner.start()


def stop_pair(bridge, node, spinner):
    spinner.stop()
    node.destroy()
    bridge.destroy()
    if bridge.env is not None:
        bridge.env.close()


def test_deployed_checkpoint_completes_reach_through_ros(ros_context, reach_checkpoint, tmp_path):
    from real_robot.recording import BagRecorder, bag_to_episode

    policy = load_policy(reach_checkpoint)
    expected, direct_success = direct_rollout(policy, steps=12)
    assert direct_success, "the memorised checkpoint must succeed without ROS first"
    recorder = BagRecorder(tmp_path / "bags", ROBOT)
    instruction, bridge, node, spinner = start_pair(ros_context, policy, recorder=recorder)
    try:
        assert wait_for(lambda: bridge.success_reached, timeout=30), (bridge.status(), node.status())
        status = node.status()
    finally:
        stop_pair(bridge, node, spinner)
    assert status["state"] == "running" and status["inference_latency_ms"]["mean"] is not None
    # Lockstep: the arm executed exactly the motions of the direct rollout, in order (the safety
    # layer had nothing to change). The gripper is a separate controller on its own topic: its
    # closure applies from the step after it arrives at the latest.
    executed = np.stack([action for _, action in bridge.command_log[:len(expected)]])
    np.testing.assert_allclose(executed[:, :6], expected[:, :6], atol=1e-5)
    previous_gripper = np.concatenate([[-1.0], expected[:-1, 6]])
    assert np.all(np.isclose(executed[:, 6], expected[:, 6], atol=1e-5)
                  | np.isclose(executed[:, 6], previous_gripper, atol=1e-5))
    assert not status["safety_events"]
    # The episode was recorded as an MCAP bag and converts into our demo format.
    episode = bag_to_episode(recorder.bags[0], image_size=32, task="Reach")
    assert episode.instruction == instruction
    np.testing.assert_allclose(episode.actions[:len(expected)], expected, atol=1e-5)
    assert episode.obs["agentview_rgb"].shape[1:] == (32, 32, 3)
    assert (recorder.bags[0] / "metadata.yaml").is_file()
