"""Advantage estimators and the token-level policy-gradient losses, as pure functions.

The default variant is GRPO as the VLA-RL literature runs it (SimpleVLA-RL, RL4VLA, DAPO-style):

- **Grouping.** ``G`` rollouts share one (task, init state); ``group_ids[b]`` says which group
  episode ``b`` belongs to.
- **Reward.** One scalar per trajectory, ``R_b = sum_t rewards[b, t]``; with the sim-success reward
  source that is 1 for a successful episode and 0 otherwise.
- **Advantage.** ``A_b = (R_b - mean_group(R)) / (std_group(R) + eps)`` (population std, i.e. the
  group's own spread), broadcast to every action token of every step up to the episode end and
  masked after it. ``scale_by_std=False`` gives Dr.GRPO's unscaled ``R_b - mean``.
- **Loss.** Token-level PPO-clip with an asymmetric range (``1 - 0.2``, ``1 + 0.28``: "clip-higher"),
  aggregated as the mean over all valid tokens of the batch (token-mean). An optional KL penalty to a
  frozen reference uses the k3 estimator; it is off by default.
- **Dynamic sampling.** Groups whose rewards are all equal carry no signal and are dropped
  (``informative_groups``); the trainer keeps sampling until the batch is full.

Alternatives from the same registry (``ESTIMATORS``): ``rloo`` (leave-one-out baseline, no std
scaling) and ``gae`` (PPO with a learned value per step, generalised advantage estimation).

Shapes: ``B`` episodes, ``T`` steps (padded), ``L`` action tokens per step. ``mask [B, T]`` is True
for real steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass
class AdvantageInputs:
    """rewards ``float [B, T]`` (zero on padding); mask ``bool [B, T]``; group_ids ``int [B]``;
    values ``float [B, T]`` (only for ``gae``)."""

    rewards: torch.Tensor
    mask: torch.Tensor
    group_ids: torch.Tensor
    values: torch.Tensor | None = None

    def __post_init__(self) -> None:
        require_finite_rewards(self.rewards[self.mask.bool()])


def require_finite_rewards(rewards) -> None:
    """A NaN or infinite reward (a broken reward source) must stop training, not pass as a uniform group
    (NaN compares unequal to everything) or turn a whole group's advantages into NaN."""
    bad = ~np.isfinite(np.asarray(rewards, dtype=np.float64))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} non-finite rewards (NaN or inf) in the batch: the reward source is "
                         "broken (e.g. a critic fed NaN frames); nothing was learned from this batch")


def episode_returns(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T] -> [B]``: the trajectory reward ``R_b``, summed over real steps."""
    return torch.where(mask.bool(), rewards, 0.0).sum(dim=1)  # whatever padding holds (NaN * 0 would be NaN)


def _group_stats(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-episode group mean, population std and group size, each ``[B]``."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1
    count = torch.zeros(groups, dtype=values.dtype).index_add_(0, inverse, torch.ones_like(values))
    total = torch.zeros(groups, dtype=values.dtype).index_add_(0, inverse, values)
    mean = total / count
    squares = torch.zeros(groups, dtype=values.dtype).index_add_(0, inverse, (values - mean[inverse]) ** 2)
    std = (squares / count).sqrt()
    return mean[inverse], std[inverse], count[inverse]


def _group_uniform(values: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """``bool [B]``: whether every episode of this episode's group has the same value."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1
    high = torch.full((groups,), -torch.inf, dtype=values.dtype).scatter_reduce(0, inverse, values, "amax")
    low = torch.full((groups,), torch.inf, dtype=values.dtype).scatter_reduce(0, inverse, values, "amin")
    return (high == low)[inverse]


def grpo_advantages(inputs: AdvantageInputs, eps: float = 1e-6, scale_by_std: bool = True) -> torch.Tensor:
    """``[B, T]``: ``(R - group mean) / (group std + eps)`` on every real step, 0 on padding."""
    returns = episode_returns(inputs.rewards, inputs.mask)
    mean, std, _ = _group_stats(returns, inputs.group_ids)
    advantage = returns - mean
    if scale_by_std:
        scale = std + eps
        advantage = torch.where(scale > 0, advantage / scale.clamp(min=torch.finfo(scale.dtype).tiny), 0.0)
    # A uniform group carries no signal: exactly 0, although its float mean may differ from its returns by
    # a rounding error (0.1 three times), which a std of the same size would blow up to +-1.
    advantage = torch.where(_group_uniform(returns, inputs.group_ids), 0.0, advantage)
    return advantage[:, None] * inputs.mask


def rloo_advantages(inputs: AdvantageInputs, eps: float = 1e-6, scale_by_std: bool = False) -> torch.Tensor:
    """``[B, T]``: ``R_b - mean of the other G-1 returns of its group`` (= ``G/(G-1) (R - mean)``)."""
    returns = episode_returns(inputs.rewards, inputs.mask)
    mean, _, count = _group_stats(returns, inputs.group_ids)
    if torch.any(count < 2):
        raise ValueError("RLOO needs at least 2 episodes per group")
    advantage = (returns - mean) * count / (count - 1)
    return advantage[:, None] * inputs.mask


