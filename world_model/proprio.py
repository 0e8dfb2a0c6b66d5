"""Training the world model's proprio head on open-loop windows, and on more episodes than the frames.

The policy reads the proprio state (its gripper point is the projected end-effector position), so in
imagination it acts on the proprio the world model predicts. A head trained one step ahead from real
states drifts when it feeds itself: on held-out SFT-policy episodes its end-effector position was a
median 5.6 cm off after 50 steps (session 30), more than Reach's whole 5 cm success radius. Two
remedies, both cheap because the head is a small MLP of proprio and action alone:
- **open-loop windows** (``proprio_rollout_steps`` K): the loss rolls the head K steps from a real state
  with the recorded actions and compares every step with the real states (back-propagating through
  the whole window), so it learns what its own errors lead to;
- **more episodes** (``proprio_train_files``): any collected episode file has proprio and actions, e.g.
  the critic's hundreds of SFT-policy episodes, which the frame model does not need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from world_model.data import executed_actions

@dataclass(frozen=True)
class ProprioTrack:
    """One episode's proprio states ``float32 [T + 1, P]`` and executed actions ``float32 [T, A]``."""

    proprio: np.ndarray
    actions: np.ndarray


def read_proprio_tracks(path: Path) -> list[ProprioTrack]:
    """The proprio and actions of a collected episode file's *training* episodes (held-out ones are
    refused: they measure the world model)."""
    from sim_envs.progress_episodes import read_episodes

    tracks = []
    for episode in read_episodes(Path(path)):
        if episode.split != "train":
            raise ValueError(f"{path} holds {episode.split!r} episodes: only training episodes may train the "
                             "proprio head (the held-out ones measure the world model)")
        if episode.actions is None or episode.proprio is None or len(episode.actions) < 1:
            raise ValueError(f"{path}: an episode without actions or proprio cannot train the proprio head")
        tracks.append(ProprioTrack(np.asarray(episode.proprio, np.float32), np.asarray(episode.actions, np.float32)))
    return tracks


class ProprioWindows:
    """Samples windows of up to ``steps`` actions from episodes' proprio and actions: the start state,
    the state before it, the actions and the real states after each, and a mask that ends a window
    with its episode."""

    def __init__(self, tracks: Sequence[ProprioTrack]):
        if not tracks:
            raise ValueError("no episodes to train the proprio head on")
        self.proprio = [torch.from_numpy(np.asarray(t.proprio, np.float32)) for t in tracks]
        self.actions = [torch.from_numpy(executed_actions(t.actions)) for t in tracks]
        self.starts = np.array([(i, s) for i, a in enumerate(self.actions) for s in range(len(a))])

    def __len__(self) -> int:
        return len(self.starts)

    def sample(self, batch_size: int, steps: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``now`` / ``previous [B, P]``, ``actions [B, K, A]``, ``targets [B, K, P]``, ``mask bool [B, K]``."""
        rows = {"now": [], "previous": [], "actions": [], "targets": [], "mask": []}
        for episode, start in self.starts[rng.integers(0, len(self.starts), batch_size)]:
            proprio, actions = self.proprio[episode], self.actions[episode]
            last = len(actions) - 1
            at = np.minimum(start + np.arange(steps), last)  # padded with the last action; masked out
            rows["now"].append(proprio[start])
            rows["previous"].append(proprio[max(start - 1, 0)])
            rows["actions"].append(actions[at])
            rows["targets"].append(proprio[at + 1])
            rows["mask"].append(torch.from_numpy(start + np.arange(steps) <= last))
        return {name: torch.stack(values) for name, values in rows.items()}


def open_loop_proprio_loss(model, window: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean squared error (normalised units) of the head rolled open loop through the window's actions
    against the real states, over the steps inside each episode. The window may stay on the CPU: the
    head moves its inputs to the model's device."""
    now, previous = window["now"], window["previous"]
    total, count = 0.0, window["mask"].sum().clamp_min(1)
    for step in range(window["actions"].shape[1]):
        predicted = model.next_proprio(now, previous, window["actions"][:, step])
        error = (model.normalise_proprio(predicted) - model.normalise_proprio(window["targets"][:, step])) ** 2
        total = total + (error.mean(-1) * window["mask"][:, step].to(error.device, error.dtype)).sum()
        previous, now = now, predicted
    return total / count


@torch.no_grad()
def open_loop_ee_error(model, tracks: Sequence[ProprioTrack]) -> float:
    """Median distance (metres) between the end-effector position the head reaches open loop over a
    whole episode and the real one at its last step."""
    errors = []
    for track in tracks:
        proprio = torch.from_numpy(np.asarray(track.proprio, np.float32))
        actions = torch.from_numpy(executed_actions(track.actions))
        now = previous = proprio[:1]
        for action in actions:
            previous, now = now, model.next_proprio(now, previous, action[None])
        errors.append(float(torch.linalg.norm(now[0, :3].cpu() - proprio[-1, :3])))
    return float(np.median(errors))


__all__ = ["ProprioTrack", "ProprioWindows", "read_proprio_tracks", "open_loop_proprio_loss", "open_loop_ee_error"]
