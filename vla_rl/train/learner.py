"""The learner: one policy-gradient update on a ``TrajectoryBatch`` (any estimator of the registry).

Decisions (one policy query each) of all kept episodes are flattened and shuffled, then split into
mini-batches of ``minibatch_size`` decisions, one optimiser step each, for ``epochs`` passes. A
mini-batch is processed in micro-batches of ``microbatch_size`` with gradient accumulation, each
micro-batch's loss weighted by its share of the mini-batch's decision weights (1 each for token-mean,
1/episode length for ``loss_aggregation: episode-mean``), so the result is exactly the weighted mean
over the mini-batch whatever the micro-batch size.

Data parallelism (``world_size > 1``, torch.distributed already initialised): every replica draws
the same shuffle (same generator state), takes every ``world_size``-th micro-batch of each
mini-batch, and the gradients are summed over replicas before clipping, so the update equals the
single-process one up to float summation order. ``ddp`` all-reduces full gradients; ``fsdp``
shards parameters, gradients and optimiser state (torch FSDP2) and needs every replica to run the
same number of forward passes, so a replica short of a micro-batch runs one with weight 0.
``bf16`` runs forward and backward under bf16 autocast; weights, optimiser state and the log-prob
arithmetic (logits are cast to fp32 before the softmax) stay fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vla_rl.algos.advantages import (AdvantageInputs, episode_step_weights, get_estimator, masked_row_mean,
                                     ppo_clip_loss, value_loss, weighted_mean)
from vla_rl.core.config import option
from vla_rl.core.optim import load_optimizer_state, make_adamw
from vla_rl.core.schedules import linear_warmup_lr
from vla_rl.core.types import TrajectoryBatch
from vla_rl.policy.lora import (LoRAConfig, apply_lora, lora_base_weights, lora_tensors, merged_state_dict,
                                restore_lora)
from vla_rl.rollout.collector import step_obs, step_points


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
    warmup_steps: int = option(0, "optimiser steps over which the learning rate rises linearly to lr (0 = none): "
                                  "Adam's first steps move every weight by about lr, whatever its gradient")
    weight_decay: float = option(0.0, "AdamW weight decay")
    grad_clip: float = option(1.0, "max gradient norm")
    epochs: int = option(1, "passes over each batch")
    minibatch_size: int = option(256, "decisions per optimiser step")
    microbatch_size: int = option(64, "decisions per forward pass (gradient accumulation)")
    dynamic_sampling: bool = option(True, "drop groups whose rewards are all equal and sample more")
    loss_aggregation: Literal["token-mean", "episode-mean"] = option(
        "token-mean", "token-mean: every action token weighs the same (DAPO), so an episode weighs by its length; "
                      "episode-mean: each episode's tokens are averaged, then episodes (GRPO's original), so a "
                      "5-step success weighs as much as a 50-step failure")

    def __post_init__(self) -> None:
        get_estimator(self.estimator)
        if self.epochs < 1 or self.minibatch_size < 1 or self.microbatch_size < 1:
            raise ValueError("epochs, minibatch_size and microbatch_size must be >= 1")
        if self.loss_aggregation not in ("token-mean", "episode-mean"):
            raise ValueError(f"loss_aggregation must be token-mean or episode-mean, got {self.loss_aggregation!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.estimator == "gae" and self.dynamic_sampling:
            raise ValueError("estimator gae needs dynamic_sampling: false: dynamic sampling drops the groups whose "
                             "rewards are all equal, which carry no signal only for the group baselines (grpo, "
                             "rloo); under gae the baseline is the learned value, and a group that all failed still "
                             "teaches the policy and the value head")
        if not 0 <= self.clip_low < 1 or self.clip_high <= 0:
            raise ValueError("clip_low must be in [0, 1) and clip_high > 0")

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based) of the whole run."""
        return linear_warmup_lr(step, self.lr, self.warmup_steps)


