"""Control steps/s of the MJX tabletop backend (``sim_envs.mjx_backend``) against native MuJoCo on the
same task, in this run. Both run the same physics: the 7-D action through the IK controller, then
``SUBSTEPS`` physics steps, no rendering. Native steps its envs one after the other in a Python loop
(one core); MJX steps the whole batch in one jitted call. The first (compiling) MJX step is timed
separately and excluded.

Prints one JSON line: mjx_env_steps_per_s vs native_env_steps_per_s.

    python benchmarks/bench_mjx.py [--task Lift] [--envs 8] [--steps 3]     # CPU default (run_all)
    python benchmarks/bench_mjx.py --envs 1024 --steps 20                   # on an accelerator
    python benchmarks/bench_mjx.py --precision float32                      # faster; grasps go wrong
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from common import emit  # noqa: E402
from sim_envs.mjx_backend import PRECISIONS  # noqa: E402
from sim_envs.tabletop_env import SUBSTEPS  # noqa: E402


def native_rate(task: str, actions: np.ndarray, init_ids: list[int]) -> float:
    """Env steps/s of native MuJoCo (IK controller + substeps) over the same actions [T, N, 7]."""
    from sim_envs.init_states import get_layout
    from sim_envs.tabletop_env import SUBSTEPS, TabletopEnv

    env = TabletopEnv(task)
    elapsed = 0.0
    for i, state_id in enumerate(init_ids):
        env._apply(get_layout(task, state_id, "train"))  # the env's reset without the rendered observation
        start = time.perf_counter()
        for t in range(actions.shape[0]):
            env.arm.set_action(actions[t, i])
            mujoco.mj_step(env.model, env.data, nstep=SUBSTEPS)
        elapsed += time.perf_counter() - start
    return actions.shape[0] * len(init_ids) / elapsed


def mjx_rate(task: str, actions: np.ndarray, init_ids: list[int], precision: str) -> tuple[float, float, str]:
    """(env steps/s after the first step, seconds of the first (compiling) step, jax backend)."""
    import jax

    from sim_envs.mjx_backend import MjxTabletopPhysics

    physics = MjxTabletopPhysics(task, len(init_ids), precision=precision)
    physics.reset(init_ids)
    start = time.perf_counter()
    physics.step(actions[0])
    physics.data.qpos.block_until_ready()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for t in range(1, actions.shape[0]):
        physics.step(actions[t])
    physics.data.qpos.block_until_ready()
    rate = (actions.shape[0] - 1) * len(init_ids) / (time.perf_counter() - start)
    return rate, compile_s, jax.default_backend()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="Lift")
    parser.add_argument("--envs", type=int, default=8, help="MJX batch (1024+ on an accelerator)")
    parser.add_argument("--steps", type=int, default=3, help="control steps; the first one compiles")
    parser.add_argument("--native-envs", type=int, default=8, help="envs for the native rate (its cost is linear)")
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0],
                        help="MJX precision (the backend's default float64; float32 breaks grasps, docs/mjx.md)")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step compiles and is not timed)")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (args.steps, args.envs, 7)).astype(np.float32)
    native_envs = min(args.native_envs, args.envs)
    native = native_rate(args.task, actions[:, :native_envs], list(range(native_envs)))
    rate, compile_s, backend = mjx_rate(args.task, actions, list(range(args.envs)), args.precision)
    emit("mjx_env_steps_per_s", rate, "env steps/s", "native_env_steps_per_s", native, task=args.task,
         num_envs=args.envs, precision=args.precision, native_envs=native_envs, control_steps=args.steps,
         jax_backend=backend,
         first_step_compile_s=round(compile_s, 1), physics_steps_per_env_step=SUBSTEPS,
         threads={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "XLA_FLAGS")})


if __name__ == "__main__":
    main()
