"""End to end over real ROS 2 (rclpy, Fast DDS on loopback): the MuJoCo sim bridge publishes the
tabletop arm, the deployment node drives it with a trained checkpoint through the safety layer."""

import json
import time

import numpy as np
import pytest

from real_robot.config import RobotConfig, SafetyConfig, TopicsConfig
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
        batch = ObsBatch.from_env_obs(obs, env.instruction)
        action = policy.predict_actions(batch)[0, 0]
        actions.append(action)
        obs, _, success, _, _ = env.step(action)
        if success:
            break
    env.close()
    return np.asarray(actions), success


def start_pair(context, policy, robot=ROBOT, recorder=None, instruction=True, joint_solver=None, proprio_dim=0):
    from real_robot.node import PolicyNode
    from real_robot.sim_bridge import SimBridge
    from sim_envs.init_states import get_layout
    from sim_envs.tabletop_env import TabletopEnv

    def make_env():
        env = TabletopEnv("Reach", image_size=32)
        env.reset(options={"init_state_id": REACH_INIT_STATE, "split": "train"})
        return env

    text = get_layout("Reach", REACH_INIT_STATE, "train")["instruction"]
    bridge = SimBridge(make_env, robot, context=context,
                       init_state={"task": "Reach", "split": "train", "init_state_id": REACH_INIT_STATE})
    node = PolicyNode(policy, robot, image_size=32, cameras=("agentview",), recorder=recorder,
                      instruction=text if instruction else "", joint_solver=joint_solver, context=context,
                      proprio_dim=proprio_dim)
    spinner = Spinner(context)
    spinner.add(bridge.node)
    spinner.add(node.node)
    return text, bridge, node, spinner.start()


def stop_pair(bridge, node, spinner):
    spinner.stop()
    node.destroy()
    bridge.destroy()


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
    assert (episode.split, episode.init_state_id) == ("train", REACH_INIT_STATE)  # the bridge's, over DDS
    np.testing.assert_allclose(episode.actions[:len(expected)], expected, atol=1e-5)
    assert episode.obs["agentview_rgb"].shape[1:] == (32, 32, 3)
    assert (recorder.bags[0] / "metadata.yaml").is_file()


class ScriptedPolicy:
    """Emits one fixed action (a test double for the fault cases; the real counterpart is the
    checkpoint test above). Records how often it was asked."""

    def __init__(self, action):
        self.action = np.asarray(action, dtype=np.float32)
        self.calls = 0

    def predict_actions(self, obs):
        self.calls += 1
        return self.action[None, None].copy()


SLOW_SIDEWAYS = [0.0, 0.4, 0.0, 0.0, 0.0, 0.0, -1.0]  # 2 cm per period along +y


class ProprioRecordingPolicy(ScriptedPolicy):
    def __init__(self, action):
        super().__init__(action)
        self.proprio = []

    def predict_actions(self, obs):
        self.proprio.append(obs.proprio[0].copy())
        return super().predict_actions(obs)


def test_a_proprio_policy_gets_the_training_layout_of_proprio(ros_context):
    """EE position, orientation relative to pointing down and finger positions, rebuilt from
    /ee_pose and /joint_states, equal the simulator's own proprio (the arm holds still)."""
    from real_robot.node import PolicyNode

    with pytest.raises(ValueError, match="ee_pose"):
        PolicyNode(ScriptedPolicy(SLOW_SIDEWAYS), RobotConfig(topics=TopicsConfig(ee_pose="")), image_size=32,
                   cameras=("agentview",), proprio_dim=8, context=ros_context)
    policy = ProprioRecordingPolicy([0.0] * 6 + [-1.0])
    _, bridge, node, spinner = start_pair(ros_context, policy, proprio_dim=8)
    try:
        assert wait_for(lambda: len(policy.proprio) >= 3, timeout=20)
        expected = bridge.env.arm.proprio()
    finally:
        stop_pair(bridge, node, spinner)
    np.testing.assert_allclose(policy.proprio[-1], expected, atol=2e-3)
    assert np.abs(expected[3:6]).max() < 0.2 and expected[6:].min() > 0.01  # near pointing down, fingers open


