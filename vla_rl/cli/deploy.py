"""``vla-rl deploy``, ``vla-rl sim-bridge`` and ``vla-rl bag-to-demos``: the ROS 2 side (docs/ros.md).

Composition only: load the checkpoint into a policy, the robot config, the IK for joint-space arms
and the recorder, hand them to ``real_robot``'s node, and spin until Ctrl-C or ``--duration``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

BUILTIN_TABLETOP = "builtin:tabletop"


def load_deployable_policy(checkpoint: Path, device: str = "auto"):
    """The checkpoint as a greedy policy; refuses (clear error) a checkpoint without usable action
    normalisation statistics, because its tokens cannot be turned into metric actions."""
    from vla_rl.policy.checkpoint import load_checkpoint, resolve_checkpoint
    from vla_rl.policy.policy import VLAPolicy, resolve_device

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    checkpoint = resolve_checkpoint(checkpoint)
    model, tokenizer, _ = load_checkpoint(checkpoint, device=resolve_device(device))
    if not tokenizer.norm_stats.mask.any():
        raise ValueError(f"{checkpoint}: the norm stats normalise no action dimension; refusing to deploy")
    return VLAPolicy(model, tokenizer, seed=0), checkpoint


def tabletop_kinematics_xml() -> str:
    from sim_envs.scene import CameraSetup, build_scene_xml
    from sim_envs.tasks import get_task

    return build_scene_xml(get_task("Reach").objects_xml(), CameraSetup())


def make_joint_solver(robot):
    from sim_envs.arm import MjcfKinematics

    xml = tabletop_kinematics_xml() if robot.kinematics_mjcf == BUILTIN_TABLETOP else robot.kinematics_mjcf
    return MjcfKinematics(xml, robot.arm_joints, robot.ee_site)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, systemd, a launch file ending) raised as Ctrl-C, so both stop the same
    way: the node's final zero command and the bag's metadata (written only on close)."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _serve(build, duration: float) -> dict:
    """Start a ROS context, ``build(context)`` a node wrapper (``.node``, ``.status()``,
    ``.destroy()``), spin it until Ctrl-C, SIGTERM or ``duration`` seconds (status every 5 s),
    tear everything down, print and return the final status."""
    import signal
    import threading

    from rclpy.executors import SingleThreadedExecutor

    from real_robot.messages import require_ros

    rclpy = require_ros()
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    # rclpy's own handlers would shut the context down on a signal, before the node could send its
    # final zero command; Ctrl-C and SIGTERM are handled here instead.
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signals can be handled
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        wrapper = build(context)
    except BaseException:
        rclpy.shutdown(context=context)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)
        raise
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(wrapper.node)
    deadline = time.monotonic() + duration if duration > 0 else float("inf")
    last_report = time.monotonic()
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if time.monotonic() - last_report >= 5.0:
                print(json.dumps(wrapper.status()))
                last_report = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        if in_main_thread:  # a second SIGTERM must not cut the teardown short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        executor.shutdown()
        final = wrapper.status()
        try:
            wrapper.destroy()  # may raise (a recording that failed) after leaving the arm still
        finally:
            rclpy.shutdown(context=context)
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous_handler)
    print(json.dumps(final, indent=1))
    return final


def cmd_deploy(args: argparse.Namespace) -> int:
    from real_robot.config import load_robot_config
    from real_robot.node import PolicyNode
    from real_robot.recording import BagRecorder

    robot = load_robot_config(args.robot, args.set or [])
    policy, checkpoint = load_deployable_policy(Path(args.checkpoint), args.device)
    solver = make_joint_solver(robot) if robot.command_mode == "joint_trajectory" else None
    recorder = BagRecorder(args.record, robot, args.storage) if args.record else None
    print(f"deploying {checkpoint} on {robot.name}: {robot.command_mode} commands at {robot.control_hz:g} Hz; "
          f"status on {robot.topics.status}" + ("" if args.instruction else
                                                f"; waiting for an instruction on {robot.topics.instruction}"))
    try:
        _serve(lambda context: PolicyNode(policy, robot, image_size=policy.config.image_size,
                                          cameras=policy.config.cameras, instruction=args.instruction or "",
                                          joint_solver=solver, recorder=recorder, context=context,
                                          proprio_dim=policy.config.proprio_dim), args.duration)
    finally:
        if recorder is not None:
            recorder.close()  # also when the node never came up (the node closes it otherwise)
    if recorder is not None:
        print(f"bags: {', '.join(str(p) for p in recorder.bags) or 'none (no instruction arrived)'}")
    return 0


def cmd_sim_bridge(args: argparse.Namespace) -> int:
    from real_robot.config import load_robot_config
    from real_robot.sim_bridge import SimBridge
    from sim_envs.init_states import get_layout
    from sim_envs.tabletop_env import TabletopEnv
    from sim_envs.tasks import TASKS

    if args.task not in TASKS:
        raise KeyError(f"--task: unknown tabletop task {args.task!r}; valid tasks: {', '.join(TASKS)}")
    robot = load_robot_config(args.robot, args.set or [])
    instruction = get_layout(args.task, args.init_state, args.split)["instruction"]

    def make_env():
        env = TabletopEnv(args.task, image_size=args.image_size, wrist_camera=bool(robot.topics.wrist_image),
                          antialias=not args.no_antialias)
        env.reset(options={"init_state_id": args.init_state, "split": args.split})
        return env

    print(f"sim bridge: {args.task} init state {args.split}/{args.init_state}, "
          f"{'real-time' if args.realtime else 'lockstep'}, {args.image_size} px"
          f"{' without multisampling' if args.no_antialias else ''}; instruction: {instruction!r}")
    init_state = {"task": args.task, "split": args.split, "init_state_id": args.init_state}  # recorded into bags
    _serve(lambda context: SimBridge(make_env, robot, lockstep=not args.realtime, image_encoding=args.encoding,
                                     wrist_camera=bool(robot.topics.wrist_image), context=context,
                                     init_state=init_state), args.duration)
    return 0


def cmd_bag_to_demos(args: argparse.Namespace) -> int:
    from real_robot.recording import bag_to_episode
    from vla_rl.core.demo_file import write_demo_file

    import sys

    bags = sorted(p.parent for p in Path(args.bags).rglob("metadata.yaml"))
    unfinished = sorted({p.parent for pattern in ("*.mcap", "*.db3") for p in Path(args.bags).rglob(pattern)
                         if not (p.parent / "metadata.yaml").is_file()})
    for bag in unfinished:  # the recorder writes metadata.yaml on close: this one was never closed
        print(f"warning: skipping {bag}: bag data without metadata.yaml (the recording was not closed: "
              "the deploy process was killed or crashed)", file=sys.stderr)
    if not bags:
        raise FileNotFoundError(f"no ROS 2 bags (metadata.yaml) under {args.bags}")
    episodes = [bag_to_episode(bag, args.image_size, args.task, args.success) for bag in bags]
    path = write_demo_file(Path(args.out) / f"{args.task}_demo.hdf5", episodes,
                           {"env_name": args.task, "source": "ros2 bags", "bags": [str(b) for b in bags]})
    steps = sum(e.num_steps for e in episodes)
    print(f"wrote {path}: {len(episodes)} episodes, {steps} steps (SFT reads it with demo_dir={args.out})")
    held_out = sum(e.split == "eval" for e in episodes)
    if held_out:
        print(f"warning: {held_out} of them were recorded on held-out (eval) init states of the sim bridge: SFT "
              "refuses them; record on training init states (sim-bridge --split train) for training data",
              file=sys.stderr)
    return 0


def _seconds(text: str) -> float:
    """``--duration``: seconds to run, 0 = until Ctrl-C; a negative or non-finite one is refused."""
    import math

    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds (0: until Ctrl-C), got {text}")
    return value


def register(sub) -> None:
    deploy = sub.add_parser("deploy", help="run a checkpoint on an arm over ROS 2, through the safety layer")
    deploy.add_argument("--checkpoint", required=True, help="policy checkpoint directory (or a run directory)")
    deploy.add_argument("--robot", required=True, help="robot config, e.g. configs/robot/tabletop_sim.yaml")
    deploy.add_argument("--instruction", default="", help="start at once with this instruction "
                                                          "(otherwise wait for one on the instruction topic)")
    deploy.add_argument("--record", default="", help="record every episode as a ROS 2 bag under this directory")
    deploy.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage format")
    deploy.add_argument("--duration", type=_seconds, default=0.0, help="stop after this many seconds (0: Ctrl-C)")
    deploy.add_argument("--device", default="auto", help="inference device: auto, cpu, cuda, cuda:1")
    deploy.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a robot config field")
    deploy.set_defaults(func=cmd_deploy)

    bridge = sub.add_parser("sim-bridge", help="serve a tabletop MuJoCo arm over ROS 2 (the robot side)")
    bridge.add_argument("--robot", default="configs/robot/tabletop_sim.yaml", help="robot config (topics, rate)")
    bridge.add_argument("--task", default="Reach", help="tabletop task")
    bridge.add_argument("--init-state", type=int, default=0, help="init-state id")
    bridge.add_argument("--split", choices=("train", "eval"), default="train",
                        help="init-state split (eval: a held-out state; its recorded bags are marked so, and SFT "
                             "refuses them)")
    bridge.add_argument("--image-size", type=int, default=128, help="camera resolution (the node resizes)")
    bridge.add_argument("--no-antialias", action="store_true",
                        help="render the cameras without multisampling, as a policy trained with `antialias: false` "
                             "(the quickstart's) saw its frames; pair it with --image-size equal to the policy's")
    bridge.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8", help="image encoding published")
    bridge.add_argument("--realtime", action="store_true", help="step on a timer like a real arm "
                                                                "(default: one step per command, reproducible)")
    bridge.add_argument("--duration", type=_seconds, default=0.0, help="stop after this many seconds (0: Ctrl-C)")
    bridge.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a robot config field")
    bridge.set_defaults(func=cmd_sim_bridge)

    convert = sub.add_parser("bag-to-demos", help="convert recorded ROS 2 episode bags into an SFT demo file")
    convert.add_argument("--bags", required=True, help="directory holding episode bags (searched recursively)")
    convert.add_argument("--out", required=True, help="output directory for <task>_demo.hdf5")
    convert.add_argument("--task", required=True, help="task name for the file and its episodes")
    convert.add_argument("--image-size", type=int, default=64, help="square image size stored")
    convert.add_argument("--success", action="store_true", help="label the episodes successful")
    convert.set_defaults(func=cmd_bag_to_demos)
