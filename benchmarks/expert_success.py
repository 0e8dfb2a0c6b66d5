"""Scripted-expert success on every tabletop task's 50 evaluation init states (the table in
docs/tabletop.md). Tasks run in parallel processes; prints a table and one JSON line. That line is a
success table (``per_task``), not a timed figure: it has no same-run baseline or ratio, and run_all.py
renders it as successes per task.

    python benchmarks/expert_success.py [--tasks Lift Stack] [--noise 0.0] [--align-yaw]
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim_envs  # noqa: E402,F401  (first: sets the rendering defaults before mujoco is imported)

from common import machine  # noqa: E402


def evaluate(task: str, noise: float, align_yaw: bool) -> dict:
    from sim_envs.demos import run_expert_episode
    from sim_envs.init_states import num_eval_states
    from sim_envs.tabletop_env import TabletopEnv

    env = TabletopEnv(task, image_size=32)
    episodes = [run_expert_episode(env, i, "eval", noise_std=noise, seed=i, align_yaw=align_yaw)[0]
                for i in range(num_eval_states(task))]
    env.close()
    failed = [e.init_state_id for e in episodes if not e.success]
    return {"task": task, "successes": len(episodes) - len(failed), "episodes": len(episodes),
            "mean_steps": round(sum(e.num_steps for e in episodes) / len(episodes), 1), "failed_init_states": failed}


def main() -> None:
    from sim_envs.tasks import TASKS
    from sim_envs.vector import usable_cpus
    from sim_envs.versions import environment_versions

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--noise", type=float, default=0.0, help="perturbed-expert action noise std")
    parser.add_argument("--align-yaw", action="store_true", help="grasping experts turn to the block's yaw")
    args = parser.parse_args()
    start = time.perf_counter()
    with futures.ProcessPoolExecutor(usable_cpus(), mp_context=mp.get_context("spawn")) as pool:
        rows = list(pool.map(evaluate, args.tasks, [args.noise] * len(args.tasks),
                             [args.align_yaw] * len(args.tasks)))
    print(f"{'task':<12} {'success':>9} {'rate':>6} {'mean steps':>10}")
    for row in rows:
        print(f"{row['task']:<12} {row['successes']:>4}/{row['episodes']:<4} {row['successes'] / row['episodes']:>6.0%} "
              f"{row['mean_steps']:>10}")
    print(json.dumps({"figure": "expert_success_rate", "noise_std": args.noise, "align_yaw": args.align_yaw,
                      "split": "eval", "per_task": rows, "seconds": round(time.perf_counter() - start, 1),
                      "versions": environment_versions(), "machine": machine()}))


if __name__ == "__main__":
    main()
