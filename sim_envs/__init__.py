"""Simulated environments: our MuJoCo tabletop suite (and, later, robosuite and LIBERO adapters).

Importing this package registers every tabletop task with gymnasium as ``vla_rl/<Task>-v0``;
it builds no model and starts no process.
"""

import os

# MuJoCo picks its GL backend when first imported; without a display only EGL/OSMesa work.
# Set here, before any submodule imports mujoco, so spawned env workers get it too.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
# Mesa's software rasteriser (llvmpipe, the CPU renderer) spreads each small frame over all cores:
# at 64 px that is slower than one thread (measured 121-142 vs 149 steps/s) and it fights the
# vector env's one-worker-per-core layout. GPU renderers ignore this variable.
os.environ.setdefault("LP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402

from sim_envs.tasks import TASKS

GYM_NAMESPACE = "vla_rl"


def gym_id(task: str) -> str:
    return f"{GYM_NAMESPACE}/{task}-v0"


def _register_all() -> None:
    for name, task in TASKS.items():
        if gym_id(name) not in gym.registry:
            gym.register(
                id=gym_id(name),
                entry_point="sim_envs.tabletop_env:TabletopEnv",
                kwargs={"task": name},
                # No gymnasium TimeLimit: the env truncates at its own limit (kwarg
                # max_episode_steps) and never reports terminated and truncated together.
            )


_register_all()
# robosuite and LIBERO ids (cheap: neither simulator is imported until an env is made)
from sim_envs import libero_env, robosuite_env  # noqa: E402

libero_env.register_gym_ids()
robosuite_env.register_gym_ids()

__all__ = ["GYM_NAMESPACE", "gym_id", "TASKS"]
