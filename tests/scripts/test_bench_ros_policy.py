"""benchmarks/bench_ros_latency.py builds its policy from configs/sft_tabletop.yaml with overrides: a
config change there once made it raise (``gripper_from_proprio`` without proprio), which only a full
``run_all.py`` showed. Build it and decode one action here (no ROS needed)."""

import numpy as np

from tests.scripts.conftest import BENCHMARKS, load_script


def test_the_latency_benchmark_policy_builds_and_acts():
    bench = load_script("bench_ros_latency", BENCHMARKS)  # puts benchmarks/ on sys.path for its `common` import
    from vla_rl.core import ObsBatch

    policy = bench.make_policy()
    size = policy.config.image_size
    image = np.zeros((1, size, size, 3), np.uint8)
    actions = policy.predict_actions(ObsBatch({"agentview": image}, np.zeros((1, 8), np.float32), ["reach the red block"]))
    assert np.asarray(actions).shape[-1] == 7 and np.all(np.isfinite(np.asarray(actions)))
