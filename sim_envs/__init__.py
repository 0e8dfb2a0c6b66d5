"""Simulated environments: our MuJoCo tabletop suite (and, later, robosuite and LIBERO adapters).

Importing this package registers every tabletop task with gymnasium as ``vla_rl/<Task>-v0``;
it builds no model and starts no process.
"""

import gymnasium as gym

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
                max_episode_steps=task.max_steps,
            )


_register_all()

__all__ = ["GYM_NAMESPACE", "gym_id", "TASKS"]
