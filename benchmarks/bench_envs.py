"""Env steps/s of the vectorised tabletop suite against (a) a sequential single-env loop of the same
scene and (b) a bare MuJoCo step+render loop (no IK, no wrappers), all measured in this run.

Prints three JSON lines:
- vec_env_steps_per_s vs sequential_env_steps_per_s (target ratio >= 1.6 on 2 cores);
- vec_env_steps_per_s_per_core vs bare_mujoco_step_render_per_s (target ratio >= 0.8);
- vec_env_steps_per_s_no_antialias (observations rendered without multisampling, ``antialias=False``)
  vs vec_env_steps_per_s (MuJoCo's default 4x multisampling).
Also records gymnasium's AsyncVectorEnv (one process per env, shared memory) on the same scene.

Every loop stays within one episode: the vector env freezes a slot whose episode ended (it is no longer
stepped or rendered), so timed steps past the task's step limit would be counted without being done.
``--steps`` (default: 60, or fewer for a task whose limit leaves less room after the warm-up step) must
leave the warm-up step and the timed steps within the limit; the vector env's rate counts only the slots
it stepped (a random action can still end an episode early by success).

    python benchmarks/bench_envs.py [--envs 16] [--steps 60] [--image-size 64] [--task Lift]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim_envs  # noqa: E402,F401  (first: sets the rendering defaults before mujoco is imported)

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from common import emit  # noqa: E402
from sim_envs.vector import usable_cpus  # noqa: E402
from sim_envs.versions import gl_renderer  # noqa: E402

DEFAULT_STEPS = 60
WARMUP_STEPS = 1  # the vector loops' untimed first step (renderers are created lazily)


def timed_steps(task: str, steps: int | None) -> int:
    """Timed steps per env for ``task``: ``steps`` (``None``: ``DEFAULT_STEPS`` or what the task's step limit
    leaves after the warm-up step), refused when the warm-up and timed steps would pass the step limit."""
    from sim_envs.tasks import get_task

    room = get_task(task).max_steps - WARMUP_STEPS
    if steps is None:
        return min(DEFAULT_STEPS, room)
    if not 1 <= steps <= room:
        raise ValueError(f"--steps {steps}: {task}'s episodes end after {room + WARMUP_STEPS} steps, and the vector "
                         f"env does not step a slot whose episode ended; use 1..{room} ({WARMUP_STEPS} warm-up step "
                         "+ the timed steps must stay within one episode)")
    return steps


def sequential(task: str, image_size: int, steps: int, episodes: int) -> tuple[float, list[np.ndarray]]:
    """Steps/s of one TabletopEnv in a plain loop; also returns the actuator commands it produced."""
    from sim_envs.tabletop_env import TabletopEnv

    env = TabletopEnv(task, image_size=image_size)
    rng = np.random.default_rng(0)
    count, elapsed, controls = 0, 0.0, []
    for episode in range(episodes):
        env.reset(options={"init_state_id": episode, "split": "train"})
        start = time.perf_counter()
        for _ in range(steps):
            env.step(rng.uniform(-1, 1, 7))
            controls.append(env.data.ctrl.copy())
        elapsed += time.perf_counter() - start
        count += steps
    env.close()
    return count / elapsed, controls


def bare_mujoco(task: str, image_size: int, steps: int, controls: list[np.ndarray]) -> float:
    """The floor: the same model replaying the same actuator commands, the same substeps and one
    render per control step, with no IK, observation assembly or env bookkeeping."""
    from sim_envs.tabletop_env import SUBSTEPS, TabletopEnv

    env = TabletopEnv(task, image_size=image_size)
    model, data = env.model, env.data
    renderer = mujoco.Renderer(model, image_size, image_size)
    elapsed = 0.0
    for episode in range(len(controls) // steps):
        env.reset(options={"init_state_id": episode, "split": "train"})
        start = time.perf_counter()
        for ctrl in controls[episode * steps : (episode + 1) * steps]:
            data.ctrl[:] = ctrl
            mujoco.mj_step(model, data, nstep=SUBSTEPS)
            renderer.update_scene(data, "agentview")
            renderer.render()
        elapsed += time.perf_counter() - start
    renderer.close()
    env.close()
    return len(controls) / elapsed


def vectorised(task: str, image_size: int, num_envs: int, workers: int, steps: int, antialias: bool = True) -> float:
    from sim_envs.vector import TabletopVecEnv, VecEnvConfig
    from vla_rl.core import TaskSpec

    rng = np.random.default_rng(0)
    config = VecEnvConfig(num_envs=num_envs, num_workers=workers, image_size=image_size, antialias=antialias)
    with TabletopVecEnv(config) as venv:
        venv.reset([TaskSpec(task, i, "train") for i in range(num_envs)])
        result = venv.step(np.zeros((num_envs, 7), np.float32))  # warm-up: renderers are created lazily
        ended = result.terminated | result.truncated
        stepped = 0
        start = time.perf_counter()
        for _ in range(steps):
            stepped += num_envs - int(ended.sum())  # an ended slot is frozen: not stepped, not rendered
            result = venv.step(rng.uniform(-1, 1, (num_envs, 7)).astype(np.float32))
            ended |= result.terminated | result.truncated
        return stepped / (time.perf_counter() - start)


def gymnasium_async(task: str, image_size: int, num_envs: int, steps: int) -> float:
    import gymnasium as gym

    import sim_envs

    envs = gym.vector.AsyncVectorEnv(
        [lambda: gym.make(sim_envs.gym_id(task), image_size=image_size) for _ in range(num_envs)],
        shared_memory=True, context="spawn", autoreset_mode=gym.vector.AutoresetMode.DISABLED,
    )
    rng = np.random.default_rng(0)
    envs.reset(seed=0)
    envs.step(np.zeros((num_envs, 7), np.float32))
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(rng.uniform(-1, 1, (num_envs, 7)).astype(np.float32))
    rate = num_envs * steps / (time.perf_counter() - start)
    envs.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="Lift")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps per env, within one episode (default {DEFAULT_STEPS}, or the task's "
                             f"step limit minus {WARMUP_STEPS} warm-up step when that is less)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--skip-gymnasium", action="store_true")
    args = parser.parse_args()
    try:
        args.steps = timed_steps(args.task, args.steps)
    except ValueError as error:
        parser.error(str(error))
    workers = usable_cpus()  # the cores this process may run on (its affinity mask)

    # Alternate the three measurements so slow phases of a shared machine hit all of them.
    rounds = {"seq": [], "bare": [], "vec": [], "vec_no_antialias": []}
    for _ in range(args.rounds):
        seq, controls = sequential(args.task, args.image_size, args.steps, episodes=4)
        rounds["seq"].append(seq)
        rounds["bare"].append(bare_mujoco(args.task, args.image_size, args.steps, controls))
        rounds["vec"].append(vectorised(args.task, args.image_size, args.envs, workers, args.steps))
        rounds["vec_no_antialias"].append(vectorised(args.task, args.image_size, args.envs, workers, args.steps,
                                                     antialias=False))
    seq, bare, vec, vec_aliased = (float(np.median(rounds[k])) for k in ("seq", "bare", "vec", "vec_no_antialias"))
    gym_async = None if args.skip_gymnasium else gymnasium_async(args.task, args.image_size, workers, args.steps)
    common = {"task": args.task, "image_size": args.image_size, "num_envs": args.envs, "workers": workers,
              "steps": args.steps,
              "rounds": {k: [round(v, 1) for v in values] for k, values in rounds.items()},
              "renderer": gl_renderer(), "lp_num_threads": os.environ.get("LP_NUM_THREADS"),
              "gymnasium_async_vector_env_steps_per_s": round(gym_async, 1) if gym_async else None}
    emit("vec_env_steps_per_s", vec, "env steps/s", "sequential_env_steps_per_s", seq, target_ratio=1.6, **common)
    emit("vec_env_steps_per_s_per_core", vec / workers, "env steps/s/core", "bare_mujoco_step_render_per_s", bare,
         target_ratio=0.8, sequential_env_steps_per_s=round(seq, 1), **common)
    emit("vec_env_steps_per_s_no_antialias", vec_aliased, "env steps/s", "vec_env_steps_per_s", vec, **common)


if __name__ == "__main__":
    main()
