"""Reward sources for RL, chosen by name (``TrainConfig.reward``):

- ``sim_success``: the simulator's success predicate; the env puts 1.0 on the success step.
- ``critic``: the progress critic alone, as on a real arm or in a world model with no success
  predicate. Each step gets the critic's progress delta (``V(t+1) - V(t)``, the value curve anchored
  at the episode's first frame), and the last step also gets ``done_bonus * done_prob`` of the final
  frame. An episode's return is ``V(final) + done_bonus * done_prob(final)``.
- ``composite``: sim success plus ``critic_weight`` times the critic reward (dense shaping).

A source maps a ``TrajectoryBatch`` to new ``rewards [B, T]``; the trainer applies it to every
collected batch before dynamic sampling looks at the returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vla_rl.core.config import option
from vla_rl.core.types import EpisodeFrames, TrajectoryBatch

REWARD_SOURCES = ("sim_success", "critic", "composite")


@dataclass(frozen=True)
class RewardConfig:
    source: str = option("sim_success", f"reward source: {', '.join(REWARD_SOURCES)}")
    critic_checkpoint: Path = option(Path(""), "critic checkpoint directory (critic and composite sources)")
    done_bonus: float = option(1.0, "critic source: weight of the final frame's done probability")
    critic_weight: float = option(0.5, "composite source: weight of the critic reward next to sim success")

    def __post_init__(self) -> None:
        if self.source not in REWARD_SOURCES:
            raise ValueError(f"unknown reward source {self.source!r}; valid: {', '.join(REWARD_SOURCES)}")
        if self.source != "sim_success" and Path(self.critic_checkpoint) == Path(""):
            raise ValueError(f"reward source {self.source!r} needs reward.critic_checkpoint")


def score_trajectories(critic, batch: TrajectoryBatch):
    """The critic's scores (``CriticOutput``, ``[B, T + 1]``) of every episode's frames followed by its
    final frame (the one after its last action, at index ``length``), and the episode lengths ``[B]``.
    The wrist camera's frames go along for a critic that reads them (when the batch has them)."""
    if batch.final_frames is None:
        raise ValueError("the critic reward needs the batch's final frames (collected by vla_rl.rollout.collector)")
    lengths = batch.mask.sum(axis=1)
    count, steps = batch.mask.shape

    def with_final(seen: np.ndarray, final: np.ndarray) -> np.ndarray:
        frames = np.zeros((count, steps + 1, *seen.shape[2:]), np.uint8)
        for b, length in enumerate(lengths):
            frames[b, :length] = seen[b, :length]
            frames[b, length] = final[b]
        return frames

    mask = np.arange(steps + 1)[None] <= lengths[:, None]
    wrist = None
    if getattr(critic, "reads_wrist", False) and "wrist" in batch.images and batch.final_wrist_frames is not None:
        wrist = with_final(batch.images["wrist"], batch.final_wrist_frames)
    episodes = EpisodeFrames(frames=with_final(batch.images["agentview"], batch.final_frames),
                             instructions=list(batch.instructions), mask=mask, wrist_frames=wrist)
    return critic.score(episodes), lengths


def critic_reads_wrist(checkpoint: Path) -> bool:
    """Whether the critic checkpoint reads the wrist camera (rollouts must then render it), from its
    config alone."""
    from vla_rl.reward.critic import read_critic_meta

    return bool(read_critic_meta(Path(checkpoint))["config"].get("wrist_view", False))


def critic_rewards(critic, batch: TrajectoryBatch, done_bonus: float) -> np.ndarray:
    """``float32 [B, T]`` critic rewards of a batch (see the module docstring)."""
    scored, lengths = score_trajectories(critic, batch)
    rewards = scored.progress[:, 1:].copy()  # reward of decision t: V(t + 1) - V(t)
    rows = np.arange(len(lengths))
    rewards[rows, lengths - 1] += done_bonus * scored.done_prob[rows, lengths]
    return (rewards * batch.mask).astype(np.float32)


def make_reward_fn(config: RewardConfig) -> Callable[[TrajectoryBatch], np.ndarray] | None:
    """None for ``sim_success`` (the env's rewards stand), else batch -> rewards ``[B, T]``."""
    if config.source == "sim_success":
        return None
    from vla_rl.reward.critic import cached_critic

    critic = cached_critic(str(config.critic_checkpoint))

    def reward_fn(batch: TrajectoryBatch) -> np.ndarray:
        dense = critic_rewards(critic, batch, config.done_bonus)
        if config.source == "critic":
            return dense
        return (batch.rewards + config.critic_weight * dense).astype(np.float32)

    return reward_fn


__all__ = ["REWARD_SOURCES", "RewardConfig", "critic_reads_wrist", "critic_rewards", "make_reward_fn",
           "score_trajectories"]
