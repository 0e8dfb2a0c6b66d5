"""Deployment latency over real ROS 2: the tabletop sim bridge runs as its own process (`vla-rl
sim-bridge`, lockstep, 128 px camera), the policy node (the CPU tiny VLA of configs/sft_tabletop.yaml,
random weights: latency does not depend on them) runs here, DDS on loopback.

Figures, all in one run:
- observation -> command: from an image arriving at the node to the command computed from it being
  published (resize + inference + waiting for the control tick), median over the run;
- baseline: the same policy's inference alone on the same kind of input, called directly;
- e-stop -> zero command: from publishing ``/vla/estop`` true to receiving the node's zero twist,
  both from a probe node in this process (so over DDS but without a loopback hop: the node's own
  reaction time), median of ``--estops`` presses;
- the control rate actually achieved (commands per second).

    python benchmarks/bench_ros_latency.py [--seconds 15] [--estops 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", "61")

import numpy as np  # noqa: E402
from common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_policy():
    from dataclasses import replace

    import torch

    from vla_rl.core.config import load_config
    from vla_rl.policy import ActionTokenizer, NormStats
    from vla_rl.policy.model import VLAModel
    from vla_rl.policy.policy import VLAPolicy
    from vla_rl.policy.sft import SFTConfig

    torch.manual_seed(0)
    # the patch-token model of the config (its MobileNetV2 tower, no localiser or proprio): the model whose
    # latency docs/benchmarks.md reports, and the heavier of the two
    config = replace(load_config(SFTConfig, ROOT / "configs/sft_tabletop.yaml").model, proprio_dim=0,
                     localiser_points=0, localiser_gripper=False, gripper_from_proprio=False, image_tokens=True)
    stats = NormStats(np.full(7, -1.0), np.full(7, 1.0), np.array([True] * 6 + [False]))
    return VLAPolicy(VLAModel(config), ActionTokenizer(config.action_vocab_size, stats, config.n_action_bins), seed=0)


def direct_inference_ms(policy, repeats: int = 40) -> float:
    from real_robot.messages import square_resize
    from vla_rl.core import ObsBatch

    frame = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        image = square_resize(frame, policy.config.image_size)
        policy.predict_actions(ObsBatch({"agentview": image[None]}, np.zeros((1, 8), np.float32), ["reach the red block"]))
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times[3:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="control time measured")
    parser.add_argument("--estops", type=int, default=5, help="e-stop presses timed")
    args = parser.parse_args()

    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Bool

    from real_robot.config import load_robot_config
    from real_robot.node import PolicyNode
    from sim_envs.init_states import get_layout

    robot = load_robot_config(ROOT / "configs/robot/tabletop_sim.yaml")
    policy = make_policy()
    baseline = direct_inference_ms(policy)
    bridge = subprocess.Popen([sys.executable, "-m", "vla_rl.cli.main", "sim-bridge", "--task", "Reach",
                               "--init-state", "0", "--image-size", "128", "--duration", str(args.seconds + 60)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = rclpy.Context()
    rclpy.init(context=context)
    instruction = get_layout("Reach", 0, "eval")["instruction"]
    node = PolicyNode(policy, robot, image_size=policy.config.image_size, cameras=policy.config.cameras,
                      instruction=instruction, context=context)
    probe = rclpy.create_node("latency_probe", context=context)
    zero_twists: list[float] = []
    probe.create_subscription(TwistStamped, robot.topics.twist_command, lambda msg: zero_twists.append(
        time.monotonic()) if msg.twist.linear.x == msg.twist.linear.y == msg.twist.linear.z == 0.0 else None, 10)
    estop = probe.create_publisher(Bool, robot.topics.estop, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node.node)
    executor.add_node(probe)

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)

    try:
        deadline = time.monotonic() + 90
        while node.commands_published == 0 and time.monotonic() < deadline:  # bridge start-up, discovery
            spin_for(0.2)
        if node.commands_published == 0:
            raise RuntimeError("the sim bridge never connected")
        first, start = node.commands_published, time.monotonic()
        spin_for(args.seconds)
        rate = (node.commands_published - first) / (time.monotonic() - start)
        status = node.status()
        halts = []
        for _ in range(args.estops):
            zero_twists.clear()
            pressed = time.monotonic()
            estop.publish(Bool(data=True))
            spin_for(0.5)
            if zero_twists:
                halts.append(1000 * (zero_twists[0] - pressed))
            estop.publish(Bool(data=False))
            spin_for(1.0)
    finally:
        executor.shutdown()
        node.destroy()
        probe.destroy_node()
        rclpy.shutdown(context=context)
        bridge.terminate()
        bridge.wait(timeout=30)
    reaction = status["observation_to_command_ms"]
    emit("ros_observation_to_command_ms_p50", float(np.median(list(node.reaction.values))), "ms",
         "direct_inference_ms_p50", baseline, observation_to_command_p95_ms=reaction["p95"],
         inference_in_node_mean_ms=status["inference_latency_ms"]["mean"],
         estop_to_zero_command_ms_p50=float(np.median(halts)) if halts else None,
         estop_presses=len(halts), control_rate_hz=round(rate, 2), configured_hz=robot.control_hz,
         safety_events=status["safety_events"], transport="Fast DDS, loopback, two processes")


if __name__ == "__main__":
    main()
