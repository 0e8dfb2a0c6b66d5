"""How learnable are these demos when perception is perfect? Clone them into a small MLP that is
given the *true* image positions of the named objects (what an exact localiser outputs), optionally
the gripper's, plus the proprio and the task, then run it closed-loop on held-out init states.

The output head is the VLA's: 256 bins per action dimension, cross-entropy with optional soft
targets, greedy decoding by argmax or by the bin of the mean. A run takes under a minute on 2 CPU
cores, against 30+ minutes for a VLA, so it tells quickly whether a change to the experts or the
demos can pay off (docs/policy.md, session 11: phased experts 36%, reactive experts 65-76%).

    python scripts/probe_demo_learnability.py runs/demos50 [--gripper] [--sigma-bins 2]
        [--decoding expected] [--pixel-noise 0.3] [--steps 4000] [--episodes 50]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_envs.state_obs import StateOnlyTabletopEnv  # noqa: E402
from sim_envs.tasks import TASKS  # noqa: E402
from vla_rl.core.demo_file import read_demo_file  # noqa: E402
from vla_rl.policy.model import _choose as choose_bins  # noqa: E402
from vla_rl.policy.sft import soft_bin_targets  # noqa: E402

BINS = 256
HALF_IMAGE = 32.0  # pixel coordinates of the 64 px agent view, scaled to [-1, 1]


def features(proprio: np.ndarray, pixels: np.ndarray, task: str, tasks: list[str]) -> np.ndarray:
    """``[N, 8]`` proprio, ``[N, P, 2]`` pixels (named points, then the gripper if present) ->
    ``[N, F]``: proprio, scaled pixels, each named point's offset from the gripper, task one-hot."""
    scaled = pixels / HALF_IMAGE - 1.0
    parts = [proprio, scaled.reshape(len(scaled), -1)]
    if pixels.shape[1] == 3:
        parts.append((scaled[:, :2] - scaled[:, 2:]).reshape(len(scaled), -1))
    one_hot = np.zeros((len(proprio), len(tasks)), np.float32)
    one_hot[:, tasks.index(task)] = 1.0
    return np.concatenate(parts + [one_hot], axis=1).astype(np.float32)


def load(demo_dir: Path, tasks: list[str], gripper: bool) -> tuple[np.ndarray, np.ndarray]:
    inputs, actions = [], []
    for task in tasks:
        for episode in read_demo_file(demo_dir / f"{task}_demo.hdf5"):
            inputs.append(features(episode.proprio(), episode.named_pixels(gripper=gripper), task, tasks))
            actions.append(episode.actions)
    return np.concatenate(inputs), np.concatenate(actions)


def to_bins(actions: torch.Tensor) -> torch.Tensor:
    return ((actions.clamp(-1, 1) + 1) / 2 * (BINS - 1)).round().long()


def decode(logits: torch.Tensor, how: str) -> torch.Tensor:
    """``[N, 7 * BINS]`` -> ``[N, 7]`` actions in [-1, 1], picking bins as the VLA's greedy decoding does."""
    index, _ = choose_bins(logits.reshape(len(logits), -1, BINS), 1.0, False, None, first_id=0, greedy=how)
    return index.float() / (BINS - 1) * 2 - 1


def train(inputs: np.ndarray, actions: np.ndarray, args) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(args.seed)
    x, y = torch.from_numpy(inputs), torch.from_numpy(actions)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-3)
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(),
                        nn.Linear(256, y.shape[1] * BINS))
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.steps)
    points = 3 if args.gripper else 2  # the named object, its goal, then the gripper
    for _ in range(args.steps):
        batch = torch.randint(0, len(x), (64,))
        sample = x[batch].clone()
        if args.pixel_noise:  # noise on each point, carried into the offsets from the gripper
            noise = args.pixel_noise / HALF_IMAGE * torch.randn(len(sample), points, 2)
            sample[:, 8:8 + 2 * points] += noise.reshape(len(sample), -1)
            if args.gripper:
                sample[:, 8 + 2 * points:12 + 2 * points] += (noise[:, :2] - noise[:, 2:]).reshape(len(sample), -1)
        logits = net((sample - mean) / std).reshape(-1, BINS)
        targets = to_bins(y[batch]).reshape(-1)
        if args.sigma_bins:
            loss = -(soft_bin_targets(targets, BINS, args.sigma_bins) * torch.log_softmax(logits, -1)).sum(-1).mean()
        else:
            loss = nn.functional.cross_entropy(logits, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return net, mean, std


def closed_loop(net, mean, std, args) -> dict[str, int]:
    successes = {}
    for task in args.tasks:
        env = StateOnlyTabletopEnv(task)
        wins = 0
        for init_state in range(args.episodes):
            obs, info = env.reset(options={"init_state_id": init_state, "split": "eval"})
            for _ in range(env.max_episode_steps):
                pixels = env.named_pixels()
                if args.gripper:
                    pixels = np.concatenate([pixels, env.gripper_pixels()[None]])
                x = torch.from_numpy(features(obs["proprio"][None], pixels[None], task, args.tasks))
                with torch.no_grad():
                    action = decode(net((x - mean) / std), args.decoding)[0].numpy()
                obs, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    break
            wins += bool(info["success"])
        env.close()
        successes[task] = wins
        print(f"{task:12s} {wins}/{args.episodes}", flush=True)
    return successes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--gripper", action="store_true", help="also the gripper's image position and offsets")
    parser.add_argument("--sigma-bins", type=float, default=2.0, help="soft-target width (0 = one-hot)")
    parser.add_argument("--decoding", choices=("argmax", "expected"), default="expected")
    parser.add_argument("--pixel-noise", type=float, default=0.0, help="training noise on the points, pixels")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--episodes", type=int, default=50, help="held-out init states per task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    inputs, actions = load(args.demo_dir, args.tasks, args.gripper)
    print(f"{len(inputs)} samples from {args.demo_dir}", flush=True)
    net, mean, std = train(inputs, actions, args)
    successes = closed_loop(net, mean, std, args)
    settings = ("gripper", "sigma_bins", "decoding", "pixel_noise", "steps", "seed")
    result = {"figure": "probe_closed_loop_success",
              "mean_success": sum(successes.values()) / (args.episodes * len(successes)), "per_task": successes,
              "demo_dir": str(args.demo_dir), "episodes_per_task": args.episodes,
              **{key: getattr(args, key) for key in settings}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
