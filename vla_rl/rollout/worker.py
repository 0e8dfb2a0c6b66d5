"""A rollout worker: one vectorised env plus one policy copy. Plain Python; ``vla_rl.distributed``
wraps it in a Ray actor, ``LocalRolloutPool`` runs it in-process (tests, debugging).

Weights arrive with a version number; every batch a worker returns carries the version that
collected it, so the learner can refuse stale data.

An env that crashes (``EnvCrashed``: a worker process died or hung) loses the episodes in flight:
the worker builds a new env and collects that wave again from the start, so every requested episode
is returned exactly once; ``RolloutStats.env_restarts`` counts the rebuilds of that ``collect`` call
only (a crash during ``evaluate`` is logged, never added to a training round's stats). A replacement
env is seeded from the round's seed (the one ``collect`` derives from ``sampling_seed``) and the
number of rebuilds so far in the call, so what it samples does not depend on earlier calls (a call
without a ``sampling_seed`` gets a round seed of its own from a count of such calls).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

from vla_rl.core.memory import keep_freed_memory
from vla_rl.core.types import TaskSpec, TrajectoryBatch
from vla_rl.rollout.collector import RolloutStats, collect, concat_batches
from vla_rl.rollout.env_restarts import close_quietly, run_restarting
from vla_rl.rollout.evaluate import EpisodeOutcome, evaluate

log = logging.getLogger(__name__)
T = TypeVar("T")


class RolloutWorker:
    """``eval_env_factory``: the env of greedy evaluation when it must differ from the training env
    (training in a world model, evaluating in the simulator); built on the first evaluation.
    ``max_decisions``: training episodes stop after that many decisions (0 = the task's step limit);
    evaluation always runs to the task's limit."""

    def __init__(self, env_factory: Callable[[], Any], policy_factory: Callable[[], Any], torch_threads: int = 1,
                 seed: int = 0, eval_env_factory: Callable[[], Any] | None = None, max_decisions: int = 0):
        torch.set_num_threads(max(1, torch_threads))
        keep_freed_memory()  # this process renders and runs the policy (vla_rl.core.memory)
        self._env_factory = env_factory
        self.env = env_factory()
        self.policy = policy_factory()
        self.policy.generator.manual_seed(seed)
        self._seed_env(self.env, seed)
        self.seed = seed
        self._round_seed = seed  # the seed of the latest sampling round (replacement envs derive theirs from it)
        self._unseeded_collects = 0  # collect calls without a sampling_seed: each gets a round seed of its own
        self.version = 0
        self._eval_env_factory = eval_env_factory
        self._eval_env = None
        self.max_decisions = max_decisions

    @staticmethod
    def _seed_env(env, seed: int) -> None:
        """Envs with randomness of their own (a world model's sampling noise) get the worker's seed,
        so parallel workers do not imagine the same noise."""
        generator = getattr(env, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)

    @property
    def eval_env(self):
        if self._eval_env_factory is None:
            return self.env
        if self._eval_env is None:
            self._eval_env = self._eval_env_factory()
        return self._eval_env

    @property
    def num_envs(self) -> int:
        return self.env.spec.num_envs

    def slots(self) -> int:
        return self.num_envs

    def set_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        self.policy.model.load_state_dict(state_dict)
        self.version = version
        return version

    def collect(self, specs: Sequence[TaskSpec], sampling_seed: int | None = None
                ) -> tuple[TrajectoryBatch, RolloutStats]:
        """Exploratory rollouts of ``specs`` (in waves of ``num_envs``). ``sampling_seed`` (the trainer's
        iteration and round) reseeds the policy's sampling and the env's own noise from it and this worker's
        seed first, so that what a round samples does not depend on what the process sampled before: a
        resumed run samples what the uninterrupted one would have."""
        if sampling_seed is not None:
            self._round_seed = int(np.random.SeedSequence([self.seed, sampling_seed]).generate_state(1)[0])
            self.policy.generator.manual_seed(self._round_seed)
            self._seed_env(self.env, self._round_seed)
        else:  # nothing to reseed from, but a replacement env must not repeat the previous call's noise
            self._unseeded_collects += 1
            self._round_seed = int(np.random.SeedSequence([self.seed, self._unseeded_collects],
                                                          spawn_key=(1,)).generate_state(1)[0])
        batches, total = [], RolloutStats()
        for start in range(0, len(specs), self.num_envs):
            wave = specs[start:start + self.num_envs]
            (batch, stats), restarts = self._restarting(
                lambda: collect(self.policy, self.env, wave, explore=True, policy_version=self.version,
                                max_decisions=self.max_decisions),
                training_env=True, earlier_restarts=total.env_restarts)
            batches.append(batch)
            total.env_steps += stats.env_steps
            total.decisions += stats.decisions
            total.seconds_policy += stats.seconds_policy
            total.seconds_env += stats.seconds_env
            total.env_restarts += restarts
            total.physics_divergences += stats.physics_divergences
        return concat_batches(batches), total

    def evaluate(self, specs: Sequence[TaskSpec], decoding: str | None = None) -> list[EpisodeOutcome]:
        """Greedy success on ``specs`` (evaluation init states); ``decoding`` (argmax, expected)
        overrides the policy's greedy decoding for this call."""
        training_env = self._eval_env_factory is None
        with self.policy.greedy_decoding_as(decoding):
            episodes, _ = self._restarting(
                lambda: evaluate(self.policy.predict_actions, self.eval_env, specs).episodes, training_env)
        return episodes

    def _restarting(self, run: Callable[[], T], training_env: bool, earlier_restarts: int = 0) -> tuple[T, int]:
        """``(run(), envs rebuilt)``; when its env crashes, build a new env and run it again from the
        start (``run_restarting``). ``earlier_restarts``: rebuilds earlier in the same call (they tell
        replacements apart)."""

        def rebuild_env(restart: int) -> None:
            if training_env:
                close_quietly(self.env)
                self.env = self._env_factory()
                seed = np.random.SeedSequence([self._round_seed, earlier_restarts + restart]).generate_state(1)[0]
                self._seed_env(self.env, int(seed))
            else:
                close_quietly(self._eval_env)
                self._eval_env = self._eval_env_factory()

        return run_restarting(run, rebuild_env, on_crash=lambda error, restart: log.warning(
            "env crashed (%s); building a new one and collecting again", error))

    def ping(self) -> float:
        return time.time()

    def close(self) -> None:
        self.env.close()
        if self._eval_env is not None:
            self._eval_env.close()


def split_evenly(items: Sequence, parts: int) -> list[list]:
    """``items`` in ``parts`` contiguous chunks whose sizes differ by at most one."""
    edges = np.linspace(0, len(items), parts + 1).round().astype(int)
    return [list(items[a:b]) for a, b in zip(edges[:-1], edges[1:])]


class LocalRolloutPool:
    """Rollout workers in this process, run one after another (same interface as the Ray pool)."""

    def __init__(self, env_factory: Callable[[], Any], policy_factory: Callable[[], Any], num_workers: int = 1,
                 torch_threads: int = 1, seed: int = 0, eval_env_factory: Callable[[], Any] | None = None,
                 max_decisions: int = 0):
        self.workers = [RolloutWorker(env_factory, policy_factory, torch_threads, seed + i, eval_env_factory,
                                      max_decisions) for i in range(num_workers)]
        self.node_ids = ["local"] * num_workers

    @property
    def slots_per_worker(self) -> int:
        return self.workers[0].num_envs

    def set_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        for worker in self.workers:
            worker.set_weights(state_dict, version)

    def collect(self, specs_per_worker: Sequence[Sequence[TaskSpec]], sampling_seed: int | None = None
                ) -> list[tuple[TrajectoryBatch, RolloutStats]]:
        return [worker.collect(specs, sampling_seed) for worker, specs in zip(self.workers, specs_per_worker) if specs]

    def evaluate(self, specs: Sequence[TaskSpec], decoding: str | None = None) -> list[EpisodeOutcome]:
        shares = split_evenly(specs, len(self.workers))
        return [outcome for worker, share in zip(self.workers, shares) if share
                for outcome in worker.evaluate(share, decoding)]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
