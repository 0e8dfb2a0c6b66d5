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
  says which. Each (EnvRunner, sub-env) draws its own stream of init states (``reset_seed_sequence``): RLlib
  2.60 builds every sub-env of a runner from one ``EnvContext`` (``vector_index`` always 0), and with
  ``debugging(seed=s)`` it resets sub-env ``i`` of runner ``w`` with ``s + w + i``, which repeats across
  runners (runner 1's sub-env 1 is runner 2's sub-env 0), so neither alone tells the sub-envs apart.

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
SEED_FORMULA = ("init states drawn from np.random.SeedSequence([seed, worker_index, sub_env_index]), sub_env_index = "
                "the EnvContext's vector_index + the number of envs built from that same EnvContext before (a "
                "runner's sub-envs 0..n-1 under RLlib's synchronous vectorisation); a reset seed RLlib passes "
                "(seed + worker_index + i) restarts the stream as SeedSequence([seed, worker_index, sub_env_index, "
                "reset_seed])")


@dataclass(frozen=True)
class RLlibEnvConfig:
    """The keys of RLlib's ``env_config`` for a ``vla_rl/<suite>/<Task>`` env."""

    observation: Literal["state", "image"] = option("state", "privileged state vector, or the suite's image dict")
    init_split: Literal["train", "eval"] = option("train", "init states that resets draw from (eval: held-out states)")
    seed: int = option(0, "seed of the init-state streams (one per EnvRunner and sub-env: SEED_FORMULA)")
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


def reset_seed_sequence(seed: int, worker_index: int, sub_env_index: int,
                        reset_seed: int | None = None) -> np.random.SeedSequence:
    """The init-state stream of one sub-env (``SEED_FORMULA``): distinct (worker, sub-env) pairs never share
    one, with or without the reset seed RLlib passes."""
    entropy = [seed, worker_index, sub_env_index] + ([] if reset_seed is None else [reset_seed])
    return np.random.SeedSequence(entropy)


def _sub_env_index(context: Any) -> int:
    """``context``'s ``vector_index`` plus the envs built from this same ``EnvContext`` before: RLlib's
    synchronous vector env builds a runner's sub-envs one after another from one context. A context that
    cannot count (a plain mapping) gives ``vector_index`` (0)."""
    index = getattr(context, "vector_index", 0)
    try:
        built = getattr(context, "_vla_rl_envs_built", 0)
        context._vla_rl_envs_built = built + 1
    except AttributeError:
        return index
    return index + built


class _InitStateResets(gym.Wrapper):
    """Resets to an init state of one split unless ``options`` name one, drawn from this sub-env's own stream."""

    def __init__(self, env: gym.Env, split: str, num_eval_states: int, stream: tuple[int, int, int]):
        super().__init__(env)
        self.split, self.num_eval_states = split, num_eval_states
        self.stream = stream  # (seed, worker_index, sub_env_index)
        self._rng = np.random.default_rng(reset_seed_sequence(*stream))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(reset_seed_sequence(*self.stream, reset_seed=seed))
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
    stream = (config.seed, getattr(context, "worker_index", 0), _sub_env_index(context))
    # known whatever init_split says: a train-split env may be reset to a held-out state (options={"split": "eval"})
    return _InitStateResets(env, config.init_split, spec.num_eval_states(task), stream)


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
           "check_suite_task", "reset_seed_sequence", "NAMESPACE", "SEED_FORMULA"]
