"""Roll a policy out in any ``VecEnv`` and return a ``TrajectoryBatch``; no Ray here.

One *decision* is one policy query: it yields ``K`` actions (an action chunk, ``K = 1`` for OpenVLA)
that are executed open loop. The batch's time axis counts decisions; a decision's reward is the sum
of the env rewards of the steps it executed, and it is masked out once its episode has ended. The
actions of a chunk after the step that ended its episode never run: ``actions_executed`` records how
many did, and the learner gives the others' tokens no loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vla_rl.core.protocols import Policy, VecEnv
from vla_rl.core.types import ObsBatch, TaskSpec, TrajectoryBatch


@dataclass
class RolloutStats:
    env_steps: int = 0
    decisions: int = 0
    seconds_policy: float = 0.0
    seconds_env: float = 0.0
    env_restarts: int = 0  # envs rebuilt after a crash (their waves collected again)
    physics_divergences: int = 0  # episodes the simulator cut because their physics blew up (failures)


def collect(policy: Policy, env: VecEnv, specs: Sequence[TaskSpec], *, explore: bool = True,
            policy_version: int = 0, max_decisions: int = 0) -> tuple[TrajectoryBatch, RolloutStats]:
    """Roll out one episode per spec (``len(specs) <= env.spec.num_envs``; spare slots replay the
    last spec and are dropped). ``max_decisions > 0`` cuts every episode after that many decisions
    (an episode cut before success is a failure); 0 runs each to its task's step limit."""
    if max_decisions < 0:
        raise ValueError(f"max_decisions must be >= 0, got {max_decisions}")
    slots = env.spec.num_envs
    if not 1 <= len(specs) <= slots:
        raise ValueError(f"collect needs 1..{slots} task specs for this env, got {len(specs)}")
    count = len(specs)
    padded = list(specs) + [specs[-1]] * (slots - count)
    stats = RolloutStats()
    started = time.perf_counter()
    obs = env.reset(padded)
    stats.seconds_env += time.perf_counter() - started
    instructions = list(obs.instructions[:count])
    done = np.zeros(slots, bool)
    success = np.zeros(slots, bool)
    records: dict[str, list] = {"images": [], "proprio": [], "tokens": [], "actions": [], "logprob": [],
                                "rewards": [], "mask": [], "points": [], "executed": []}
    while not done[:count].all() and not (max_decisions and len(records["mask"]) >= max_decisions):
        active = ~done
        active[count:] = False  # spare slots replay a spec nobody asked for: no policy call for them
        started = time.perf_counter()
        output = act_where(policy, obs, active, explore)
        stats.seconds_policy += time.perf_counter() - started
        actions = output["actions"]
        records["images"].append({name: image[:count].copy() for name, image in obs.images.items()})
        records["proprio"].append(obs.proprio[:count].copy())
        for name in ("tokens", "logprob", "actions", "points"):
            if name in output:
                records[name].append(output[name][:count])
        records["mask"].append(active[:count].copy())
        reward = np.zeros(slots, np.float32)
        executed = np.zeros(slots, np.int32)
        started = time.perf_counter()
        for k in range(actions.shape[1]):
            executed += ~done
            step = env.step(actions[:, k])
            stats.env_steps += int((~done[:count]).sum())
            stats.physics_divergences += int((step.info_flag("physics_diverged") & ~done)[:count].sum())
            reward += np.where(done, 0.0, step.reward)
            success |= step.success & ~done
            done |= step.done
            obs = step.obs
            if done[:count].all():
                break
        stats.seconds_env += time.perf_counter() - started
        stats.decisions += int(active[:count].sum())
        records["rewards"].append(reward[:count])
        records["executed"].append(executed[:count])  # 0 for an ended episode: it never counts as running
    batch = TrajectoryBatch(
        images={name: np.stack([step[name] for step in records["images"]], axis=1) for name in obs.images},
        proprio=np.stack(records["proprio"], axis=1),
        instructions=instructions,
        action_tokens=np.stack(records["tokens"], axis=1).astype(np.int64),
        actions=np.stack(records["actions"], axis=1).astype(np.float32),
        old_logprobs=np.stack(records["logprob"], axis=1),
        rewards=np.stack(records["rewards"], axis=1),
        mask=np.stack(records["mask"], axis=1),
        success=success[:count].copy(),
        task_specs=list(specs),
        policy_version=policy_version,
        final_frames=obs.images["agentview"][:count].copy(),  # ended slots keep their last frame
        final_wrist_frames=obs.images["wrist"][:count].copy() if "wrist" in obs.images else None,
        located_points=np.stack(records["points"], axis=1) if records["points"] else None,
        actions_executed=np.stack(records["executed"], axis=1),
    )
    return batch, stats