def motion_after(bridge, since):
    return [action for when, action in bridge.command_log if when >= since]


def test_estop_halts_within_one_period_and_resumes_only_after_release(ros_context):
    from std_msgs.msg import Bool

    policy = ScriptedPolicy(SLOW_SIDEWAYS)
    _, bridge, node, spinner = start_pair(ros_context, policy)
    estop_pub = node.node.create_publisher(Bool, ROBOT.topics.estop, 10)
    try:
        assert wait_for(lambda: bridge.steps >= 3, timeout=20)
        assert wait_for(lambda: estop_pub.get_subscription_count() > 0, timeout=5)
        pressed = time.monotonic()
        estop_pub.publish(Bool(data=True))
        assert wait_for(lambda: any(not a[:6].any() for a in motion_after(bridge, pressed)), timeout=2)
        first_zero = next(when for when, a in bridge.command_log if when >= pressed and not a[:6].any())
        assert first_zero - pressed <= ROBOT.period_s, f"halt took {1000 * (first_zero - pressed):.0f} ms"
        time.sleep(0.6)  # several periods with the e-stop held: nothing but zero commands
        held = motion_after(bridge, first_zero)
        assert held and all(not a[:6].any() for a in held)
        assert node.status()["state"] == "estop" and node.status()["safety_events"]["estop"] == 1
        released = time.monotonic()
        estop_pub.publish(Bool(data=False))
        assert wait_for(lambda: any(a[:6].any() for a in motion_after(bridge, released)), timeout=5)
    finally:
        stop_pair(bridge, node, spinner)


def test_frozen_camera_stops_motion(ros_context):
    robot = RobotConfig(name="tabletop_sim", base_frame="world", safety=ROBOT.safety)
    policy = ScriptedPolicy(SLOW_SIDEWAYS)
    _, bridge, node, spinner = start_pair(ros_context, policy, robot=robot)
    try:
        assert wait_for(lambda: bridge.steps >= 3, timeout=20)
        frozen = time.monotonic()
        bridge.freeze_camera()
        assert wait_for(lambda: node.status()["state"] == "stale",
                        timeout=robot.safety.observation_timeout_s + 1.0)
        calls_when_stale, stale_at = policy.calls, time.monotonic()
        assert stale_at - frozen <= robot.safety.observation_timeout_s + 3 * robot.period_s
        time.sleep(0.5)
        after = motion_after(bridge, stale_at)
        assert after and all(not a[:6].any() for a in after)  # zero commands only
        assert policy.calls == calls_when_stale  # no inference on the old image either
        assert node.status()["safety_events"]["stale"] == 1
        bridge.freeze_camera(False)
        resumed = time.monotonic()
        assert wait_for(lambda: any(a[:6].any() for a in motion_after(bridge, resumed)), timeout=5)
    finally:
        stop_pair(bridge, node, spinner)


def test_commands_outside_the_workspace_box_are_clamped(ros_context):
    floor = 0.12
    robot = RobotConfig(name="tabletop_sim", base_frame="world",
                        safety=SafetyConfig(workspace_min=(-0.35, -0.4, floor), workspace_max=(0.35, 0.4, 0.45)))
    policy = ScriptedPolicy([0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0])  # straight down, 5 cm per period
    _, bridge, node, spinner = start_pair(ros_context, policy, robot=robot)
    try:
        assert wait_for(lambda: bridge.steps >= 8, timeout=30)
        status, z = node.status(), bridge.status()["ee_position"][2]
    finally:
        stop_pair(bridge, node, spinner)
    assert status["safety_events"].get("workspace_clamped", 0) >= 1
    assert z >= floor - 0.01, f"the hand went to z = {z:.3f} m below the {floor} m floor"
    commanded = [a for _, a in bridge.command_log]
    # full speed, then slowed at the floor, then (servo error aside) stopped: under 5 mm per period
    assert commanded[0][2] == pytest.approx(-1.0) and any(-1.0 < a[2] < -0.1 for a in commanded)
    assert abs(commanded[-1][2]) < 0.1


