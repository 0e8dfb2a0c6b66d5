"""The contracts between the pipeline's parts (structural typing: implement, don't inherit)."""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from vla_rl.core.types import CriticOutput, EnvSpec, EpisodeFrames, LogProbOutput, ObsBatch, PolicyOutput, StepResult, TaskSpec


class EnvCrashed(RuntimeError):
    """Raised by a ``VecEnv`` that can no longer step (a worker process died or hung); the episodes
    in flight are lost and the remedy is a new env (``RolloutWorker`` builds one and re-collects)."""


@runtime_checkable
class VecEnv(Protocol):
    """``B`` environments stepped together. Autoreset is off: an env whose episode ended keeps
    returning its final observation with zero reward and its done flag until the next reset."""

    spec: EnvSpec

    def reset(self, tasks: Sequence[TaskSpec]) -> ObsBatch: ...

    def step(self, actions: np.ndarray) -> StepResult: ...  # actions float32 [B, A]; chunks are stepped by the rollout

    def close(self) -> None: ...


@runtime_checkable
class Policy(Protocol):
    def act(self, obs: ObsBatch, *, explore: bool) -> PolicyOutput: ...

    def log_prob(self, obs: ObsBatch, tokens: Any) -> LogProbOutput: ...


@runtime_checkable
class RewardCritic(Protocol):
    def score(self, episodes: EpisodeFrames) -> CriticOutput: ...


@runtime_checkable
class WorldModel(Protocol):
    def init_state(self, obs: ObsBatch) -> Any: ...

    def predict(self, state: Any, actions: Any) -> tuple[Any, ObsBatch]: ...


__all__ = ["VecEnv", "Policy", "RewardCritic", "WorldModel", "StepResult"]