@dataclass(frozen=True)
class LearnerConfig:
    device: str = option("auto", "device of each learner's model: auto (cuda if visible), cpu, cuda[:i]")
    threads: int = option(0, "torch threads of each learner (0 = torch's default)")
    num_learners: int = option(1, "data-parallel learner replicas: 1 = in the driver process; > 1 = Ray actors "
                                   "joined by torch.distributed (vla_rl.distributed.learner_group)")
    strategy: Literal["ddp", "fsdp"] = option(
        "ddp", "with num_learners > 1: ddp replicates the model and all-reduces gradients; fsdp shards each decoder "
               "layer's weights, gradients and optimiser state over the learners (torch FSDP2; the rest is replicated)")
    backend: Literal["auto", "gloo", "nccl"] = option("auto", "torch.distributed backend: auto = nccl when the "
                                                               "learners have GPUs, else gloo")
    cpus_per_learner: float = option(1.0, "Ray CPUs reserved per learner actor")
    gpus_per_learner: float = option(0.0, "Ray GPUs per learner actor (1 on GPU nodes)")
    precision: Literal["fp32", "bf16"] = option("fp32", "bf16: forward and backward under bf16 autocast "
                                                         "(fp32 weights, optimiser state and log-prob arithmetic)")
    lora: LoRAConfig = option(factory=LoRAConfig, doc="LoRA adapters on the decoder (rank 0 = train every weight)")

    def __post_init__(self) -> None:
        if self.num_learners < 1:
            raise ValueError(f"learner.num_learners must be >= 1, got {self.num_learners}")
        for name, valid in (("strategy", ("ddp", "fsdp")), ("backend", ("auto", "gloo", "nccl")),
                            ("precision", ("fp32", "bf16"))):
            if getattr(self, name) not in valid:
                raise ValueError(f"learner.{name} {getattr(self, name)!r} is not one of {', '.join(valid)}")
        if self.lora.enabled and self.lora.dropout > 0:
            # the rollout samples in eval mode; dropout active in the learner's forward pass would make its
            # log-probabilities another policy's, and the PPO ratio noise from the first step
            raise ValueError(f"learner.lora.dropout must be 0 in RL, got {self.lora.dropout} (it is an SFT option)")


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


def _forward(policy, value_head, obs, tokens, want_values: bool, points=None):
    """Per-token log-probs and entropies ``[n, L]`` (and values ``[n]``) with gradients; ``points``:
    the located points the rollout recorded (``TrajectoryBatch.located_points``), or None."""
    extra = {} if points is None else {"located_points": points}
    if not want_values:
        out = policy.log_prob(obs, tokens, **extra)
        return out.token_logprob, out.entropy, None
    out, hidden = policy.log_prob(obs, tokens, return_prefix_hidden=True, **extra)
    return out.token_logprob, out.entropy, value_head(hidden)


@torch.no_grad()
def rollout_values(policy, value_head: ValueHead, batch: TrajectoryBatch, microbatch: int) -> torch.Tensor:
    """``[B, T]`` value estimates of every decision (0 on padding)."""
    values = torch.zeros(batch.mask.shape)
    episodes, steps = np.nonzero(batch.mask)
    for start in range(0, len(episodes), microbatch):
        e, s = episodes[start:start + microbatch], steps[start:start + microbatch]
        tokens = torch.from_numpy(batch.action_tokens[e, s])
        _, _, v = _forward(policy, value_head, step_obs(batch, e, s), tokens, True, step_points(batch, e, s))
        values[e, s] = v.float().cpu()
    return values


