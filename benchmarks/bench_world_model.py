"""Imagined env steps per second of ``WorldModelVecEnv`` (batch 32: one predicted frame per env per
step, ``--sampling-steps`` denoising steps, plus the critic's reward) against the real MuJoCo
tabletop ``SimVecEnv`` stepping and rendering the same number of envs at the same resolution
(one worker process per core), same run. Weights do not change the cost, so the default model
and critic architectures are built with random weights unless checkpoints are given.

    python benchmarks/bench_world_model.py [--envs 32] [--steps 10] [--image-size 64] [--sampling-steps 4]
        [--world-model runs/world_model] [--critic runs/critic/final] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import emit  # noqa: E402

from sim_envs.suites import get_suite  # noqa: E402
from sim_envs.vector import SimVecEnv, VecEnvConfig  # noqa: E402
from vla_rl.core import TaskSpec  # noqa: E402


def time_steps(env, specs, steps: int, rng) -> float:
    """Env steps per second over ``steps`` batched steps (after the reset)."""
    env.reset(specs)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, (len(specs), 7)).astype(np.float32))
    return len(specs) * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (the step limit of Reach is 50)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--sampling-steps", type=int, default=4)
    parser.add_argument("--world-model", help="checkpoint (default: the default architecture, random weights)")
    parser.add_argument("--critic", help="critic checkpoint (default: the default architecture, random weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, load_critic
    from world_model.env import WorldModelVecEnv
    from world_model.model import VideoWorldModel, WorldModelConfig
    from world_model.train import load_world_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    specs = [TaskSpec("Reach" if i % 2 else "PressButton", i, "train") for i in range(args.envs)]
    real_config = VecEnvConfig(num_envs=args.envs, image_size=args.image_size)
    with SimVecEnv(real_config) as real:
        time_steps(real, specs, 2, rng)  # warm-up: envs built, renderer contexts up
        real_rate = time_steps(real, specs, args.steps, rng)
    if args.world_model:
        model = load_world_model(args.world_model, args.device)
    else:
        model = VideoWorldModel(WorldModelConfig(image_size=args.image_size)).to(args.device)
    critic = load_critic(args.critic, args.device) if args.critic else ProgressCritic(CriticConfig()).to(args.device)
    reset_env = SimVecEnv(VecEnvConfig(num_envs=args.envs, num_workers=0, image_size=args.image_size))
    env = WorldModelVecEnv(model, critic.eval(), reset_env, get_suite("tabletop").max_steps, done_threshold=0.999,
                           sampling_steps=args.sampling_steps)
    try:
        time_steps(env, specs, 1, rng)
        imagined_rate = time_steps(env, specs, args.steps, rng)
    finally:
        env.close()
    emit("world_model_env_steps_per_s", imagined_rate, "steps/s", "mujoco_env_steps_per_s_rendering", real_rate,
         envs=args.envs, image_size=args.image_size, sampling_steps=args.sampling_steps, device=args.device,
         sim_workers=real_config.resolved_workers(), torch_threads=torch.get_num_threads(),
         parameters_millions=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))


if __name__ == "__main__":
    main()