def test_nan_actions_never_reach_the_arm_nor_the_recording(ros_context, tmp_path):
    from real_robot.recording import ACTION_TOPIC, BagRecorder, read_bag

    policy = ScriptedPolicy([0.1, np.nan, 0.0, 0.0, 0.0, 0.0, -1.0])
    recorder = BagRecorder(tmp_path / "bags", ROBOT)
    _, bridge, node, spinner = start_pair(ros_context, policy, recorder=recorder)
    try:
        assert wait_for(lambda: node.status()["safety_events"].get("nonfinite_action", 0) >= 3, timeout=20)
        status = node.status()
    finally:
        stop_pair(bridge, node, spinner)
    commanded = np.stack([a for _, a in bridge.command_log])
    assert np.all(np.isfinite(commanded)) and not commanded[:, :6].any()  # only zero commands arrived
    assert status["state"] == "running"
    # A rejected action moved nothing, so it is no demo step (its "gripper 0" would read as half-closed).
    assert not [m for topic, _, m in read_bag(recorder.bags[0]) if topic == ACTION_TOPIC]


def test_joint_space_arm_gets_joint_trajectories_from_ik(ros_context):
    from vla_rl.cli.deploy import make_joint_solver

    robot = RobotConfig(name="tabletop_sim", base_frame="world", command_mode="joint_trajectory",
                        arm_joints=("j1", "j2", "j3", "j4", "j5", "j6"), kinematics_mjcf="builtin:tabletop",
                        safety=ROBOT.safety)
    policy = ScriptedPolicy(SLOW_SIDEWAYS)
    _, bridge, node, spinner = start_pair(ros_context, policy, robot=robot, joint_solver=make_joint_solver(robot))
    try:
        assert wait_for(lambda: bridge.steps >= 1, timeout=20)
        start = np.array(bridge.status()["ee_position"])
        assert wait_for(lambda: bridge.steps >= 6, timeout=20)
        moved = np.array(bridge.status()["ee_position"]) - start
        steps = bridge.steps - 1
    finally:
        stop_pair(bridge, node, spinner)
    assert all(len(targets) == 6 for _, targets in bridge.command_log)  # joint targets, not twists
    # 2 cm per period along +y (servo lag aside), nothing else
    assert 0.6 * 0.02 * steps <= moved[1] <= 1.1 * 0.02 * steps, moved
    assert abs(moved[0]) < 0.01 and abs(moved[2]) < 0.01, moved


def test_joint_space_halt_sends_no_trajectory(ros_context):
    """A halt must not command the last measured joints: those lag a moving arm (and are old when
    the joint states are what went stale), so commanding them pulls the arm back. The controller
    ends its last one-period target and holds it."""
    from vla_rl.cli.deploy import make_joint_solver

    robot = RobotConfig(name="tabletop_sim", base_frame="world", command_mode="joint_trajectory",
                        arm_joints=("j1", "j2", "j3", "j4", "j5", "j6"), kinematics_mjcf="builtin:tabletop",
                        safety=ROBOT.safety)
    _, bridge, node, spinner = start_pair(ros_context, ScriptedPolicy(SLOW_SIDEWAYS), robot=robot,
                                          joint_solver=make_joint_solver(robot))
    try:
        assert wait_for(lambda: bridge.steps >= 3, timeout=20)
        bridge.freeze_camera()
        assert wait_for(lambda: node.status()["state"] == "stale", timeout=robot.safety.observation_timeout_s + 1.0)
        published = node.status()["commands_published"]
        time.sleep(0.5)  # five periods of the halt
        status = node.status()
    finally:
        stop_pair(bridge, node, spinner)
    assert status["state"] == "stale" and status["commands_published"] == published
    assert len(bridge.command_log) <= published


