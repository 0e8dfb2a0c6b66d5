"""Every task of every environment suite as an RLlib environment.

``register_rllib_envs()`` registers each task with ``ray.tune.registry.register_env`` under

    vla_rl/<suite>/<Task>        e.g. vla_rl/tabletop/Reach, vla_rl/robosuite/Lift,
                                      vla_rl/libero_spatial/libero_spatial_03

(``rllib_env_name(suite, task)``; the suites are those of ``sim_envs.suites``). RLlib calls the
creator with its ``env_config`` (an ``EnvContext``), whose keys are the fields of ``RLlibEnvConfig``
(unknown keys are an error listing the valid ones), and gets a plain ``gymnasium.Env``:

- ``observation: state`` (default): ``Box float32 [D]``, the privileged simulator state of
  ``sim_envs.state_obs`` (proprio, object poses, goal placement, articulated joints);
  ``observation: image``: the suite's own ``Dict`` (``agentview_image`` uint8, ``proprio``), for a
  custom RLModule;
- action ``Box float32 [7]`` in ``[-1, 1]`` (EE delta position, EE delta rotation, gripper), the suites' own;
- resets draw an init state of ``init_split`` (``train`` by default; ``eval`` = the fixed held-out
  states, for evaluation only) unless ``reset(options=...)`` names one; ``info["init_state_id"]``
  says which. The first reset without a seed is seeded with ``seed + 1000 * worker_index + vector_index``.

Registering imports neither robosuite nor LIBERO: a suite's simulator is imported when an env of it
is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from vla_rl.core.config import from_dict, option

NAMESPACE = "vla_rl"


@dataclass(frozen=True)
class RLlibEnvConfig:
    """The keys of RLlib's ``env_config`` for a ``vla_rl/<suite>/<Task>`` env."""

    observation: Literal["state", "image"] = option("state", "privileged state vector, or the suite's image dict")
    init_split: Literal["train", "eval"] = option("train", "init states that resets draw from (eval: held-out states)")
    seed: int = option(0, "seed of the first reset (offset by 1000 * worker_index + vector_index)")
    reward: Literal["success", "progress"] = option(
        "success", "success: 1.0 on the success step (the suite's reward); progress: that plus the change of the "
        "task's dense progress each step (tabletop only)")
    max_episode_steps: int = option(0, "step limit (0 = the task's own)")
    image_size: int = option(64, "camera resolution of observation=image")
    wrist_camera: bool = option(False, "add the wrist camera (observation=image only)")

    def __post_init__(self):
        if self.max_episode_steps < 0:
            raise ValueError(f"max_episode_steps must be >= 0, got {self.max_episode_steps}")


def rllib_env_name(suite: str, task: str) -> str:
    return f"{NAMESPACE}/{suite}/{task}"


def parse_rllib_env_name(name: str) -> tuple[str, str]:
    """``"vla_rl/tabletop/Reach"`` -> ``("tabletop", "Reach")``; a KeyError for an unknown suite or task."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != NAMESPACE:
        raise KeyError(f"RLlib env names look like {NAMESPACE}/<suite>/<Task>, got {name!r}")
    check_suite_task(parts[1], parts[2])
    return parts[1], parts[2]


def check_suite_task(suite: str, task: str) -> None:
    """A KeyError listing the valid names for an unknown suite or task (imports no simulator)."""
    from sim_envs.suites import get_suite

    get_suite(suite).check_task(task)


class _InitStateResets(gym.Wrapper):
    """Resets to an init state of one split unless ``options`` name one; seeds the first reset."""

    def __init__(self, env: gym.Env, split: str, num_eval_states: int, first_seed: int):
        super().__init__(env)
        self.split, self.num_eval_states = split, num_eval_states
        self._first_seed: int | None = first_seed
        self._rng = np.random.default_rng(first_seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._first_seed is not None:
            seed = self._first_seed
        self._first_seed = None
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        options = dict(options or {})
        options.setdefault("split", self.split)
        if "init_state_id" not in options:
            high = self.num_eval_states if options["split"] == "eval" else 2**31 - 1
            options["init_state_id"] = int(self._rng.integers(0, high))
        return self.env.reset(seed=seed, options=options)


class _ProgressReward(gym.Wrapper):
    """Reward = the suite's success reward + the step's change of ``info["progress"]`` (dense shaping)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._progress = float(info["progress"])
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        progress = float(info["progress"])
        reward, self._progress = float(reward) + progress - self._progress, progress
        return obs, reward, terminated, truncated, info


def make_rllib_env(suite: str, task: str, env_config: dict[str, Any] | None = None) -> gym.Env:
    """The env of ``vla_rl/<suite>/<task>`` for an RLlib ``env_config`` (or any mapping of its keys)."""
    from sim_envs.state_obs import make_state_env
    from sim_envs.suites import get_suite

    context = env_config if env_config is not None else {}
    config = from_dict(RLlibEnvConfig, dict(context))
    spec = get_suite(suite)
    spec.check_task(task)
    if config.reward == "progress" and suite != "tabletop":
        raise ValueError(f"reward=progress needs the tabletop suite's dense progress; suite {suite!r} has none")
    steps = config.max_episode_steps or None
    if config.observation == "state":
        env = make_state_env(suite, task, max_episode_steps=steps)
    else:
        env = spec.make_env(task, image_size=config.image_size, wrist_camera=config.wrist_camera,
                            max_episode_steps=steps)
    if config.reward == "progress":
        env = _ProgressReward(env)
    worker, vector = getattr(context, "worker_index", 0), getattr(context, "vector_index", 0)
    num_eval = spec.num_eval_states(task) if config.init_split == "eval" else 0
    return _InitStateResets(env, config.init_split, num_eval, config.seed + 1000 * worker + vector)


def register_rllib_envs(suites: list[str] | None = None) -> list[str]:
    """Register every task of ``suites`` (default: all of ``sim_envs.suites``) with RLlib; returns the names."""
    import functools

    from ray.tune.registry import register_env

    from sim_envs.suites import get_suite, suite_names

    names = []
    for suite in suites if suites is not None else suite_names():
        for task in get_suite(suite).tasks():  # raises listing the valid suites for an unknown one
            name = rllib_env_name(suite, task)
            register_env(name, functools.partial(make_rllib_env, suite, task))
            names.append(name)
    return names


__all__ = ["RLlibEnvConfig", "register_rllib_envs", "make_rllib_env", "rllib_env_name", "parse_rllib_env_name",
           "check_suite_task", "NAMESPACE"]
