"""Success rate of a policy on fixed init states, run through any ``VecEnv``.

Each init state is rolled out exactly once. On a vector env with ``reset_slots`` (the simulator
suites), a slot whose episode ends starts the next init state at once; on others, episodes run in
waves of ``num_envs`` and a wave runs until every slot has ended (slots freeze when done). The
policy is queried only for the slots still running. With action chunks (``K > 1``)
the K actions of one prediction are executed open loop before the policy is queried again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

import numpy as np

from vla_rl.core.protocols import VecEnv
from vla_rl.core.stats import wilson_interval
from vla_rl.core.types import ObsBatch, TaskSpec


@dataclass
class EpisodeOutcome:
    spec: TaskSpec
    success: bool
    steps: int
    instruction: str
    physics_diverged: bool = False  # the simulator cut the episode because its physics blew up (a failure)


@dataclass
class EvalResult:
    episodes: list[EpisodeOutcome] = field(default_factory=list)
    frames: dict[TaskSpec, list[np.ndarray]] = field(default_factory=dict)  # agent-view frames of video_specs

    def per_task(self) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for task in dict.fromkeys(e.spec.task for e in self.episodes):
            runs = [e for e in self.episodes if e.spec.task == task]
            successes = sum(e.success for e in runs)
            low, high = wilson_interval(successes, len(runs))
            table[task] = {"success_rate": successes / len(runs), "successes": successes, "episodes": len(runs),
                           "wilson95_low": low, "wilson95_high": high,
                           "init_state_ids": [e.spec.init_state_id for e in runs],
                           "mean_steps": float(np.mean([e.steps for e in runs])),
                           "physics_divergences": sum(e.physics_diverged for e in runs)}
        return table

    @property
    def mean_success(self) -> float:
        """Mean over tasks of the per-task success rate (each task weighs the same)."""
        rates = [row["success_rate"] for row in self.per_task().values()]
        return float(np.mean(rates)) if rates else 0.0


def evaluate(predict: Callable[[ObsBatch], np.ndarray], env: VecEnv, specs: Sequence[TaskSpec],
             progress: Callable[[int], None] | None = None, video_specs: Collection[TaskSpec] = ()) -> EvalResult:
    """Roll out ``predict`` (obs -> actions ``[B, K, A]``) once from each of ``specs``; the agent-view
    frames of the episodes in ``video_specs`` (what the policy saw) are kept in ``result.frames``."""
    if hasattr(env, "reset_slots") and len(specs) > env.spec.num_envs:
        return _evaluate_refilling(predict, env, specs, progress, set(video_specs))
    result = EvalResult()
    video_specs = set(video_specs)
    slots = env.spec.num_envs
    for start in range(0, len(specs), slots):
        wave = list(specs[start:start + slots])
        padded = wave + [wave[-1]] * (slots - len(wave))  # idle slots replay a spec; results are ignored
        obs = env.reset(padded)
        instructions = list(obs.instructions)
        filmed = [i for i, spec in enumerate(wave) if spec in video_specs and spec not in result.frames]
        frames = {i: [obs.images["agentview"][i].copy()] for i in filmed}
        done = np.zeros(slots, bool)
        success = np.zeros(slots, bool)
        steps = np.zeros(slots, int)
        diverged = np.zeros(slots, bool)
        while not done[: len(wave)].all():
            chunk = _predict_active(predict, obs, ~done & (np.arange(slots) < len(wave)))
            for k in range(chunk.shape[1]):
                step = env.step(chunk[:, k])
                for i in filmed:
                    if not done[i]:
                        frames[i].append(step.obs.images["agentview"][i].copy())
                steps += ~done
                success |= step.success & ~done
                diverged |= step.info_flag("physics_diverged") & ~done
                done |= step.done
                obs = step.obs
                if done[: len(wave)].all():
                    break
        for i, spec in enumerate(wave):
            result.episodes.append(EpisodeOutcome(spec, bool(success[i]), int(steps[i]), instructions[i],
                                                  bool(diverged[i])))
        result.frames.update({wave[i]: frames[i] for i in filmed})
        if progress is not None:
            progress(len(wave))
    return result


def _predict_active(predict: Callable[[ObsBatch], np.ndarray], obs: ObsBatch, active: np.ndarray) -> np.ndarray:
    """``predict`` on the slots still running (zeros elsewhere): ended and idle slots are never stepped
    again, so predicting for them was wasted work (most of a wave's tail, where failures run to the limit)."""
    index = np.flatnonzero(active)
    if len(index) == len(active):
        return np.asarray(predict(obs), np.float32)
    chunk = np.asarray(predict(obs.select(index)), np.float32)
    full = np.zeros((len(active), *chunk.shape[1:]), np.float32)
    full[index] = chunk
    return full


def _evaluate_refilling(predict: Callable[[ObsBatch], np.ndarray], env, specs: Sequence[TaskSpec],
                        progress: Callable[[int], None] | None, video_specs: set[TaskSpec]) -> EvalResult:
    """``evaluate`` on an env with ``reset_slots``: a slot whose episode ends starts the next init state
    at once (between policy queries), so no slot idles while a wave's slowest episode runs to the step
    limit. Episodes are listed in the order of ``specs``."""
    slots = env.spec.num_envs
    queue = list(enumerate(specs))
    running: list[tuple[int, TaskSpec] | None] = [None] * slots
    steps = np.zeros(slots, int)
    success = np.zeros(slots, bool)
    frames: dict[int, list[np.ndarray]] = {}
    outcomes: dict[int, EpisodeOutcome] = {}
    result = EvalResult()

    def start(slot: int, obs: ObsBatch) -> None:
        running[slot] = queue.pop(0)
        steps[slot], success[slot] = 0, False
        if running[slot][1] in video_specs and running[slot][1] not in result.frames:
            frames[slot] = [obs.images["agentview"][slot].copy()]

    first = [spec for _, spec in queue[:slots]]
    obs = env.reset(first + [first[-1]] * (slots - len(first)))
    for slot in range(len(first)):
        start(slot, obs)
    instructions = list(obs.instructions)
    while any(entry is not None for entry in running):
        active = np.array([entry is not None for entry in running])
        chunk = _predict_active(predict, obs, active)
        ended: list[int] = []
        for k in range(chunk.shape[1]):
            step = env.step(chunk[:, k])
            obs = step.obs
            diverged = step.info_flag("physics_diverged")
            for slot in np.flatnonzero(active):
                steps[slot] += 1
                success[slot] |= bool(step.success[slot])
                if slot in frames:
                    frames[slot].append(obs.images["agentview"][slot].copy())
                if step.done[slot]:
                    index, spec = running[slot]
                    outcomes[index] = EpisodeOutcome(spec, bool(success[slot]), int(steps[slot]), instructions[slot],
                                                     bool(diverged[slot]))
                    if slot in frames:
                        result.frames[spec] = frames.pop(slot)
                    running[slot], active[slot] = None, False
                    ended.append(slot)
                    if progress is not None:
                        progress(1)
            if not active.any():
                break
        refill = ended[:len(queue)]
        if refill:
            obs = env.reset_slots(refill, [spec for _, spec in queue[:len(refill)]])
            for slot in refill:
                start(slot, obs)
                instructions[slot] = obs.instructions[slot]
    result.episodes = [outcomes[index] for index in range(len(specs))]
    return result