def _micro_batches(minibatch: np.ndarray, size: int, rank: int, world_size: int, lockstep: bool,
                   decision_weights: np.ndarray):
    """This replica's ``(decision indices, loss weight)`` of one mini-batch: every ``world_size``-th
    micro-batch, weighted by its share of the mini-batch's total ``decision_weights``; with ``lockstep``,
    a replica that has none left gets the first again with weight 0."""
    chunks = [minibatch[i:i + size] for i in range(0, len(minibatch), size)]
    total = float(decision_weights[minibatch].sum())
    rounds = -(-len(chunks) // world_size)
    for round_index in range(rounds):
        index = round_index * world_size + rank
        if index < len(chunks):
            yield chunks[index], float(decision_weights[chunks[index]].sum()) / total
        elif lockstep:
            yield chunks[0], 0.0


def _all_reduce_gradients(parameters: list[torch.Tensor], bucket_elements: int = 1 << 24) -> None:
    """Sum every gradient over the replicas, in flat buckets (one collective per bucket)."""
    import torch.distributed as dist

    for parameter in parameters:
        if parameter.grad is None:  # this replica had no micro-batch touching it
            parameter.grad = torch.zeros_like(parameter)
    bucket: list[torch.Tensor] = []
    elements = 0
    for i, parameter in enumerate(parameters):
        bucket.append(parameter.grad)
        elements += parameter.grad.numel()
        if elements >= bucket_elements or i == len(parameters) - 1:
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            offset = 0
            for grad in bucket:
                grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
                offset += grad.numel()
            bucket, elements = [], 0


def _is_sharded(parameter: torch.Tensor) -> bool:
    return hasattr(parameter, "full_tensor")  # an FSDP2 DTensor


def _clip_gradients(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` that also works when FSDP-sharded (DTensor) and plain gradients mix."""
    parameters = [p for p in parameters if p.grad is not None]
    groups = [[p for p in parameters if _is_sharded(p)], [p for p in parameters if not _is_sharded(p)]]
    groups = [group for group in groups if group]
    if len(groups) == 1 and not _is_sharded(groups[0][0]):
        return torch.nn.utils.clip_grad_norm_(groups[0], max_norm)
    norms = []
    for group in groups:
        norm = torch.nn.utils.get_total_norm([p.grad for p in group])
        norms.append(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    total = torch.linalg.vector_norm(torch.stack([n.float().cpu() for n in norms]))
    for group in groups:
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, total.to(group[0].device))
    return total


def _sum_over_replicas(values: dict[str, float]) -> dict[str, float]:
    import torch.distributed as dist

    keys = sorted(values)
    flat = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(flat)
    return dict(zip(keys, flat.tolist()))


def update(policy, optimizer: torch.optim.Optimizer, batch: TrajectoryBatch, group_ids: np.ndarray,
           config: AlgorithmConfig, generator: torch.Generator, reference=None,
           value_head: ValueHead | None = None, *, rank: int = 0, world_size: int = 1,
           strategy: str = "ddp", precision: str = "fp32", steps_before: int = 0) -> dict[str, float]:
    """Apply ``epochs`` passes of PPO-clip updates on ``batch``; returns averaged statistics.

    ``steps_before``: optimiser steps the run took before this update (the learning-rate schedule's clock).

    ``rank``/``world_size``: this replica of a data-parallel group (see the module docstring); every
    replica gets the whole batch and the same ``generator`` state and returns the same statistics.
    """
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
    per_episode = config.loss_aggregation == "episode-mean"
    decision_weights = episode_step_weights(batch.mask)[episodes, steps] if per_episode else np.ones(decisions)
    old_logprob_all = torch.from_numpy(batch.old_logprobs)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    device_type = next(policy.model.parameters()).device.type
    totals: dict[str, float] = {"loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0, "ref_kl": 0.0, "entropy": 0.0,
                                "value_loss": 0.0, "micro_steps": 0.0}
    grad_norm_total = 0.0
    optimizer_steps = 0
    policy.model.train()
    for _ in range(config.epochs):
        order = torch.randperm(decisions, generator=generator).numpy()
        for mb_start in range(0, decisions, config.minibatch_size):
            minibatch = order[mb_start:mb_start + config.minibatch_size]
            optimizer.zero_grad(set_to_none=True)
            for micro, weight in _micro_batches(minibatch, config.microbatch_size, rank, world_size,
                                                strategy == "fsdp", decision_weights):
                e, s = episodes[micro], steps[micro]
                tokens = torch.from_numpy(batch.action_tokens[e, s])
                with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    obs, points = step_obs(batch, e, s), step_points(batch, e, s)
                    logprob, entropy, value = _forward(policy, value_head, obs, tokens, use_values, points)
                    ref_logprob = None
                    if reference is not None and config.kl_coef > 0:
                        with torch.no_grad():
                            ref_logprob = _forward(reference, None, obs, tokens, False, points)[0]
                logprob, entropy = logprob.float(), entropy.float()
                device = logprob.device
                token_mask = torch.from_numpy(batch.token_mask(e, s)).to(device)
                step_weights = torch.from_numpy(decision_weights[micro]).to(device=device, dtype=logprob.dtype)
                out = ppo_clip_loss(logprob, old_logprob_all[e, s].to(device), advantages[e, s].to(device), token_mask,
                                    config.clip_low, config.clip_high, ref_logprob, config.kl_coef,
                                    step_weights if per_episode else None)
                # every term is the same weighted mean over decisions as the PPO term, so that the micro-batch
                # weights (their share of the mini-batch's decision weights) sum each to the mini-batch's mean
                mean_entropy = weighted_mean(masked_row_mean(entropy, token_mask), step_weights)
                loss = out.loss - config.entropy_coef * mean_entropy
                if use_values:
                    v_loss = value_loss(value.float(), returns[e, s].to(device), step_weights)
                    loss = loss + config.value_coef * v_loss
                (loss * weight).backward()
                if weight == 0:
                    continue  # a lockstep filler: its gradient is zero and its statistics are not counted
                if use_values:
                    totals["value_loss"] += float(v_loss.detach())
                totals["loss"] += float(out.loss.detach())
                totals["clip_fraction"] += out.clip_fraction
                totals["approx_kl"] += out.approx_kl
                totals["ref_kl"] += out.ref_kl
                totals["entropy"] += float(mean_entropy.detach())
                totals["micro_steps"] += 1
            if world_size > 1:  # FSDP reduces its sharded parameters itself, the rest (value head) here
                _all_reduce_gradients([p for p in parameters if not _is_sharded(p)])
            grad_norm = _clip_gradients(parameters, config.grad_clip)
            if not torch.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"non-finite gradient norm in the policy update: this mini-batch's step was not taken ("
                    f"{optimizer_steps} earlier steps of the update were); resume from the last checkpoint")
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate(steps_before + optimizer_steps)
            optimizer.step()
            grad_norm_total += float(grad_norm)
            optimizer_steps += 1
    if world_size > 1:
        totals = _sum_over_replicas(totals)
    micro_steps = totals.pop("micro_steps")
    stats = {key: value / micro_steps for key, value in totals.items()}
    stats.update(grad_norm=grad_norm_total / optimizer_steps, decisions=float(decisions),
                 optimizer_steps=float(optimizer_steps), lr=config.learning_rate(steps_before + optimizer_steps - 1),
                 advantage_abs_mean=float(advantages[torch.from_numpy(batch.mask)].abs().mean()))
    return stats


def shard_decoder_layers(model) -> None:
    """FSDP2: shard every decoder layer of ``model.language_model`` over the default process group.
    Only modules whose ``forward`` runs can be sharded this way; the rest stays replicated (its
    gradients are all-reduced by ``update``)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import torch.distributed as dist

    mesh = init_device_mesh(model.device.type, (dist.get_world_size(),))
    for layer in model.language_model.model.layers:
        fully_shard(layer, mesh=mesh)
        layer.set_gradient_divide_factor(1.0)  # ``update`` weights losses for a sum over replicas, not a mean
        layer.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no pre-multiplied sum


def _full(tensor):
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class PolicyLearner:
    """One learner replica: the policy, its optimiser, the optional value head, the frozen reference
    and the shuffling generator; ``state`` (from ``state_dict``) restores a run being resumed.

    With ``world_size > 1`` torch.distributed must already be initialised (see
    ``vla_rl.distributed.learner_group``); every replica is built from the same checkpoint and state.
    """

    def __init__(self, policy, algorithm: AlgorithmConfig, config: LearnerConfig, seed: int,
                 reference_checkpoint: Path | None = None, state: dict[str, Any] | None = None,
                 rank: int = 0, world_size: int = 1):
        self.policy, self.algorithm, self.config = policy, algorithm, config
        self.rank, self.world_size = rank, world_size
        self.sharded = world_size > 1 and config.strategy == "fsdp"
        model = policy.model
        # LoRA's A matrices are drawn from the run's seed (the same on every replica), without moving the
        # process's CPU generator (fork_rng restores it; CUDA generators are not touched)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            if config.lora.enabled:
                adapters = (state or {}).get("lora")
                if adapters:  # the frozen base from the checkpoint the run started from: a bit-exact resume
                    base = lora_base_weights(reference_checkpoint, model, config.lora)
                    trainable = restore_lora(model, config.lora, adapters, base)
                else:
                    trainable = apply_lora(model, config.lora)
            else:
                trainable = list(model.parameters())
            if self.sharded:
                shard_decoder_layers(model)  # replaces the layers' parameters by sharded ones
                trainable = [p for p in model.parameters() if p.requires_grad]
            self.value_head = (ValueHead(model.config.language_model.hidden_size).to(model.device)
                               if algorithm.estimator == "gae" else None)
        parameters = trainable + (list(self.value_head.parameters()) if self.value_head else [])
        self.optimizer = make_adamw(parameters, algorithm.lr, algorithm.weight_decay)
        self.reference = None
        if algorithm.kl_coef > 0:
            from vla_rl.policy.checkpoint import load_checkpoint
            from vla_rl.policy.policy import VLAPolicy

            ref_model, tokenizer, _ = load_checkpoint(Path(reference_checkpoint), device=model.device)
            self.reference = VLAPolicy(ref_model.eval().requires_grad_(False), tokenizer, policy.temperature)
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer_steps = 0
        if state is not None:
            self._load(state)

    def update(self, batch: TrajectoryBatch, group_ids: np.ndarray) -> dict[str, float]:
        stats = update(self.policy, self.optimizer, batch, group_ids, self.algorithm, self.generator, self.reference,
                       self.value_head, rank=self.rank, world_size=self.world_size,
                       strategy=self.config.strategy, precision=self.config.precision,
                       steps_before=self.optimizer_steps)
        self.optimizer_steps += int(stats["optimizer_steps"])
        return stats

    def weights(self) -> dict[str, torch.Tensor]:
        """The policy's plain weights (adapters merged, shards gathered: a collective under FSDP)."""
        model = self.policy.model
        if self.sharded:
            full = {key: _full(value).detach().cpu() for key, value in model.state_dict().items()}
            return merged_state_dict(model, full) if self.config.lora.enabled else full
        return merged_state_dict(model) if self.config.lora.enabled else model.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, generator, value head and LoRA adapters (a collective under FSDP)."""
        optimizer = self.optimizer.state_dict()
        if self.sharded:
            optimizer = {"state": {index: {key: _full(value).cpu() if torch.is_tensor(value) else value
                                           for key, value in slots.items()}
                                   for index, slots in optimizer["state"].items()},
                         "param_groups": optimizer["param_groups"]}
        # the same layout for every strategy (full slots keyed by parameter index): resume may switch
        state = {"optimizer": optimizer, "generator": self.generator.get_state(), "optimizer_steps": self.optimizer_steps}
        if self.value_head is not None:
            state["value_head"] = self.value_head.state_dict()
        if self.config.lora.enabled:
            model = self.policy.model
            state["lora"] = {key: _full(value).detach().cpu() for key, value in lora_tensors(model).items()}
        return state

    def _load(self, state: dict[str, Any]) -> None:
        optimizer = state["optimizer"]
        if self.sharded:  # full slots -> this replica's shard of each sharded parameter
            parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
            optimizer = {"state": {index: {key: _shard_like(value, parameters[index]) for key, value in slots.items()}
                                   for index, slots in optimizer["state"].items()},
                         "param_groups": optimizer["param_groups"]}
        load_optimizer_state(self.optimizer, optimizer)
        self.generator.set_state(state["generator"])
        self.optimizer_steps = int(state.get("optimizer_steps", 0))  # absent in checkpoints older than the schedule
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])


def _shard_like(value, parameter: torch.Tensor):
    """An optimiser slot saved in full, cut to ``parameter``'s shard when the parameter is sharded."""
    if not (torch.is_tensor(value) and _is_sharded(parameter) and value.shape == parameter.shape):
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(parameter.device), parameter.device_mesh, parameter.placements)
