"""Success rate of a policy on fixed init states, run through any ``VecEnv``.

Each init state is rolled out exactly once. On a vector env with ``reset_slots`` (the simulator
suites), a slot whose episode ends starts the next init state at once; on others, episodes run in
waves of ``num_envs`` and a wave runs until every slot has ended (slots freeze when done). The
policy is queried only for the slots still running. With action chunks (``K > 1``)
the K actions of one prediction are executed open loop before the policy is queried again.

Each episode is added to the result as it ends, so a caller keeps the finished ones when the env crashes
or the user interrupts: ``evaluate_restarting`` rebuilds a crashed env and runs only the episodes not
finished (a greedy policy gives each episode the outcome it would have had undisturbed: an episode
depends only on its task, init state and the policy), and ``vla-rl eval`` writes a partial report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

import numpy as np

from vla_rl.core.protocols import EnvCrashed, VecEnv
from vla_rl.core.stats import wilson_interval
from vla_rl.core.types import ObsBatch, TaskSpec
from vla_rl.rollout.env_restarts import MAX_ENV_RESTARTS, close_quietly, run_restarting


@dataclass
class EpisodeOutcome:
    spec: TaskSpec
    success: bool
    steps: int
    instruction: str
    physics_diverged: bool = False  # the simulator cut the episode because its physics blew up (a failure)
    # a LIBERO init state whose objects had not settled when the policy started (docs/libero.md: MuJoCo >= 3.4)
    init_state_unsettled: bool = False


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
                           "physics_divergences": sum(e.physics_diverged for e in runs),
                           "unsettled_init_states": sum(e.init_state_unsettled for e in runs)}
            settled = [e for e in runs if not e.init_state_unsettled]
            if len(settled) < len(runs):  # the rate published LIBERO numbers can be compared with
                table[task]["success_rate_settled"] = sum(e.success for e in settled) / len(settled) if settled \
                    else None
        return table

    @property
    def mean_success(self) -> float:
        """Mean over tasks of the per-task success rate (each task weighs the same)."""
        rates = [row["success_rate"] for row in self.per_task().values()]
        return float(np.mean(rates)) if rates else 0.0

    def add(self, outcome: EpisodeOutcome, frames: list[np.ndarray] | None = None) -> None:
        """A finished episode (and its frames, if filmed)."""
        self.episodes.append(outcome)
        if frames is not None:
            self.frames[outcome.spec] = frames

    def order_like(self, specs: Sequence[TaskSpec]) -> None:
        """Episodes in the order of ``specs`` (they are added as they end); others keep their place first."""
        position: dict[TaskSpec, int] = {}
        for index, spec in enumerate(specs):
            position.setdefault(spec, index)
        self.episodes.sort(key=lambda episode: position.get(episode.spec, -1))

    def unfinished(self, specs: Sequence[TaskSpec]) -> list[TaskSpec]:
        """The ``specs`` with no episode here yet (each spec counted as often as it is listed)."""
        finished: dict[TaskSpec, int] = {}
        for episode in self.episodes:
            finished[episode.spec] = finished.get(episode.spec, 0) + 1
        left = []
        for spec in specs:
            if finished.get(spec, 0):
                finished[spec] -= 1
            else:
                left.append(spec)
        return left


def evaluate(predict: Callable[[ObsBatch], np.ndarray], env: VecEnv, specs: Sequence[TaskSpec],
             progress: Callable[[int], None] | None = None, video_specs: Collection[TaskSpec] = (),
             result: EvalResult | None = None) -> EvalResult:
    """Roll out ``predict`` (obs -> actions ``[B, K, A]``) once from each of ``specs``; the agent-view
    frames of the episodes in ``video_specs`` (what the policy saw) are kept in ``result.frames``. Episodes
    are added to ``result`` (a new one by default) as they end, and listed in the order of ``specs`` once
    all have."""
    result = EvalResult() if result is None else result
    refilling = hasattr(env, "reset_slots") and len(specs) > env.spec.num_envs
    (_evaluate_refilling if refilling else _evaluate_in_waves)(predict, env, specs, progress, set(video_specs), result)
    result.order_like(specs)
    return result


def _evaluate_in_waves(predict: Callable[[ObsBatch], np.ndarray], env: VecEnv, specs: Sequence[TaskSpec],
                       progress: Callable[[int], None] | None, video_specs: set[TaskSpec], result: EvalResult) -> None:
    """``evaluate`` in waves of ``num_envs`` episodes, each wave running until all its slots have ended."""
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
        unsettled = np.zeros(slots, bool)
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
                unsettled |= step.info_flag("init_state_unsettled") & ~done
                ended = step.done & ~done
                done |= step.done
                obs = step.obs
                for i in np.flatnonzero(ended[: len(wave)]):
                    result.add(EpisodeOutcome(wave[i], bool(success[i]), int(steps[i]), instructions[i],
                                              bool(diverged[i]), bool(unsettled[i])), frames.pop(i, None))
                    if progress is not None:
                        progress(1)
                if done[: len(wave)].all():
                    break


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
                        progress: Callable[[int], None] | None, video_specs: set[TaskSpec], result: EvalResult) -> None:
    """``evaluate`` on an env with ``reset_slots``: a slot whose episode ends starts the next init state
    at once (between policy queries), so no slot idles while a wave's slowest episode runs to the step
    limit. Episodes are added to ``result`` as they end."""
    slots = env.spec.num_envs
    queue = list(specs)
    running: list[TaskSpec | None] = [None] * slots
    steps = np.zeros(slots, int)
    success = np.zeros(slots, bool)
    unsettled = np.zeros(slots, bool)
    frames: dict[int, list[np.ndarray]] = {}

    def start(slot: int, obs: ObsBatch) -> None:
        running[slot] = queue.pop(0)
        steps[slot], success[slot], unsettled[slot] = 0, False, False
        if running[slot] in video_specs and running[slot] not in result.frames:
            frames[slot] = [obs.images["agentview"][slot].copy()]

    first = queue[:slots]
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
            loose = step.info_flag("init_state_unsettled")
            for slot in np.flatnonzero(active):
                steps[slot] += 1
                success[slot] |= bool(step.success[slot])
                unsettled[slot] |= bool(loose[slot])
                if slot in frames:
                    frames[slot].append(obs.images["agentview"][slot].copy())
                if step.done[slot]:
                    result.add(EpisodeOutcome(running[slot], bool(success[slot]), int(steps[slot]), instructions[slot],
                                              bool(diverged[slot]), bool(unsettled[slot])), frames.pop(slot, None))
                    running[slot], active[slot] = None, False
                    ended.append(slot)
                    if progress is not None:
                        progress(1)
            if not active.any():
                break
        refill = ended[:len(queue)]
        if refill:
            obs = env.reset_slots(refill, queue[:len(refill)])
            for slot in refill:
                start(slot, obs)
                instructions[slot] = obs.instructions[slot]


def evaluate_restarting(predict: Callable[[ObsBatch], np.ndarray], make_env: Callable[[], VecEnv],
                        specs: Sequence[TaskSpec], progress: Callable[[int], None] | None = None,
                        video_specs: Collection[TaskSpec] = (), result: EvalResult | None = None,
                        on_restart: Callable[[EnvCrashed, int, int], None] | None = None) -> tuple[EvalResult, int]:
    """``(evaluate(...), envs rebuilt)`` in an env from ``make_env`` (closed at the end), rebuilt when it
    crashes (``EnvCrashed``); each rebuilt env runs only the episodes not finished. ``on_restart(error,
    restart, episodes left)`` is called before each rebuild (restart counts from 1). After
    ``MAX_ENV_RESTARTS`` crashes in a row with no episode finished in between, the crash is raised
    (``run_restarting``). ``result`` keeps the finished episodes even then (pass one in to read them)."""
    result = EvalResult() if result is None else result
    env = make_env()
    finished_at_last_crash = len(result.episodes)

    def run() -> EvalResult:
        return evaluate(predict, env, result.unfinished(specs), progress, video_specs, result)

    def progressed() -> bool:
        nonlocal finished_at_last_crash
        finished, finished_at_last_crash = len(result.episodes) > finished_at_last_crash, len(result.episodes)
        return finished

    def crashed(error: EnvCrashed, restart: int) -> None:
        if on_restart is not None:
            on_restart(error, restart, len(result.unfinished(specs)))

    def rebuild_env(_restart: int) -> None:
        nonlocal env
        close_quietly(env)
        env = None  # if building the replacement fails, the finally below must not close the crashed env again
        env = make_env()

    try:
        _, restarts = run_restarting(run, rebuild_env, crashed, progressed)
    except EnvCrashed as error:
        raise EnvCrashed(f"the env crashed {MAX_ENV_RESTARTS + 1} times in a row without finishing an episode; "
                         f"giving up (last: {crash_summary(error)})") from error
    finally:
        if env is not None:
            env.close()
    result.order_like(specs)
    return result, restarts


def crash_summary(error: EnvCrashed) -> str:
    """What crashed, without the advice to API callers that follows it ("close this env and build a new
    one": what ``evaluate_restarting`` does)."""
    return str(error).split(";")[0]
