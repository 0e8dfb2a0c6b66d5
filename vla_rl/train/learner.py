"""The learner: one policy-gradient update on a ``TrajectoryBatch`` (any estimator of the registry).

Decisions (one policy query each) of all kept episodes are flattened and shuffled, then split into
mini-batches of ``minibatch_size`` decisions, one optimiser step each, for ``epochs`` passes. A
mini-batch is processed in micro-batches of ``microbatch_size`` with gradient accumulation, each
micro-batch's loss weighted by its share of the mini-batch's tokens, so the result is exactly the
token-mean over the mini-batch whatever the micro-batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from vla_rl.algos.advantages import AdvantageInputs, get_estimator, masked_mean, ppo_clip_loss, value_loss
from vla_rl.core.config import option
from vla_rl.core.types import TrajectoryBatch
from vla_rl.rollout.collector import step_obs


@dataclass(frozen=True)
class AlgorithmConfig:
    estimator: Literal["grpo", "rloo", "gae"] = option("grpo", "advantage estimator (registry: grpo, rloo, gae)")
    scale_by_std: bool = option(True, "GRPO: divide by the group std (False = Dr.GRPO)")
    eps: float = option(1e-6, "added to the group std")
    clip_low: float = option(0.2, "PPO ratio clip below 1")
    clip_high: float = option(0.28, "PPO ratio clip above 1 (clip-higher)")
    kl_coef: float = option(0.0, "KL penalty to the frozen initial policy (0 = off, no reference kept)")
    entropy_coef: float = option(0.0, "entropy bonus")
    value_coef: float = option(0.5, "gae: value-loss weight")
    gamma: float = option(0.99, "gae: discount")
    lam: float = option(0.95, "gae: GAE lambda")
    lr: float = option(2e-5, "learning rate (AdamW)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    grad_clip: float = option(1.0, "max gradient norm")
    epochs: int = option(1, "passes over each batch")
    minibatch_size: int = option(256, "decisions per optimiser step")
    microbatch_size: int = option(64, "decisions per forward pass (gradient accumulation)")
    dynamic_sampling: bool = option(True, "drop groups whose rewards are all equal and sample more")

    def __post_init__(self) -> None:
        get_estimator(self.estimator)
        if self.epochs < 1 or self.minibatch_size < 1 or self.microbatch_size < 1:
            raise ValueError("epochs, minibatch_size and microbatch_size must be >= 1")
        if not 0 <= self.clip_low < 1 or self.clip_high <= 0:
            raise ValueError("clip_low must be in [0, 1) and clip_high > 0")


class ValueHead(torch.nn.Module):
    """A linear value on the decoder's hidden state at the last prefix token (``gae`` only)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = torch.nn.Linear(width, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def compute_advantages(batch: TrajectoryBatch, group_ids: np.ndarray, config: AlgorithmConfig,
                       values: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, T]`` advantages of every decision (0 on padding)."""
    inputs = AdvantageInputs(rewards=torch.from_numpy(batch.rewards).double(), mask=torch.from_numpy(batch.mask),
                             group_ids=torch.as_tensor(group_ids), values=None if values is None else values.double())
    estimator = get_estimator(config.estimator)
    if config.estimator == "gae":
        return estimator(inputs, gamma=config.gamma, lam=config.lam).float()
    return estimator(inputs, eps=config.eps, scale_by_std=config.scale_by_std).float()


def _forward(policy, value_head, obs, tokens, want_values: bool):
    """Per-token log-probs and entropies ``[n, L]`` (and values ``[n]``) with gradients."""
    if not want_values:
        out = policy.log_prob(obs, tokens)
        return out.token_logprob, out.entropy, None
    out, hidden = policy.log_prob(obs, tokens, return_prefix_hidden=True)
    return out.token_logprob, out.entropy, value_head(hidden)


@torch.no_grad()
def rollout_values(policy, value_head: ValueHead, batch: TrajectoryBatch, microbatch: int) -> torch.Tensor:
    """``[B, T]`` value estimates of every decision (0 on padding)."""
    values = torch.zeros(batch.mask.shape)
    episodes, steps = np.nonzero(batch.mask)
    for start in range(0, len(episodes), microbatch):
        e, s = episodes[start:start + microbatch], steps[start:start + microbatch]
        tokens = torch.from_numpy(batch.action_tokens[e, s])
        _, _, v = _forward(policy, value_head, step_obs(batch, e, s), tokens, True)
        values[e, s] = v.float().cpu()
    return values


def update(policy, optimizer: torch.optim.Optimizer, batch: TrajectoryBatch, group_ids: np.ndarray,
           config: AlgorithmConfig, generator: torch.Generator, reference=None,
           value_head: ValueHead | None = None) -> dict[str, float]:
    """Apply ``epochs`` passes of PPO-clip updates on ``batch``; returns averaged statistics."""
    use_values = config.estimator == "gae"
    if use_values and value_head is None:
        raise ValueError("the gae estimator needs a value head")
    values = rollout_values(policy, value_head, batch, config.microbatch_size) if use_values else None
    advantages = compute_advantages(batch, group_ids, config, values)
    returns = advantages + values if use_values else None
    episodes, steps = np.nonzero(batch.mask)
    decisions = len(episodes)
    if decisions == 0:
        raise ValueError("the batch has no valid decisions to learn from")
    old_logprob_all = torch.from_numpy(batch.old_logprobs)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    totals: dict[str, float] = {"loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0, "ref_kl": 0.0, "entropy": 0.0,
                                "grad_norm": 0.0, "value_loss": 0.0}
    optimizer_steps = micro_steps = 0
    policy.model.train()
    for _ in range(config.epochs):
        order = torch.randperm(decisions, generator=generator).numpy()
        for mb_start in range(0, decisions, config.minibatch_size):
            minibatch = order[mb_start:mb_start + config.minibatch_size]
            optimizer.zero_grad(set_to_none=True)
            for micro_start in range(0, len(minibatch), config.microbatch_size):
                micro = minibatch[micro_start:micro_start + config.microbatch_size]
                e, s = episodes[micro], steps[micro]
                tokens = torch.from_numpy(batch.action_tokens[e, s])
                logprob, entropy, value = _forward(policy, value_head, step_obs(batch, e, s), tokens, use_values)
                token_mask = torch.ones_like(logprob, dtype=torch.bool)
                ref_logprob = None
                if reference is not None and config.kl_coef > 0:
                    with torch.no_grad():
                        ref_logprob = reference.log_prob(step_obs(batch, e, s), tokens).token_logprob
                device = logprob.device
                out = ppo_clip_loss(logprob, old_logprob_all[e, s].to(device), advantages[e, s].to(device), token_mask,
                                    config.clip_low, config.clip_high, ref_logprob, config.kl_coef)
                mean_entropy = masked_mean(entropy, token_mask)
                loss = out.loss - config.entropy_coef * mean_entropy
                if use_values:
                    v_loss = value_loss(value, returns[e, s].to(device), torch.ones_like(value, dtype=torch.bool))
                    loss = loss + config.value_coef * v_loss
                    totals["value_loss"] += float(v_loss)
                (loss * len(micro) / len(minibatch)).backward()
                totals["loss"] += float(out.loss.detach())
                totals["clip_fraction"] += out.clip_fraction
                totals["approx_kl"] += out.approx_kl
                totals["ref_kl"] += out.ref_kl
                totals["entropy"] += float(mean_entropy.detach())
                micro_steps += 1
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            if not torch.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError("non-finite gradient norm in the policy update; weights left unchanged")
            optimizer.step()
            totals["grad_norm"] += float(grad_norm)
            optimizer_steps += 1
    stats = {key: value / (optimizer_steps if key == "grad_norm" else micro_steps) for key, value in totals.items()}
    stats.update(decisions=float(decisions), optimizer_steps=float(optimizer_steps),
                 advantage_abs_mean=float(advantages[torch.from_numpy(batch.mask)].abs().mean()))
    return stats
