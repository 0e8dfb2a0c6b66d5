"""Environment suites behind one interface, so rollout, GRPO and evaluation never special-case a simulator.

A suite is a named set of tasks whose envs all follow the tabletop env's gymnasium contract:
- ``reset(options={"init_state_id": i, "split": "eval" | "train"})`` -> ``(obs, info)`` with
  ``info["instruction"]``; ``split="eval"`` selects one of the suite's fixed evaluation init states,
  ``split="train"`` one of a training stream disjoint from them;
- ``step(action[7])`` -> ``(obs, reward, terminated, truncated, info)`` with ``info["success"]``;
  ``terminated`` is success, ``truncated`` the task's step limit, never both;
- ``obs`` holds ``agentview_image`` (and ``wrist_image`` when asked) as ``uint8 [H, W, 3]`` and
  ``proprio`` as ``float32 [8]`` (EE position, EE orientation as axis-angle, two finger positions).

The registry maps a suite name to a ``Suite``; heavy simulators (robosuite, LIBERO) are imported only
when an env is built or a LIBERO task list is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np

PROPRIO_DIM = 8  # EE position (3), EE orientation as axis-angle (3), two finger positions (2)
PROPRIO_BOUND = 4.0  # metres and radians: real values stay well inside
ACTION_DIM = 7  # EE delta position (3), EE delta rotation (3), gripper (-1 open, +1 close)


def contract_spaces(image_size: int, wrist_camera: bool) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    """The observation and action spaces every suite's env declares."""
    image = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    spaces = {"agentview_image": image,
              "proprio": gym.spaces.Box(-PROPRIO_BOUND, PROPRIO_BOUND, (PROPRIO_DIM,), np.float32)}
    if wrist_camera:
        spaces["wrist_image"] = image
    return gym.spaces.Dict(spaces), gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def checked_action(action) -> np.ndarray:
    """``action`` as float64 ``[7]``, or a ValueError for a wrong shape or a NaN/inf entry."""
    action = np.asarray(action, dtype=np.float64)
    if action.shape != (ACTION_DIM,):
        raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
    if not np.all(np.isfinite(action)):
        raise ValueError(f"action contains NaN or inf: {action}")
    return action


def split_and_id(options: dict[str, Any] | None) -> tuple[str, int | None]:
    """``(split, init_state_id)`` from reset options; any other key is a ValueError."""
    options = dict(options or {})
    split = options.pop("split", "train")
    init_state_id = options.pop("init_state_id", None)
    if options:
        raise ValueError(f"unknown reset options {sorted(options)}; valid: init_state_id, split")
    return split, init_state_id


@dataclass(frozen=True)
class Suite:
    """One environment suite.

    ``tasks`` lists task names; ``make_env(task, image_size, wrist_camera)`` builds one gymnasium env (and takes
    ``antialias`` where ``antialias_optional``);
    ``num_eval_states(task)`` counts the fixed evaluation init states; ``max_steps(task)`` is the
    step limit; ``describe()`` gives one row per task for ``vla-rl envs list``.
    """

    name: str
    summary: str
    control_hz: int
    tasks: Callable[[], list[str]]
    make_env: Callable[..., gym.Env]
    num_eval_states: Callable[[str], int]
    max_steps: Callable[[str], int]
    describe: Callable[[], list[dict[str, Any]]]
    init_state_provenance: dict[str, Any] = field(default_factory=dict)  # recorded in every eval report
    default_image_size: int = 64
    env_memory_mb: int = 50  # resident memory of one built env (measured), for the vector env's memory check
    envs_per_slot: int = 8  # envs a vector-env slot keeps built (one per task) before closing the oldest
    antialias_optional: bool = False  # make_env takes antialias=False (observations rendered without multisampling)

    def check_task(self, task: str) -> None:
        if task not in self.tasks():
            raise KeyError(f"unknown task {task!r} for suite {self.name!r}; valid tasks: {', '.join(self.tasks())}")


_SUITES: dict[str, Callable[[], Suite]] = {}


def register_suite(name: str, loader: Callable[[], Suite]) -> None:
    """Register a suite under ``name``; ``loader`` builds it on first use (cheaply, importing no simulator)."""
    _SUITES[name] = loader


def suite_names() -> list[str]:
    _register_builtin()
    return list(_SUITES)


def get_suite(name: str) -> Suite:
    _register_builtin()
    if name not in _SUITES:
        raise KeyError(f"unknown suite {name!r}; valid suites: {', '.join(_SUITES)}")
    return _SUITES[name]()


def _register_builtin() -> None:
    if _SUITES:
        return
    from sim_envs import libero_env, robosuite_env, tabletop_env

    register_suite("tabletop", tabletop_env.tabletop_suite)
    register_suite("robosuite", robosuite_env.robosuite_suite)
    for libero_suite in libero_env.LIBERO_SUITES:
        register_suite(libero_suite, lambda name=libero_suite: libero_env.libero_suite(name))


__all__ = ["Suite", "register_suite", "suite_names", "get_suite", "contract_spaces", "checked_action",
           "split_and_id", "PROPRIO_DIM", "PROPRIO_BOUND", "ACTION_DIM"]
