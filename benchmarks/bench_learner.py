"""Data-parallel learner scaling: policy-update throughput (decisions/s) of 2 learner replicas
(Ray actors joined by torch.distributed, ``RayLearnerGroup``) against two baselines, same batch, same
model, same run:

- ``1 replica``: one such actor. On CPUs the backend is gloo and every replica gets one thread, so on
  a 2-core machine this baseline leaves a core idle that the 2 replicas use;
- ``1 learner in the driver, all cores``: the learner as ``vla-rl train`` runs it by default
  (``learner.num_learners: 1``, ``learner.threads: 0``): a ``PolicyLearner`` in this process with
  torch's default thread count. This is what the 2 replicas have to beat to be worth it.

On GPUs: nccl and one GPU per replica (``--gpus``); the in-driver learner uses one GPU.

The batch is real: a tiny VLA (random weights) rolls out on the tabletop suite's Reach task; the
update is the GRPO loss with one epoch over it. ``--model mid`` uses a ~100M-parameter VLA.

    python benchmarks/bench_learner.py [--episodes 16] [--updates 3] [--model tiny|mid] [--gpus 0]

Prints two JSON lines: the 2 replicas against 1 replica, and against the learner in the driver.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import emit  # noqa: E402

# A mid-size VLA: ~100M parameters, most of them in a 12-layer, 768-wide decoder.
MID_SIZE = dict(language_model=dict(hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=4,
                                    intermediate_size=2048),
                vision_towers=[dict(hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1536)])


def model_config(model_size: str, **overrides):
    """The benchmarks' ``VLAConfig``: the default tiny VLA, or ``mid`` (MID_SIZE), with ``overrides``."""
    from vla_rl.core.config import from_dict
    from vla_rl.policy.model import VLAConfig

    return from_dict(VLAConfig, {**(MID_SIZE if model_size == "mid" else {}), **overrides})


def build_checkpoint(directory: Path, model_size: str) -> Path:
    import numpy as np
    import torch

    from vla_rl.policy import ActionTokenizer, NormStats
    from vla_rl.policy.checkpoint import save_checkpoint
    from vla_rl.policy.model import VLAModel

    torch.manual_seed(0)
    model = VLAModel(model_config(model_size))
    stats = NormStats(np.full(7, -1.0), np.full(7, 1.0), np.array([True] * 6 + [False]))
    return save_checkpoint(directory / "step_000000", model, ActionTokenizer(model.config.action_vocab_size, stats),
                           extra={"trained_tasks": ["Reach"]})


def rollout_batch(checkpoint: Path, episodes: int):
    import numpy as np

    from vla_rl.cli.factories import load_policy, make_vec_env
    from vla_rl.core import TaskSpec
    from vla_rl.rollout.collector import collect

    policy = load_policy(str(checkpoint), 1.0, device="cpu")
    env = make_vec_env("tabletop", episodes, policy.model.config.image_size, False, 0)
    try:
        batch, _ = collect(policy, env, [TaskSpec("Reach", i // 2, "train") for i in range(episodes)])
    finally:
        env.close()
    batch.rewards[:] = 0.0
    batch.rewards[::2, 0] = 1.0  # one success per group of 2: every decision has a non-zero advantage
    return batch, np.arange(episodes) // 2


def updates_per_second(learners: int, checkpoint: Path, batch, group_ids, updates: int, gpus: float) -> float:
    from vla_rl.distributed.learner_group import RayLearnerGroup
    from vla_rl.train.learner import AlgorithmConfig, LearnerConfig

    algorithm = AlgorithmConfig(minibatch_size=100_000, microbatch_size=16, epochs=1)
    config = LearnerConfig(num_learners=learners, threads=1, gpus_per_learner=gpus, device="cuda" if gpus else "cpu",
                           precision="bf16" if gpus else "fp32")
    group = RayLearnerGroup(checkpoint, algorithm, config, seed=0, temperature=1.0, reference_checkpoint=checkpoint)
    try:
        group.update(batch, group_ids)  # warm-up: first-touch allocations, gloo connections
        started = time.perf_counter()
        for _ in range(updates):
            group.update(batch, group_ids)
        return updates / (time.perf_counter() - started)
    finally:
        group.close()


def driver_updates_per_second(checkpoint: Path, batch, group_ids, updates: int, gpus: float) -> tuple[float, int]:
    """Updates/s of one ``PolicyLearner`` in this process, as the trainer builds it with ``learner.num_learners: 1``
    and ``learner.threads: 0`` (torch's default threads); also returns that thread count."""
    import torch

    from vla_rl.policy.checkpoint import load_checkpoint
    from vla_rl.policy.policy import VLAPolicy
    from vla_rl.train.learner import AlgorithmConfig, LearnerConfig, PolicyLearner

    algorithm = AlgorithmConfig(minibatch_size=100_000, microbatch_size=16, epochs=1)
    config = LearnerConfig(num_learners=1, threads=0, device="cuda" if gpus else "cpu",
                           precision="bf16" if gpus else "fp32")
    model, tokenizer, _ = load_checkpoint(checkpoint, device=config.device)
    learner = PolicyLearner(VLAPolicy(model, tokenizer, temperature=1.0), algorithm, config, seed=0,
                            reference_checkpoint=checkpoint)
    learner.update(batch, group_ids)  # warm-up, as for the replicas
    started = time.perf_counter()
    for _ in range(updates):
        learner.update(batch, group_ids)
    return updates / (time.perf_counter() - started), torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--model", choices=["tiny", "mid"], default="tiny")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs per learner (0 = CPU, gloo)")
    args = parser.parse_args()
    import ray

    from sim_envs.vector import usable_cpus
    from vla_rl.core.memory import keep_freed_memory

    keep_freed_memory()  # as `vla-rl train` (and every learner actor) does: the in-driver learner runs beside envs

    # "local": a Ray of this run alone, never a running cluster (RAY_ADDRESS, /tmp/ray/ray_current_cluster)
    ray.init(address="local", num_cpus=max(2, usable_cpus()), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = build_checkpoint(Path(tmp), args.model)
        batch, group_ids = rollout_batch(checkpoint, args.episodes)
        decisions = int(batch.mask.sum())
        one = updates_per_second(1, checkpoint, batch, group_ids, args.updates, args.gpus) * decisions
        two = updates_per_second(2, checkpoint, batch, group_ids, args.updates, args.gpus) * decisions
        driver, driver_threads = driver_updates_per_second(checkpoint, batch, group_ids, args.updates, args.gpus)
        driver *= decisions
    ray.shutdown()
    setup = {"model": args.model, "decisions_per_update": decisions, "backend": "nccl" if args.gpus else "gloo",
             "precision": "bf16" if args.gpus else "fp32", "threads_per_replica": 1}
    emit("learner_decisions_per_s_2_replicas", two, "decisions/s", "1 replica", one, **setup)
    emit("learner_decisions_per_s_2_replicas_vs_driver", two, "decisions/s",
         "1 learner in the driver, all cores (threads=0)", driver, driver_torch_threads=driver_threads,
         one_replica_decisions_per_s=round(one, 3), **setup)


if __name__ == "__main__":
    main()
