"""Typed batch containers exchanged between stages. Batch dimension first, always.

Shapes use ``B`` = batch (environments or episodes), ``T`` = time steps, ``H, W`` = image size,
``P`` = proprio dim, ``A`` = action dim (7), ``K`` = action-chunk length, ``L`` = action tokens
per step (``K * A``). Containers validate themselves on construction so a wrong shape fails at the
boundary where it was produced, not three stages later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

Split = Literal["train", "eval"]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class TaskSpec:
    """Which task and which init state an environment resets to."""

    task: str
    init_state_id: int
    split: Split = "train"

    def __post_init__(self) -> None:
        _check(self.split in ("train", "eval"), f"TaskSpec.split must be 'train' or 'eval', got {self.split!r}")
        _check(int(self.init_state_id) >= 0, f"TaskSpec.init_state_id must be >= 0, got {self.init_state_id}")


@dataclass(frozen=True)
class EnvSpec:
    """Static description of a vector env, enough to size a policy and buffers."""

    num_envs: int
    cameras: tuple[str, ...]
    image_size: int
    proprio_dim: int
    action_dim: int
    control_hz: float
    max_episode_steps: int


@dataclass
class ObsBatch:
    """Observations of ``B`` environments at one time step.

    images: camera name -> ``uint8 [B, H, W, 3]``; proprio: ``float32 [B, P]``;
    instructions: ``B`` strings.
    """

    images: dict[str, np.ndarray]
    proprio: np.ndarray
    instructions: list[str]

    def __post_init__(self) -> None:
        batch = len(self.instructions)
        _check(self.proprio.ndim == 2 and self.proprio.shape[0] == batch,
               f"proprio must be [B={batch}, P], got {self.proprio.shape}")
        _check(len(self.images) > 0, "ObsBatch needs at least one camera image")
        for name, image in self.images.items():
            _check(image.dtype == np.uint8 and image.ndim == 4 and image.shape[0] == batch and image.shape[3] == 3,
                   f"image {name!r} must be uint8 [B={batch}, H, W, 3], got {image.dtype} {image.shape}")

    @classmethod
    def from_env_obs(cls, obs: dict[str, np.ndarray], instruction: str) -> "ObsBatch":
        """A batch of one from a single (gymnasium) env's observation dict: every ``<camera>_image``
        entry becomes camera ``<camera>``, plus ``proprio``."""
        images = {key[:-len("_image")]: value[None] for key, value in obs.items() if key.endswith("_image")}
        return cls(images=images, proprio=np.asarray(obs["proprio"])[None], instructions=[instruction])

    @property
    def batch_size(self) -> int:
        return len(self.instructions)

    def select(self, index: np.ndarray | Sequence[int]) -> "ObsBatch":
        index = np.asarray(index)
        return ObsBatch(
            images={k: v[index] for k, v in self.images.items()},
            proprio=self.proprio[index],
            instructions=[self.instructions[i] for i in index],
        )


@dataclass
class StepResult:
    """What ``VecEnv.step`` returns for ``B`` environments.

    reward ``float32 [B]``; terminated ``bool [B]`` (task success or failure state reached);
    truncated ``bool [B]`` (time limit, never set on the step that terminates); success
    ``bool [B]`` (the simulator's success predicate); info: optional per-env extras (may be empty),
    e.g. ``physics_diverged`` (the tabletop suite: the step's physics blew up and the episode was cut).
    """

    obs: ObsBatch
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray
    info: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        batch = self.obs.batch_size
        for name in ("reward", "terminated", "truncated", "success"):
            _check(getattr(self, name).shape == (batch,), f"{name} must be [B={batch}], got {getattr(self, name).shape}")
        _check(not np.any(self.terminated & self.truncated), "an env cannot be both terminated and truncated")

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated

    def info_flag(self, name: str) -> np.ndarray:
        """``bool [B]``: each env's ``info[name]``, False where its info lacks it (or no info was given)."""
        if not self.info:
            return np.zeros(self.obs.batch_size, bool)
        return np.array([bool(extra.get(name, False)) for extra in self.info], bool)


@dataclass
class TrajectoryBatch:
    """``B`` episodes padded to ``T`` steps; ``mask[b, t]`` is True for real steps.

    images: camera -> ``uint8 [B, T, H, W, 3]``; proprio ``float32 [B, T, P]``; instructions ``B``;
    action_tokens ``int64 [B, T, L]``; actions ``float32 [B, T, K, A]``; old_logprobs
    ``float32 [B, T, L]`` (per token, from the rollout policy); rewards ``float32 [B, T]``;
    success ``bool [B]`` (episode outcome); task_specs ``B`` TaskSpecs; policy_version: the
    weight version that collected the batch (stale data is detectable); final_frames ``uint8
    [B, H, W, 3]`` (optional): the agent-view frame after each episode's last step, which a reward
    critic needs to see the outcome; located_points ``float32 [B, T, P, 2]`` (optional): what the
    policy's localiser found at each decision (``PolicyOutput.located_points``); final_wrist_frames
    ``uint8 [B, H, W, 3]`` (optional): the wrist camera's frame at the same moment as final_frames,
    when the env renders it (for a critic that reads the wrist camera); actions_executed ``int32 [B, T]``
    (optional): how many of each decision's ``K`` chunk actions ran before its episode ended (``K`` on all
    but an episode's last decision, 0 on padding), so that the tokens of actions never executed get no
    loss; ``None`` means all of them ran.
    """

    images: dict[str, np.ndarray]
    proprio: np.ndarray
    instructions: list[str]
    action_tokens: np.ndarray
    actions: np.ndarray
    old_logprobs: np.ndarray
    rewards: np.ndarray
    mask: np.ndarray
    success: np.ndarray
    task_specs: list[TaskSpec]
    policy_version: int = 0
    final_frames: np.ndarray | None = None
    located_points: np.ndarray | None = None
    final_wrist_frames: np.ndarray | None = None
    actions_executed: np.ndarray | None = None

    def __post_init__(self) -> None:
        batch, steps = self.mask.shape
        _check(self.mask.dtype == bool, f"mask must be bool, got {self.mask.dtype}")
        _check(len(self.instructions) == batch and len(self.task_specs) == batch,
               "instructions and task_specs need one entry per episode")
        _check(self.proprio.shape[:2] == (batch, steps), f"proprio must be [B, T, P], got {self.proprio.shape}")
        _check(self.action_tokens.shape[:2] == (batch, steps) and self.action_tokens.ndim == 3,
               f"action_tokens must be [B, T, L], got {self.action_tokens.shape}")
        _check(self.old_logprobs.shape == self.action_tokens.shape,
               f"old_logprobs {self.old_logprobs.shape} must match action_tokens {self.action_tokens.shape}")
        _check(self.actions.shape[:2] == (batch, steps) and self.actions.ndim == 4,
               f"actions must be [B, T, K, A], got {self.actions.shape}")
        _check(self.rewards.shape == (batch, steps), f"rewards must be [B, T], got {self.rewards.shape}")
        _check(self.success.shape == (batch,), f"success must be [B], got {self.success.shape}")
        for name, image in self.images.items():
            _check(image.shape[:2] == (batch, steps) and image.dtype == np.uint8,
                   f"image {name!r} must be uint8 [B, T, H, W, 3], got {image.dtype} {image.shape}")
        for name in ("final_frames", "final_wrist_frames"):
            final = getattr(self, name)
            _check(final is None or (final.shape[0] == batch and final.ndim == 4 and final.dtype == np.uint8),
                   f"{name} must be uint8 [B, H, W, 3], got {getattr(final, 'dtype', None)} {getattr(final, 'shape', None)}")
        if self.located_points is not None:
            _check(self.located_points.shape[:2] == (batch, steps) and self.located_points.ndim == 4
                   and self.located_points.shape[3] == 2,
                   f"located_points must be [B, T, P, 2], got {self.located_points.shape}")
        if self.actions_executed is not None:
            chunk = self.actions.shape[2]
            _check(self.actions_executed.shape == (batch, steps), f"actions_executed must be [B, T], got "
                   f"{self.actions_executed.shape}")
            _check(bool(((self.actions_executed >= 0) & (self.actions_executed <= chunk)).all()),
                   f"actions_executed must lie in 0..{chunk} (the chunk's length)")

    def token_mask(self, episode_index: np.ndarray, step_index: np.ndarray) -> np.ndarray:
        """``bool [N, L]``: which action tokens of the (episode, decision) pairs belong to actions that
        ran (the tokens are action-major: ``L / K`` per action). Without ``actions_executed``, all."""
        tokens = self.action_tokens.shape[2]
        if self.actions_executed is None:
            return np.ones((len(episode_index), tokens), bool)
        per_action = tokens // self.actions.shape[2]
        action_of_token = np.arange(tokens) // per_action
        return action_of_token[None, :] < self.actions_executed[episode_index, step_index][:, None]

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(axis=1)


@dataclass
class PolicyOutput:
    """``act`` result: tokens ``int64 [B, L]``, actions ``float32 [B, K, A]``, logprob ``[B, L]`` per token;
    located_points ``float32 [B, P, 2]`` (optional): the image points a localiser VLA found and read,
    which no gradient reaches, so the learner can hand them back to ``log_prob`` instead of finding
    them again."""

    tokens: Any
    actions: np.ndarray
    logprob: Any
    located_points: np.ndarray | None = None


@dataclass
class LogProbOutput:
    """``log_prob`` result with gradients: token_logprob ``[B, L]``, entropy ``[B, L]``."""

    token_logprob: Any
    entropy: Any


@dataclass
class EpisodeFrames:
    """Frames for a reward critic: ``uint8 [B, T, H, W, 3]``, instructions, mask ``bool [B, T]``, and the
    wrist camera's frames of the same moments (``uint8 [B, T, H, W, 3]``, for a critic that reads them)."""

    frames: np.ndarray
    instructions: list[str]
    mask: np.ndarray
    wrist_frames: np.ndarray | None = None


@dataclass
class CriticOutput:
    """Critic scores: progress ``float32 [B, T]`` (signed deltas), done_prob ``float32 [B, T]``."""

    progress: np.ndarray
    done_prob: np.ndarray
