"""``vla-rl baseline``: reference learners to compare the VLA pipeline's sample efficiency against.

- ``baseline rllib-ppo --task Reach [--suite tabletop] [--timesteps N] [--out DIR] [--num-env-runners 1]
  [--seed 0]``: RLlib PPO on the privileged simulator state (``vla_rl.distributed.rllib_baseline``),
  evaluated deterministically on the task's held-out init states; writes ``baseline.json`` and
  ``learning_curve.png``. Every other setting: ``--set key=value`` (``--show-config`` lists them).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_rllib_ppo(args: argparse.Namespace) -> int:
    from vla_rl.core.config import describe, load_config
    from vla_rl.distributed.rllib_baseline import PPOBaselineConfig, run_ppo_baseline

    overrides = list(args.set or [])
    for flag, key in (("task", "task"), ("suite", "suite"), ("timesteps", "timesteps"), ("out", "out_dir"),
                      ("num_env_runners", "num_env_runners"), ("seed", "seed")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(PPOBaselineConfig, args.config, overrides)
    if args.show_config:
        print(describe(PPOBaselineConfig, defaults=config))
        return 0
    report = run_ppo_baseline(config)
    held_out = report["held_out"]
    print(f"{report['env']}: {report['env_steps']} env steps, {report['iterations']} iterations in "
          f"{report['wall_seconds'] / 60:.1f} min; held-out success {held_out['successes']}/{held_out['episodes']} "
          f"= {held_out['success_rate']:.1%} [Wilson 95% {held_out['wilson95_low']:.2f}, {held_out['wilson95_high']:.2f}]")
    out = Path(config.out_dir)
    print(f"results: {out / 'baseline.json'}, {out / 'learning_curve.png'}")
    return 0


def register(sub) -> None:
    from vla_rl.cli.main import add_config_options

    baseline = sub.add_parser("baseline", help="reference learners (RLlib PPO on privileged state)")
    baseline_sub = baseline.add_subparsers(dest="baseline_command", required=True)
    ppo = baseline_sub.add_parser("rllib-ppo", help="RLlib PPO on privileged state, then held-out success")
    ppo.add_argument("--task", help="task (default Reach)")
    ppo.add_argument("--suite", help="environment suite (default tabletop)")
    ppo.add_argument("--timesteps", type=int, help="env steps to train for (default 100000)")
    ppo.add_argument("--out", type=Path, help="output directory (default runs/baseline_ppo)")
    ppo.add_argument("--num-env-runners", type=int, help="RLlib EnvRunner actors (default 1; 0 = in the driver)")
    ppo.add_argument("--seed", type=int, help="seed (default 0)")
    add_config_options(ppo, "YAML PPOBaselineConfig")
    ppo.set_defaults(func=cmd_rllib_ppo)
