"""One GRPO iteration's time breakdown (rollout, reward, update, sync) and rollout env steps/s with
1 and with 2 Ray rollout workers, same total env slots, same policy, same run.

The policy is the default tiny VLA (random weights; speed does not depend on what it learned),
rolling out on the tabletop suite's Reach and PressButton tasks. What the two settings share: the number
of groups (``--envs`` / 8 groups of 8) and of episodes per iteration, drawn by the same seeded task
sampler. What they do not: the episodes themselves (each worker samples its own actions), hence their
lengths: an episode that succeeds ends before the task's step limit. The figure is env steps/s, which
normalises for that. ``--envs`` must be a multiple of 16 (2 workers x groups of 8): the trainer gives
each worker as many whole groups as its slots hold, so other counts give the two settings different
numbers of groups.

    python benchmarks/bench_grpo.py [--iterations 2] [--envs 32] [--decoding autoregressive|parallel]
                                    [--model tiny|mid] [--gpus-per-worker 0] [--precision fp32|bf16]

``--model mid``: the ~100M-parameter VLA of bench_learner.py (for GPU machines; the learner uses
the GPU when one is visible, rollout actors when ``--gpus-per-worker`` > 0). ``--precision bf16``:
rollout decoding and the learner's forward/backward under bf16 autocast (GPUs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import emit  # noqa: E402

GROUP_SIZE = 8
MAX_WORKERS = 2  # the settings compared: 1 and 2 rollout workers


def check_envs(envs: int) -> None:
    """Refuse an env-slot count that would give the 1- and 2-worker runs different numbers of groups."""
    unit = GROUP_SIZE * MAX_WORKERS
    if envs < unit or envs % unit:
        raise ValueError(f"--envs {envs}: must be a positive multiple of {unit} ({MAX_WORKERS} workers x groups of "
                         f"{GROUP_SIZE}); each worker samples as many whole groups as its slots hold, so other "
                         "counts give the 1-worker and 2-worker runs different numbers of groups")


def build_checkpoint(directory: Path, decoding: str, model_size: str = "tiny") -> Path:
    import numpy as np
    import torch

    from bench_learner import model_config
    from vla_rl.policy import ActionTokenizer, NormStats
    from vla_rl.policy.checkpoint import save_checkpoint
    from vla_rl.policy.model import VLAModel

    torch.manual_seed(0)
    model = VLAModel(model_config(model_size, decoding=decoding))
    stats = NormStats(np.full(7, -1.0), np.full(7, 1.0), np.array([True] * 6 + [False]))
    return save_checkpoint(directory / "step_000000", model, ActionTokenizer(model.config.action_vocab_size, stats),
                           extra={"trained_tasks": ["Reach", "PressButton"]})


def run(workers: int, envs: int, iterations: int, checkpoint: Path, out_dir: Path, gpus_per_worker: float = 0.0,
        precision: str = "fp32") -> dict:
    from vla_rl.cli.factories import eval_state_counter, make_pool
    from vla_rl.train.learner import AlgorithmConfig, LearnerConfig
    from vla_rl.train.trainer import RolloutConfig, Trainer, TrainConfig

    config = TrainConfig(init_checkpoint=checkpoint, out_dir=out_dir, tasks=("Reach", "PressButton"),
                         iterations=iterations, group_size=GROUP_SIZE, groups_per_iteration=envs // GROUP_SIZE,
                         max_sampling_rounds=1, eval_episodes_per_task=0, checkpoint_every=10_000,
                         algorithm=AlgorithmConfig(dynamic_sampling=False, minibatch_size=256, microbatch_size=64),
                         learner=LearnerConfig(precision=precision),
                         rollout=RolloutConfig(num_workers=workers, envs_per_worker=envs // workers,
                                               gpus_per_worker=gpus_per_worker, precision=precision))
    pool = make_pool(config.rollout, "tabletop", checkpoint, config.temperature, config.seed)
    rows = []
    try:
        trainer = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False)
        trainer.run(on_iteration=rows.append)
    finally:
        pool.close()
    last = rows[-1]  # the first iteration warms caches; report the last one
    return {"env_steps_per_s": last["env_steps_per_s"], "seconds": last["seconds"], "env_steps": last["env_steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--envs", type=int, default=32,
                        help=f"total env slots (split over the workers), a multiple of {GROUP_SIZE * MAX_WORKERS}")
    parser.add_argument("--decoding", default="autoregressive", choices=["autoregressive", "parallel"])
    parser.add_argument("--model", default="tiny", choices=["tiny", "mid"])
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    try:
        check_envs(args.envs)
    except ValueError as error:
        parser.error(str(error))
    import ray
    import torch

    from sim_envs.vector import usable_cpus

    # GPUs named explicitly: Ray's own detection can miss them in sandboxed containers. "local": a Ray of this
    # run alone, never a running cluster (RAY_ADDRESS, /tmp/ray/ray_current_cluster) shared with other jobs.
    ray.init(address="local", num_cpus=usable_cpus(), num_gpus=torch.cuda.device_count(), include_dashboard=False,
             log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = build_checkpoint(Path(tmp), args.decoding, args.model)
        one = run(1, args.envs, args.iterations, checkpoint, Path(tmp) / "one", args.gpus_per_worker, args.precision)
        two = run(2, args.envs, args.iterations, checkpoint, Path(tmp) / "two", args.gpus_per_worker, args.precision)
    ray.shutdown()
    emit("grpo_rollout_env_steps_per_s_2_workers", two["env_steps_per_s"], "env steps/s",
         "1 rollout worker", one["env_steps_per_s"], decoding=args.decoding, model=args.model, total_envs=args.envs,
         precision=args.precision, gpus_per_worker=args.gpus_per_worker, iteration_seconds_1_worker=one["seconds"],
         iteration_seconds_2_workers=two["seconds"], env_steps_per_iteration=two["env_steps"])


if __name__ == "__main__":
    main()