def act_where(policy: Policy, obs: ObsBatch, active: np.ndarray, explore: bool) -> dict[str, np.ndarray]:
    """The policy on the ``active`` slots only: ``tokens`` ``int64 [B, L]``, per-token ``logprob``
    ``float32 [B, L]``, ``actions`` ``float32 [B, K, A]`` and, from a localiser VLA, ``points``
    ``float32 [B, P, 2]``, for all ``B`` slots, zeros on the others.
    Ended episodes stay in the vector env's batch until the longest one ends (half the slots of a
    wave, once its successes are done); their actions are never executed and their decisions are
    masked, so the forward pass on them was wasted."""
    index = np.flatnonzero(active)
    if len(index) == 0:
        raise ValueError("act_where needs at least one active slot")
    everyone = len(index) == len(active)
    output = policy.act(obs if everyone else obs.select(index), explore=explore)
    arrays = {"tokens": _as_numpy(output.tokens).astype(np.int64),
              "logprob": _as_numpy(output.logprob).astype(np.float32),
              "actions": np.asarray(output.actions, np.float32)}
    if getattr(output, "located_points", None) is not None:
        arrays["points"] = np.asarray(output.located_points, np.float32)
    if everyone:
        return arrays
    full = {}
    for name, values in arrays.items():
        full[name] = np.zeros((len(active), *values.shape[1:]), values.dtype)
        full[name][index] = values
    return full


def _as_numpy(values) -> np.ndarray:
    """Policy outputs may be torch tensors (on any device) or arrays."""
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def step_obs(batch: TrajectoryBatch, episode_index: np.ndarray, step_index: np.ndarray) -> ObsBatch:
    """The observations at (episode, decision) pairs, for recomputing log-probs in the learner."""
    return ObsBatch(images={name: image[episode_index, step_index] for name, image in batch.images.items()},
                    proprio=batch.proprio[episode_index, step_index],
                    instructions=[batch.instructions[i] for i in episode_index])


def step_points(batch: TrajectoryBatch, episode_index: np.ndarray, step_index: np.ndarray) -> np.ndarray | None:
    """The located points the rollout policy found at (episode, decision) pairs, if it recorded any."""
    return None if batch.located_points is None else batch.located_points[episode_index, step_index]


def concat_batches(batches: Sequence[TrajectoryBatch]) -> TrajectoryBatch:
    """Stack episodes of several batches (e.g. one per rollout worker), padding time to the longest.
    All must come from the same policy version."""
    versions = {b.policy_version for b in batches}
    if len(versions) != 1:
        raise ValueError(f"cannot mix trajectory batches of policy versions {sorted(versions)}")
    steps = max(b.mask.shape[1] for b in batches)

    def pad(array: np.ndarray, mode: str = "constant") -> np.ndarray:
        """Zeros after each batch's last decision; ``edge`` repeats the last token ids, which stay valid."""
        widths = [(0, 0), (0, steps - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, widths, mode=mode)

    return TrajectoryBatch(
        images={name: np.concatenate([pad(b.images[name]) for b in batches]) for name in batches[0].images},
        proprio=np.concatenate([pad(b.proprio) for b in batches]),
        instructions=[text for b in batches for text in b.instructions],
        action_tokens=np.concatenate([pad(b.action_tokens, "edge") for b in batches]),
        actions=np.concatenate([pad(b.actions) for b in batches]),
        old_logprobs=np.concatenate([pad(b.old_logprobs) for b in batches]),
        rewards=np.concatenate([pad(b.rewards) for b in batches]),
        mask=np.concatenate([pad(b.mask) for b in batches]),
        success=np.concatenate([b.success for b in batches]),
        task_specs=[spec for b in batches for spec in b.task_specs],
        policy_version=versions.pop(),
        final_frames=np.concatenate([b.final_frames for b in batches])
        if all(b.final_frames is not None for b in batches) else None,
        located_points=np.concatenate([pad(b.located_points) for b in batches])
        if all(b.located_points is not None for b in batches) else None,
        final_wrist_frames=np.concatenate([b.final_wrist_frames for b in batches])
        if all(b.final_wrist_frames is not None for b in batches) else None,
        actions_executed=np.concatenate([pad(b.actions_executed) for b in batches])
        if all(b.actions_executed is not None for b in batches) else None,
    )