def gae_advantages(inputs: AdvantageInputs, gamma: float = 0.99, lam: float = 0.95) -> torch.Tensor:
    """``[B, T]`` generalised advantage estimates from per-step rewards and values. The step after
    an episode's last real step has value 0 (episodes end by success or by the time limit; the time
    limit is part of the task, so it is treated as terminal)."""
    if inputs.values is None:
        raise ValueError("the gae estimator needs values [B, T] from a value head")
    rewards, values, mask = inputs.rewards, inputs.values, inputs.mask.to(inputs.rewards.dtype)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    steps = rewards.shape[1]
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]  # running is 0 past the episode end
        advantages[:, t] = running
    return advantages


ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": grpo_advantages,
    "rloo": rloo_advantages,
    "gae": gae_advantages,
}


def get_estimator(name: str) -> Callable[..., torch.Tensor]:
    if name not in ESTIMATORS:
        raise KeyError(f"unknown advantage estimator {name!r}; valid estimators: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]


def informative_groups(returns: np.ndarray, group_ids: np.ndarray) -> np.ndarray:
    """``bool [B]``: True for episodes whose group has at least two different returns (dynamic
    sampling keeps only those: a group that all failed or all succeeded has zero advantage)."""
    require_finite_rewards(returns)
    keep = np.zeros(len(returns), bool)
    for group in np.unique(group_ids):
        members = group_ids == group
        keep[members] = np.ptp(returns[members]) > 0
    return keep


@dataclass
class LossOutput:
    loss: torch.Tensor
    clip_fraction: float
    approx_kl: float
    ref_kl: float


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the True entries of ``mask`` (same shape); 0 when there are none."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N, L]`` -> ``[N]``: each row's mean over its True entries of ``mask``; 0 for a row with none."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(w v) / sum(w)`` over ``[N]`` values and weights; 0 when the weights sum to 0."""
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def ppo_clip_loss(logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
                  token_mask: torch.Tensor, clip_low: float = 0.2, clip_high: float = 0.28,
                  ref_logprob: torch.Tensor | None = None, kl_coef: float = 0.0,
                  step_weights: torch.Tensor | None = None) -> LossOutput:
    """Token-level PPO-clip, token-mean aggregation (weighted by ``step_weights`` when given).

    logprob / old_logprob ``[N, L]`` per action token; advantages ``[N]`` (one per step, shared by
    its tokens) or ``[N, L]``; token_mask ``bool [N, L]``; step_weights ``[N]`` (or ``None``: all 1),
    a weight per step shared by its tokens: the loss is ``sum(w * loss) / sum(w)`` over the masked
    tokens (``episode_step_weights`` gives each episode the same total weight). The ratio is clipped
    to ``[1 - clip_low, 1 + clip_high]``. ``approx_kl`` is the k3 estimate of KL(old || new);
    ``ref_kl`` the k3 estimate of KL(new || ref) added with ``kl_coef`` when a reference is given.
    The statistics are unweighted token means.
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprob)
    log_ratio = logprob - old_logprob
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    ref_kl = torch.zeros((), dtype=logprob.dtype)
    if ref_logprob is not None and kl_coef > 0:
        ref_log_ratio = ref_logprob - logprob
        token_kl = ref_log_ratio.exp() - ref_log_ratio - 1.0
        per_token = per_token + kl_coef * token_kl
        ref_kl = masked_mean(token_kl.detach(), token_mask)
    if step_weights is None:
        loss = masked_mean(per_token, token_mask)
    else:
        weights = token_mask.to(per_token.dtype) * step_weights.to(per_token.dtype)[:, None]
        loss = (per_token * weights).sum() / weights.sum().clamp(min=1e-12)
    with torch.no_grad():
        clip_fraction = masked_mean(((ratio < 1.0 - clip_low) | (ratio > 1.0 + clip_high)).to(ratio.dtype), token_mask)
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, token_mask)
    return LossOutput(loss=loss, clip_fraction=float(clip_fraction), approx_kl=float(approx_kl), ref_kl=float(ref_kl))


def episode_step_weights(mask: np.ndarray) -> np.ndarray:
    """``[B, T]`` weights ``1 / steps`` of each episode on its valid steps (0 on padding), so that every
    episode weighs the same in the loss whatever its length (GRPO's original per-sequence mean).

    Token-mean aggregation weighs an episode by its length. In manipulation, successes end early and
    failures run to the step limit: in the quickstart a success took 4-9 decisions and a failure 50,
    so token-mean put ~90% of a mixed group's weight on pushing failures down.
    """
    steps = mask.sum(axis=1, keepdims=True)
    return np.where(mask, 1.0 / np.maximum(steps, 1), 0.0)


def value_loss(values: torch.Tensor, returns: torch.Tensor, step_weights: torch.Tensor) -> torch.Tensor:
    """Squared error of the value head, ``[N]`` each, averaged with ``step_weights`` ``[N]`` (ones: the
    plain mean; ``episode_step_weights``: every episode counts the same, as in ``ppo_clip_loss``)."""
    return weighted_mean((values - returns) ** 2, step_weights)
