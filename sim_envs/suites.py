"""Environment suites behind one interface, so rollout, GRPO and evaluation never special-case a simulator.

A suite is a named set of tasks whose envs all follow the tabletop env's gymnasium contract:
- ``reset(options={"init_state_id": i, "split": "eval" | "train"})`` -> ``(obs, info)`` with
  ``info["instruction"]``; ``split="eval"`` selects one of the suite's fixed evaluation init states,
  ``split="train"`` one of a training stream disjoint from them;
- ``step(action[7])`` -> ``(obs, reward, terminated, truncated, info)`` with ``info["success"]``;
  ``terminated`` is success, ``truncated`` the task's step limit, never both;
- ``obs`` holds ``agentview_image`` (and ``wrist_image`` when asked) as ``uint8 [H, W, 3]`` and
  ``proprio`` as ``float32 [8]`` (EE position, EE orientation as the rotation vector from "pointing down",
  two finger positions).

The layout is shared; some values are not. The Panda's finger positions (robosuite, LIBERO) are
about (+q, -q), the tabletop arm's are both positive; a rotation action of 1 turns the Panda's hand by
0.5 rad per step and the tabletop arm's by 0.3 rad. A policy moved between suites needs new
normalisation statistics (and the scales in mind), not just the same shapes.

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
# robosuite's Panda hand (LIBERO's too) pointing straight down: half a turn about world x, as (x, y, z, w).
PANDA_DOWN_QUAT_XYZW = np.array([1.0, 0.0, 0.0, 0.0])


def rotation_from_down(quat_xyzw: np.ndarray, down_xyzw: np.ndarray = PANDA_DOWN_QUAT_XYZW) -> np.ndarray:
    """``[..., 4]`` (x, y, z, w) orientations -> ``[..., 3]`` world-frame rotation vectors from ``down_xyzw``
    to them (angle in [0, pi]): the proprio orientation of the robosuite and LIBERO suites.

    Zero when the gripper points straight down and a few tenths of a radian in table work, so it is
    continuous where the raw axis-angle of a downward gripper (a rotation of about pi) is not: that
    one flips between ~+pi*axis and ~-pi*axis when its angle is wrapped into [0, pi], and jumps at 2 pi
    when it is not. The only discontinuity is at half a turn from down (gripper pointing up). ``q``
    and ``-q`` give the same vector."""
    quat = np.asarray(quat_xyzw, dtype=np.float64)
    norm = np.linalg.norm(quat, axis=-1, keepdims=True)
    if not np.all(np.isfinite(quat)) or np.any(norm < 1e-9):
        raise ValueError("quaternions must be finite and non-zero")
    x1, y1, z1, w1 = np.moveaxis(quat / norm, -1, 0)
    x2, y2, z2, w2 = -down_xyzw[0], -down_xyzw[1], -down_xyzw[2], down_xyzw[3]  # conjugate of down
    relative = np.stack([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,  # quat * conj(down), Hamilton product
                         w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                         w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
                         w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2], axis=-1)
    relative = np.where(relative[..., 3:] < 0, -relative, relative)  # w >= 0: angle in [0, pi]
    sin_half = np.linalg.norm(relative[..., :3], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, relative[..., 3:])
    scale = np.where(sin_half > 1e-12, angle / np.maximum(sin_half, 1e-12), 2.0)  # angle / sin(angle/2) -> 2
    return relative[..., :3] * scale


def axis_angle_to_quat_xyzw(rotvec: np.ndarray) -> np.ndarray:
    """``[..., 3]`` axis-angle vectors (any angle, e.g. robosuite's ``quat2axisangle`` with angles up to
    2 pi) -> ``[..., 4]`` unit quaternions (x, y, z, w) of the same rotations."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    # sin(angle/2) / angle -> 1/2 as the angle -> 0
    scale = np.where(angle > 1e-12, np.sin(angle / 2) / np.maximum(angle, 1e-12), 0.5)
    return np.concatenate([rotvec * scale, np.cos(angle / 2)], axis=-1)


def contract_spaces(image_size: int, wrist_camera: bool) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    """The observation and action spaces every suite's env declares."""
    image = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    spaces = {"agentview_image": image,
              "proprio": gym.spaces.Box(-PROPRIO_BOUND, PROPRIO_BOUND, (PROPRIO_DIM,), np.float32)}
    if wrist_camera:
        spaces["wrist_image"] = image
    return gym.spaces.Dict(spaces), gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def step_limit(max_episode_steps: int | None, task_limit: int) -> int:
    """An env's episode step limit: ``None`` is the task's own; below 1 is an error (not a silent default)."""
    if max_episode_steps is None:
        return task_limit
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1 (None: the task's own limit), got {max_episode_steps}")
    return max_episode_steps


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
           "split_and_id", "rotation_from_down", "axis_angle_to_quat_xyzw", "PANDA_DOWN_QUAT_XYZW", "PROPRIO_DIM",
           "PROPRIO_BOUND", "ACTION_DIM"]
