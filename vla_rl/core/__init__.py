"""Typed containers, Protocols, the config system and the demo-file format shared by every package.

Light on purpose: numpy, PyYAML and h5py only; no simulator, no model, no Ray."""

from vla_rl.core.config import ConfigError, load_config, option
from vla_rl.core.protocols import EnvCrashed, Policy, RewardCritic, VecEnv, WorldModel
from vla_rl.core.types import (
    CriticOutput,
    EnvSpec,
    EpisodeFrames,
    LogProbOutput,
    ObsBatch,
    PolicyOutput,
    StepResult,
    TaskSpec,
    TrajectoryBatch,
)

__all__ = [
    "ConfigError", "load_config", "option", "EnvCrashed", "Policy", "RewardCritic", "VecEnv", "WorldModel", "CriticOutput",
    "EnvSpec", "EpisodeFrames", "LogProbOutput", "ObsBatch", "PolicyOutput", "StepResult", "TaskSpec",
    "TrajectoryBatch",
]
