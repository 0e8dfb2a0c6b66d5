"""Imagined copies of labelled training episodes: data that teaches the critic to read a world model's frames.

The critic learns "done" from real frames. On imagined frames (blurred near contact, the arm a little
off) its done probability stays low even where the real episode succeeded, so its verdicts on
imagined rollouts barely beat the base rate (docs/world_model.md, sessions 22-23). Here each training
episode is imagined open loop from its first real frame and its recorded actions, and the imagined
frames keep the episode's simulator labels (progress, success, the localiser's pixels, the other
objectives' progress): frame t of the imagined copy is what the world model believes the real frame t
looks like. A critic trained on these beside the real episodes (``extra_train_files``) learns what
success looks like *in imagination*.

Only training episodes may be imagined: the held-out ones measure the imagined verdicts' agreement
with the simulator and must stay unseen.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from sim_envs.progress_episodes import ProgressEpisode

from world_model.data import trajectory_of_episode
from world_model.evaluate import imagine_open_loop


def imagine_labelled_episodes(model, episodes: Sequence[ProgressEpisode], copies: int = 1, seed: int = 0,
                              sampling_steps: int | None = None, show_progress: bool = True) -> list[ProgressEpisode]:
    """``copies`` imagined versions of each episode (sampling seeds ``seed``, ``seed + 1``, ...), with the
    real episode's labels and the behaviour renamed ``imagined-<behaviour>``. The model must predict the
    agent view; the wrist frames are the imagined ones when it predicts the wrist camera, else None."""
    cameras = tuple(model.config.cameras)
    if "agentview" not in cameras:
        raise ValueError(f"the world model predicts {list(cameras)}; the critic needs the agent view")
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    held_out = sorted({e.split for e in episodes if e.split != "train"})
    if held_out:
        raise ValueError(f"only training episodes may be imagined for the critic (got split {held_out}): the "
                         "held-out ones measure how well its imagined verdicts agree with the simulator")
    trajectories = [trajectory_of_episode(e, cameras, "the episodes") for e in episodes]
    agent = 3 * cameras.index("agentview")
    wrist = 3 * cameras.index("wrist") if "wrist" in cameras else None
    imagined_episodes = []
    for copy in range(copies):
        imagined = imagine_open_loop(model, trajectories, sampling_steps, seed + copy, show_progress=show_progress)
        for episode, frames in zip(episodes, imagined):
            imagined_episodes.append(replace(
                episode, behaviour=f"imagined-{episode.behaviour}", frames=frames[..., agent:agent + 3].copy(),
                wrist_frames=None if wrist is None else frames[..., wrist:wrist + 3].copy()))
    return imagined_episodes


__all__ = ["imagine_labelled_episodes"]
