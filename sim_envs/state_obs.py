"""Privileged-state observations: a flat ``float32`` vector of the simulator's state instead of images.

For baselines that learn from the simulator's true state (e.g. RLlib PPO, ``vla-rl baseline rllib-ppo``),
a reference point for how many env steps a task needs when perception is solved. Nothing here is
Ray-specific; any gymnasium tool can use ``PrivilegedStateObservation``.

The vector is read from the env's MuJoCo model and data after every reset and step, in this order:

1. ``proprio`` (8): the suite's own proprio (EE position, EE orientation as axis-angle, fingers);
2. per *object body* (every body attached to the world that is not part of the robot, in model
   order): its world position (3), then its orientation quaternion (w, x, y, z; 4) if it moves freely.
   This holds the movable objects (blocks, cans, nuts) and the per-episode placement of static ones
   (target squares, trays, buttons, cabinets, bins), i.e. the goal;
3. the position of every other non-robot joint (drawer slides, button travel, door hinges), in model order;
4. the layout's goal indices when the env has a tabletop ``layout`` (``target``, ``base``; -1 when
   absent), which say *which* object the instruction names where that is not always object 0
   (OpenDrawer's drawer).

The robot is found without names: the subtrees holding actuated joints. The vector's length is fixed
per task (the MuJoCo model never changes after construction) and clipped to ``STATE_BOUND``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from sim_envs.suites import PROPRIO_DIM
from sim_envs.tabletop_env import TabletopEnv

STATE_BOUND = 10.0  # metres, radians, quaternion entries: real values stay far inside
LAYOUT_INDICES = ("target", "base")
PROPRIO_NAMES = ("ee.x", "ee.y", "ee.z", "ee.rx", "ee.ry", "ee.rz", "finger.left", "finger.right")


def mujoco_handles(env: gym.Env) -> tuple[mujoco.MjModel, mujoco.MjData]:
    """The raw ``MjModel`` and ``MjData`` of a tabletop, robosuite or LIBERO env (wrappers are unwrapped)."""
    base = env.unwrapped
    if isinstance(base, TabletopEnv):
        return base.model, base.data
    sim = None
    if getattr(base, "robosuite_env", None) is not None:  # sim_envs.robosuite_env.RobosuiteEnv
        sim = base.robosuite_env.sim
    elif getattr(base, "_env", None) is not None:  # sim_envs.libero_env.LiberoEnv (robosuite underneath)
        sim = base._env.env.sim
    if sim is None:
        raise TypeError(f"no MuJoCo state to read in {type(base).__name__}; expected a tabletop, robosuite or "
                        "LIBERO env")
    return sim.model._model, sim.data._data


class StateLayout:
    """Which parts of ``MjData`` form the state vector of one model (see the module docstring)."""

    def __init__(self, model: mujoco.MjModel, with_layout_indices: bool):
        robot_roots = {int(model.body_rootid[model.jnt_bodyid[model.actuator_trnid[a, 0]]])
                       for a in range(model.nu) if model.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT}
        robot_roots.discard(0)
        self.bodies = [b for b in range(1, model.nbody) if model.body_parentid[b] == 0 and b not in robot_roots]
        free = {int(model.jnt_bodyid[j]) for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE}
        self.free_bodies = [b for b in self.bodies if b in free]
        self.joint_qpos = [int(model.jnt_qposadr[j]) for j in range(model.njnt)
                           if model.jnt_type[j] in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
                           and int(model.body_rootid[model.jnt_bodyid[j]]) not in robot_roots]
        self.with_layout_indices = with_layout_indices
        self.names = ([f"proprio.{name}" for name in PROPRIO_NAMES]
                      + [f"{model.body(b).name}.{part}" for b in self.bodies
                         for part in ("x", "y", "z") + (("qw", "qx", "qy", "qz") if b in free else ())]
                      + [f"{model.joint(j).name}.qpos" for j in range(model.njnt)
                         if int(model.jnt_qposadr[j]) in self.joint_qpos]
                      + ([f"layout.{key}" for key in LAYOUT_INDICES] if with_layout_indices else []))

    @property
    def dim(self) -> int:
        return len(self.names)

    def read(self, data: mujoco.MjData, proprio: np.ndarray, layout: dict[str, Any] | None) -> np.ndarray:
        parts = [np.asarray(proprio, dtype=np.float64).reshape(PROPRIO_DIM)]
        for body in self.bodies:
            parts.append(data.xpos[body])
            if body in self.free_bodies:
                parts.append(data.xquat[body])
        parts.append(data.qpos[self.joint_qpos])
        if self.with_layout_indices:
            parts.append([float((layout or {}).get(key, -1)) for key in LAYOUT_INDICES])
        state = np.concatenate([np.ravel(p) for p in parts])
        return np.clip(state, -STATE_BOUND, STATE_BOUND).astype(np.float32)


class PrivilegedStateObservation(gym.ObservationWrapper):
    """Replace a suite env's observation dict by the privileged state vector (``Box`` float32 ``[D]``).

    ``state_layout.names`` names every entry. ``info`` and the action space are the inner env's.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._model, self._data = mujoco_handles(env)
        self.state_layout = StateLayout(self._model, with_layout_indices=isinstance(env.unwrapped, TabletopEnv))
        self.observation_space = gym.spaces.Box(-STATE_BOUND, STATE_BOUND, (self.state_layout.dim,), np.float32)

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        layout = getattr(self.env.unwrapped, "layout", None)
        return self.state_layout.read(self._data, observation["proprio"], layout)


class StateOnlyTabletopEnv(TabletopEnv):
    """A tabletop env whose observation dict holds only ``proprio``: it never renders a camera
    (rendering is ~95% of a step's cost on a CPU), for ``PrivilegedStateObservation`` on top.
    ``render()`` and ``render_camera()`` still work."""

    def __init__(self, task: str, max_episode_steps: int | None = None):
        super().__init__(task, max_episode_steps=max_episode_steps)
        self.observation_space = gym.spaces.Dict({"proprio": self.observation_space["proprio"]})

    def _observation(self) -> dict[str, np.ndarray]:
        return {"proprio": self.arm.proprio()}


def make_state_env(suite: str, task: str, max_episode_steps: int | None = None, image_size: int = 32) -> gym.Env:
    """The privileged-state env of one task of any suite.

    Tabletop tasks skip rendering altogether; robosuite and LIBERO adapters still render their
    camera each step (at ``image_size``, the smallest they accept by default) because their
    constructors always enable it.
    """
    from sim_envs.suites import get_suite

    spec = get_suite(suite)
    spec.check_task(task)
    if suite == "tabletop":
        env = StateOnlyTabletopEnv(task, max_episode_steps=max_episode_steps)
    else:
        env = spec.make_env(task, image_size=image_size, max_episode_steps=max_episode_steps)
    return PrivilegedStateObservation(env)


__all__ = ["PrivilegedStateObservation", "StateLayout", "StateOnlyTabletopEnv", "make_state_env", "mujoco_handles",
           "STATE_BOUND"]