def test_recorded_bag_converts_to_demos_via_cli(ros_context, tmp_path, capsys):
    from real_robot.recording import BagRecorder
    from vla_rl.cli.main import main
    from vla_rl.core.demo_file import read_demo_file

    recorder = BagRecorder(tmp_path / "bags", ROBOT, storage="sqlite3")
    _, bridge, node, spinner = start_pair(ros_context, ScriptedPolicy(SLOW_SIDEWAYS), recorder=recorder)
    try:
        assert wait_for(lambda: bridge.steps >= 4, timeout=20)
    finally:
        stop_pair(bridge, node, spinner)
    unclosed = tmp_path / "bags" / "episode_0002"  # a recording whose process was killed: data, no metadata
    unclosed.mkdir()
    (unclosed / "episode_0002_0.db3").write_bytes(b"")
    assert main(["bag-to-demos", "--bags", str(tmp_path / "bags"), "--out", str(tmp_path / "demos"),
                 "--task", "Reach", "--image-size", "32"]) == 0
    assert "episode_0002" in capsys.readouterr().err
    (episode,) = list(read_demo_file(tmp_path / "demos" / "Reach_demo.hdf5"))
    assert episode.num_steps >= 4 and episode.obs["agentview_rgb"].shape[1:] == (32, 32, 3)
    np.testing.assert_allclose(episode.actions, np.tile(SLOW_SIDEWAYS, (episode.num_steps, 1)), atol=1e-6)
    assert episode.obs["joint_states"].shape == (episode.num_steps, 8)


def test_unusable_images_are_counted_and_the_arm_halts(ros_context):
    from sensor_msgs.msg import Image

    _, bridge, node, spinner = start_pair(ros_context, ScriptedPolicy(SLOW_SIDEWAYS))
    camera = node.node.create_publisher(Image, ROBOT.topics.image, 10)
    try:
        assert wait_for(lambda: bridge.steps >= 2, timeout=20)
        bridge.freeze_camera()  # from now on only depth images arrive on the camera topic
        depth = Image(height=4, width=4, encoding="16UC1", step=8, data=bytes(32))
        empty = Image(height=0, width=0, encoding="rgb8", step=0, data=b"")  # would resize to a black frame
        published = []
        # Both kinds keep arriving while the watchdog decides: neither may count as a fresh image.
        node.node.create_timer(0.05, lambda: (camera.publish(depth if len(published) % 2 else empty),
                                              published.append(1)))
        assert wait_for(lambda: node.status()["state"] == "stale", timeout=2)
        # the state changes when the halt is chosen; its zero command reaches the arm right after
        assert wait_for(lambda: not bridge.command_log[-1][1][:6].any(), timeout=2)
        status = node.status()
    finally:
        stop_pair(bridge, node, spinner)
    assert status["safety_events"]["bad_image"] >= 2  # counted, and the node kept running


def test_cli_deploy_drives_the_cli_sim_bridge_across_processes(reach_checkpoint, tmp_path, capsys):
    """`vla-rl sim-bridge` in its own process, `vla-rl deploy` here: real DDS between processes."""
    import subprocess
    import sys

    from sim_envs.init_states import get_layout
    from vla_rl.cli.main import main

    bridge = subprocess.Popen([sys.executable, "-m", "vla_rl.cli.main", "sim-bridge", "--task", "Reach",
                               "--init-state", str(REACH_INIT_STATE), "--split", "train", "--image-size", "32",
                               "--no-antialias", "--duration", "40"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        instruction = get_layout("Reach", REACH_INIT_STATE, "train")["instruction"]
        code = main(["deploy", "--checkpoint", str(reach_checkpoint), "--robot", "configs/robot/tabletop_sim.yaml",
                     "--instruction", instruction, "--duration", "15", "--record", str(tmp_path / "bags")])
    finally:
        bridge.terminate()
        bridge_output = bridge.communicate(timeout=30)[0]
    assert code == 0
    out = capsys.readouterr().out
    final = json.loads(out[out.rindex("\n{"):out.rindex("}") + 1])
    assert final["commands_published"] >= 3, (final, bridge_output[-2000:])
    assert (tmp_path / "bags" / "episode_0001" / "metadata.yaml").is_file()
    assert "32 px without multisampling" in bridge_output


def test_deploy_refuses_a_checkpoint_without_norm_stats(reach_checkpoint, tmp_path, capsys):
    import shutil

    from vla_rl.cli.main import main

    broken = tmp_path / "ckpt"
    shutil.copytree(reach_checkpoint, broken)
    (broken / "norm_stats.json").unlink()
    assert main(["deploy", "--checkpoint", str(broken), "--robot", "configs/robot/tabletop_sim.yaml"]) == 2
    assert "norm_stats.json" in capsys.readouterr().err
