"""Training data of the world model: recorded trajectories and a sampler of transitions.

A ``Trajectory`` is one episode as the simulator produced it (frames before and after every
action). The sampler draws transitions ``(context frames, proprio, action) -> (next frame, next
proprio)`` uniformly over all steps of all trajectories; the context of an early step repeats the
episode's first frame, as ``VideoWorldModel.init_state`` does at the start of imagination.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# the simulators clip every action to this range before the arm executes it (sim_envs.arm.Arm.set_action, and
# the robosuite and LIBERO adapters): the world model learns from, and imagines, the action the arm executes
ACTION_LIMIT = 1.0


def executed_actions(actions) -> np.ndarray:
    """``actions [..., A]`` as the simulator executes them: clipped to +-``ACTION_LIMIT``, float32. A policy that
    emits larger actions moves the imagined arm as far as the real one, and no farther."""
    return np.clip(np.asarray(actions, np.float32), -ACTION_LIMIT, ACTION_LIMIT)


@dataclass
class Trajectory:
    """frames ``uint8 [T + 1, H, W, C]`` (C = 3 per camera); proprio ``float32 [T + 1, P]``;
    actions ``float32 [T, A]`` (executed); success ``bool [T + 1]`` (the simulator's predicate)."""

    frames: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    instruction: str
    task: str = ""
    success: np.ndarray | None = None
    behaviour: str = ""
    init_state_id: int = -1

    def __post_init__(self) -> None:
        steps = len(self.actions)
        if steps < 1 or len(self.frames) != steps + 1 or len(self.proprio) != steps + 1:
            raise ValueError(f"a trajectory needs T + 1 frames and proprio states for T >= 1 actions; got "
                             f"{len(self.frames)} frames, {len(self.proprio)} proprio, {steps} actions")
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4:
            raise ValueError(f"frames must be uint8 [T + 1, H, W, C], got {self.frames.dtype} {self.frames.shape}")
        if not np.all(np.isfinite(self.actions)) or not np.all(np.isfinite(self.proprio)):
            raise ValueError("a trajectory has non-finite actions or proprio states")

    @property
    def succeeded(self) -> bool:
        return bool(self.success is not None and self.success.any())


CAMERAS = ("agentview", "wrist")


def trajectory_of_episode(episode, cameras: tuple[str, ...] = ("agentview",), source: str = "") -> Trajectory:
    """A collected episode (``sim_envs.progress_episodes.ProgressEpisode``) as a ``Trajectory`` whose frames
    are the ``cameras`` stacked along the channels, in order, as the world model predicts them."""
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown:
        raise ValueError(f"unknown cameras {unknown}; valid: {', '.join(CAMERAS)}")
    if episode.actions is None:
        raise ValueError(f"{source} has episodes without actions (collected by an older version); "
                         "collect again with `vla-rl wm collect`")
    if "wrist" in cameras and episode.wrist_frames is None:
        raise ValueError(f"{source} has episodes without the wrist camera's frames, which the world model "
                         f"predicts; collect again with `vla-rl wm collect` (without --no-wrist)")
    views = {"agentview": episode.frames, "wrist": episode.wrist_frames}
    frames = np.concatenate([views[c] for c in cameras], axis=-1) if len(cameras) > 1 else views[cameras[0]]
    return Trajectory(frames=frames, proprio=episode.proprio, actions=episode.actions,
                      instruction=episode.instruction, task=episode.task, success=episode.success,
                      behaviour=episode.behaviour, init_state_id=episode.init_state_id)


@dataclass
class TransitionBatch:
    """context ``uint8 [B, S, H, W, C]``, proprio / previous_proprio / target_proprio ``[B, P]``,
    actions ``[B, A]``, target ``uint8 [B, H, W, C]``, instructions ``B``."""

    context: torch.Tensor
    proprio: torch.Tensor
    previous_proprio: torch.Tensor
    actions: torch.Tensor
    instructions: list[str]
    target: torch.Tensor
    target_proprio: torch.Tensor


class TransitionSampler:
    """All frames of ``trajectories`` in one tensor; samples random transitions."""

    def __init__(self, trajectories: list[Trajectory], context_frames: int):
        if not trajectories:
            raise ValueError("no trajectories to train the world model on")
        shapes = {t.frames.shape[1:] for t in trajectories}
        if len(shapes) > 1:
            raise ValueError(f"trajectories have different frame shapes: {sorted(shapes)}")
        self.context_frames = context_frames
        self.frames = torch.from_numpy(np.concatenate([t.frames for t in trajectories]))
        self.proprio = torch.from_numpy(np.concatenate([t.proprio for t in trajectories]).astype(np.float32))
        self.actions = torch.from_numpy(executed_actions(np.concatenate([t.actions for t in trajectories])))
        starts = np.cumsum([0] + [len(t.frames) for t in trajectories[:-1]])
        # global frame index of each transition's current frame, and of its episode's first frame
        self.current = np.concatenate([start + np.arange(len(t.actions)) for start, t in zip(starts, trajectories)])
        self.first = np.concatenate([np.full(len(t.actions), start) for start, t in zip(starts, trajectories)])
        self.action_index = np.arange(len(self.current))
        self.instructions = [t.instruction for t in trajectories for _ in range(len(t.actions))]
        self.longest_episode = max(len(t.actions) for t in trajectories)  # in actions

    def __len__(self) -> int:
        return len(self.current)

    def proprio_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (floored, so a constant dimension does not blow up) of the proprio states."""
        return self.proprio.mean(0), self.proprio.std(0).clamp_min(1e-3)

    def batch(self, index: np.ndarray) -> TransitionBatch:
        current, first = self.current[index], self.first[index]
        offsets = np.arange(-self.context_frames + 1, 1)
        context = np.maximum(current[:, None] + offsets[None], first[:, None])  # [B, S], oldest first
        previous = np.maximum(current - 1, first)
        return TransitionBatch(
            context=self.frames[torch.from_numpy(context)], proprio=self.proprio[current],
            previous_proprio=self.proprio[previous], actions=self.actions[self.action_index[index]],
            instructions=[self.instructions[i] for i in index], target=self.frames[current + 1],
            target_proprio=self.proprio[current + 1],
        )

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        return self.batch(rng.integers(0, len(self), batch_size))

    def sample_windows(self, batch_size: int, steps: int, rng: np.random.Generator) -> np.ndarray:
        """Indices ``s`` of transitions that have ``steps`` more transitions after them in the same
        episode (so ``s + steps`` is the transition ``steps`` actions later); ``[batch_size]``."""
        if steps < 1:
            raise ValueError(f"a window needs steps >= 1, got {steps}")
        valid = np.nonzero(self.first[:-steps] == self.first[steps:])[0] if steps < len(self) else []
        if not len(valid):
            raise ValueError(f"no episode has more than {steps} actions")
        return valid[rng.integers(0, len(valid), batch_size)]


__all__ = ["Trajectory", "TransitionBatch", "TransitionSampler"]
