"""Shared pieces of the ROS 2 tests: DDS kept on loopback, a trained tiny checkpoint, a running
bridge + policy node pair on one executor."""

import os

# Loopback-only DDS with a fixed domain, before rclpy is imported anywhere.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

REACH_INIT_STATE = 3  # a training init state: the checkpoint below is trained on its demo


@pytest.fixture(scope="session")
def reach_checkpoint(tmp_path_factory):
    """A tiny VLA trained (SFT, 150 steps) on one expert demo of Reach at ``REACH_INIT_STATE``:
    it has memorised that episode, so deploying it there must reach the block."""
    from sim_envs.demos import run_expert_episode
    from sim_envs.tabletop_env import TabletopEnv
    from tests.policy.conftest import tiny_config
    from vla_rl.core.demo_file import write_demo_file
    from vla_rl.policy.sft import SFTConfig, train_sft

    root = tmp_path_factory.mktemp("ros_ckpt")
    env = TabletopEnv("Reach", image_size=32)
    episode, _ = run_expert_episode(env, REACH_INIT_STATE, "train")
    env.close()
    assert episode.success
    write_demo_file(root / "demos" / "Reach_demo.hdf5", [episode], {"env_name": "Reach"})
    summary = train_sft(SFTConfig(model=tiny_config(), demo_dir=root / "demos", out_dir=root / "sft", steps=150,
                                  batch_size=8, lr=3e-3, warmup_steps=10, shift_pixels=0, checkpoint_every=150,
                                  eval_episodes_per_task=0), show_progress=False)
    return summary["checkpoint"]


class Spinner:
    """Spins nodes on a background executor thread until stopped."""

    def __init__(self, context):
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=context)
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)

    def add(self, node):
        self.executor.add_node(node)

    def _spin(self):
        while self.running:
            self.executor.spin_once(timeout_sec=0.02)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.running = False
        self.thread.join(timeout=5)
        self.executor.shutdown()


@pytest.fixture
def ros_context():
    from real_robot.messages import require_ros

    rclpy = require_ros()  # make setup installs the wheels; a missing rclpy fails, never skips
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def wait_for(predicate, timeout: float, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()
