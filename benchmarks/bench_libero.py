"""LIBERO env steps/s with one worker process and with one worker per core (same run), and where a
step's time goes: physics (robosuite's OSC controller + 25 MuJoCo substeps) vs rendering the cameras.

Prints two JSON lines:
- libero_vec_env_steps_per_s with one worker per core vs the same vector env with one worker;
- libero_physics_ms_per_step vs libero_step_ms (the render share is the difference), one env in
  this process, the same task, state and cameras.

    python benchmarks/bench_libero.py [--task libero_spatial_00] [--envs 4] [--steps 20]
                                      [--image-size 128] [--no-wrist]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim_envs  # noqa: E402,F401  (first: sets the rendering defaults before mujoco is imported)

import numpy as np  # noqa: E402
from common import emit  # noqa: E402
from sim_envs.vector import usable_cpus  # noqa: E402
from sim_envs.versions import environment_versions  # noqa: E402
from vla_rl.core.types import TaskSpec  # noqa: E402


def vec_env_steps_per_s(task: str, envs: int, workers: int, steps: int, image_size: int, wrist: bool) -> float:
    from sim_envs.vector import SimVecEnv, VecEnvConfig

    config = VecEnvConfig(suite=task.rsplit("_", 1)[0], num_envs=envs, num_workers=workers, image_size=image_size,
                          wrist_camera=wrist, step_timeout_s=300)
    rng = np.random.default_rng(0)
    with SimVecEnv(config) as venv:
        venv.reset([TaskSpec(task, i, "eval") for i in range(envs)])  # builds the envs: not timed
        start = time.perf_counter()
        for _ in range(steps):
            venv.step(rng.uniform(-0.3, 0.3, (envs, 7)).astype(np.float32))
        return envs * steps / (time.perf_counter() - start)


def physics_and_step_ms(task: str, steps: int, image_size: int, wrist: bool) -> tuple[float, float]:
    """Mean ms per control step without rendering and with it, replaying the same actions from the
    same init state (rendering does not change the physics)."""
    from sim_envs.libero_env import LiberoEnv

    env = LiberoEnv(task, image_size=image_size, wrist_camera=wrist)
    actions = np.random.default_rng(1).uniform(-0.3, 0.3, (steps, 7))
    timings = []
    try:
        for render in (False, True):
            env.reset(options={"init_state_id": 0, "split": "eval"})
            start = time.perf_counter()
            if render:
                for action in actions:
                    env.step(action)
            else:
                with env._cameras_off():
                    for action in actions:
                        env._env.step(action.tolist())
            timings.append(1000 * (time.perf_counter() - start) / steps)
    finally:
        env.close()
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="libero_spatial_00")
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--no-wrist", action="store_true", help="agent-view camera only")
    args = parser.parse_args()
    wrist = not args.no_wrist
    cores = usable_cpus()  # the cores this process may run on (its affinity mask)
    versions = {k: v for k, v in environment_versions().items()
                if k in ("mujoco_version", "robosuite_version", "libero_version", "gl_renderer")}
    setup = {"task": args.task, "envs": args.envs, "steps": args.steps, "image_size": args.image_size,
             "cameras": 2 if wrist else 1, **versions}
    one = vec_env_steps_per_s(args.task, args.envs, 1, args.steps, args.image_size, wrist)
    per_core = vec_env_steps_per_s(args.task, args.envs, cores, args.steps, args.image_size, wrist)
    emit("libero_vec_env_steps_per_s", per_core, "env steps/s", "libero_vec_env_1_worker", one,
         workers=cores, **setup)
    physics, full = physics_and_step_ms(args.task, args.steps, args.image_size, wrist)
    emit("libero_physics_ms_per_step", physics, "ms", "libero_step_ms_with_rendering", full,
         render_ms_per_step=round(full - physics, 2), render_share=round((full - physics) / full, 3), **setup)


if __name__ == "__main__":
    main()
