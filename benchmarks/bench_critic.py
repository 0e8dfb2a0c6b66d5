"""Frames scored per second by the progress critic: batched episode scoring (``ProgressCritic.score``:
all frames of a batch of episodes, anchored at frame 0, in batches of ``--batch`` pairs) against
scoring one (frame_0, frame_t) pair at a time, same model (random weights), same frames, same run.
The model is the critic of ``--config`` (configs/critic.yaml: with the located-points localiser).

    python benchmarks/bench_critic.py [--config configs/critic.yaml] [--episodes 8] [--steps 40] [--batch 256]
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

from vla_rl.core.types import EpisodeFrames  # noqa: E402
from vla_rl.core.config import load_config  # noqa: E402
from vla_rl.reward.critic import ProgressCritic  # noqa: E402
from vla_rl.reward.critic_train import CriticTrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                                                         "critic.yaml"), help="a CriticTrainConfig YAML")
    parser.add_argument("--single-pairs", type=int, default=60, help="pairs timed one at a time")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = load_config(CriticTrainConfig, args.config).critic
    size = config.image_size
    critic = ProgressCritic(config).eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (args.episodes, args.steps, size, size, 3), dtype=np.uint8)
    # a wrist-view critic reads a second camera's frame of each moment
    wrist = rng.integers(0, 255, frames.shape, dtype=np.uint8) if config.wrist_view else None
    instructions = [f"pick up the {c} block" for c in ["red", "green", "blue", "yellow"]] * args.episodes
    mask = np.ones((args.episodes, args.steps), bool)
    episodes = EpisodeFrames(frames, instructions[: args.episodes], mask, wrist)
    critic.score(EpisodeFrames(frames[:1, :4], instructions[:1], mask[:1, :4],
                               None if wrist is None else wrist[:1, :4]))  # warm-up
    start = time.perf_counter()
    critic.score(episodes, batch_size=args.batch)
    batched = args.episodes * args.steps / (time.perf_counter() - start)
    tensors = torch.from_numpy(frames)
    wrist_tensors = None if wrist is None else torch.from_numpy(wrist)
    with torch.no_grad():
        start = time.perf_counter()
        for i in range(args.single_pairs):
            e, t = i % args.episodes, i % args.steps
            wrist_pair = (None, None) if wrist_tensors is None else (wrist_tensors[e, :1], wrist_tensors[e, t:t + 1])
            critic(tensors[e, :1], tensors[e, t:t + 1], [instructions[e]], *wrist_pair)
        single = args.single_pairs / (time.perf_counter() - start)
    emit("critic_frames_per_s_batched", batched, "frames/s", "critic_frames_per_s_one_pair_at_a_time", single,
         episodes=args.episodes, steps=args.steps, batch=args.batch, image_size=size,
         localiser_points=config.located_points, wrist_view=config.wrist_view, torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
