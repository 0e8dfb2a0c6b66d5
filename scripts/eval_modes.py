"""Held-out success of policy checkpoints under several action-selection modes, and how much of it
happens within the first N steps: to separate what GRPO trains (sampled actions, episodes cut at
``max_decisions``) from what the report measures (greedy actions, the task's full step limit).

Modes: ``expected`` (the bin of the distribution's mean), ``argmax`` (the most likely bin) and
``sample`` (a draw at the given temperature, as in GRPO rollouts; seeded). Every mode runs the same
held-out init states (the evaluation split, ids 0..episodes-1, as ``vla-rl eval``).

    python scripts/eval_modes.py runs/quickstart/sft/step_001312 runs/quickstart/grpo/final \
        [--tasks Reach PressButton] [--episodes 50] [--modes expected argmax sample] [--within 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--tasks", nargs="+", default=["Reach", "PressButton"])
    parser.add_argument("--episodes", type=int, default=50, help="held-out init states per task")
    parser.add_argument("--modes", nargs="+", default=["expected", "argmax", "sample"],
                        choices=["expected", "argmax", "sample"])
    parser.add_argument("--temperature", type=float, default=1.0, help="of the sample mode")
    parser.add_argument("--within", type=int, default=12, help="also count successes within this many steps")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args(argv)

    from sim_envs.init_states import num_eval_states
    from vla_rl.cli.factories import checkpoint_camera_setup, load_policy, make_vec_env
    from vla_rl.rollout.evaluate import evaluate
    from vla_rl.train.trainer import eval_specs

    specs = eval_specs(args.tasks, args.episodes, num_eval_states)
    rows = []
    for checkpoint in args.checkpoints:
        image_size, wrist, antialias = checkpoint_camera_setup(Path(checkpoint))
        env = make_vec_env("tabletop", args.num_envs, image_size, wrist, -1, antialias)
        policy = load_policy(checkpoint, temperature=args.temperature)  # the temperature only affects sampling
        try:
            for mode in args.modes:
                if mode != "sample":
                    policy.model.config = dataclasses.replace(policy.model.config, greedy_decoding=mode)
                policy.generator.manual_seed(args.seed)
                result = evaluate(lambda obs: policy.act(obs, explore=mode == "sample").actions, env, specs)
                per_task = result.per_task()
                row = {"checkpoint": checkpoint, "mode": mode}
                for task in args.tasks:
                    runs = [e for e in result.episodes if e.spec.task == task]
                    row[task] = per_task[task]["success_rate"]
                    row[f"{task}_within_{args.within}"] = sum(e.success and e.steps <= args.within
                                                              for e in runs) / len(runs)
                row["mean"] = result.mean_success
                row[f"mean_within_{args.within}"] = float(np.mean([row[f"{t}_within_{args.within}"]
                                                                   for t in args.tasks]))
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            env.close()
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
