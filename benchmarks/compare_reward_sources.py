"""GRPO driven by the critic alone vs by the simulator's success, same start, same budget, same run.

Both runs start from the same SFT checkpoint, train on the same tasks for the same number of
iterations with the same seed, and are evaluated in the real simulator on held-out init states. The
figure is the critic run's success gain as a fraction of the sim-success run's gain (target >= 0.8).

    python benchmarks/compare_reward_sources.py --sft runs/quickstart/sft --critic runs/critic/final \\
        [--tasks Reach PressButton] [--iterations 12] [--eval-episodes 50] [--out runs/compare_rewards]

Prints one JSON line; writes ``<out>/comparison.json`` and ``<out>/comparison.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim_envs  # noqa: E402,F401  (first: rendering defaults before mujoco is imported)

from common import emit  # noqa: E402

from vla_rl.cli.factories import eval_state_counter, make_pool  # noqa: E402
from vla_rl.policy.checkpoint import resolve_checkpoint  # noqa: E402
from vla_rl.reward.sources import RewardConfig  # noqa: E402
from vla_rl.train.learner import AlgorithmConfig  # noqa: E402
from vla_rl.train.trainer import RolloutConfig, Trainer, TrainConfig  # noqa: E402


def run(source: str, args, sft: Path) -> dict:
    reward = RewardConfig(source=source, critic_checkpoint=args.critic if source != "sim_success" else Path(""))
    config = TrainConfig(
        init_checkpoint=sft, tasks=tuple(args.tasks), out_dir=args.out / source, iterations=args.iterations,
        group_size=8, groups_per_iteration=4, max_sampling_rounds=2, temperature=args.temperature, reward=reward,
        algorithm=AlgorithmConfig(lr=args.lr, minibatch_size=128, microbatch_size=64),
        rollout=RolloutConfig(num_workers=2, envs_per_worker=16), eval_every=args.iterations,
        eval_episodes_per_task=args.eval_episodes, checkpoint_every=args.iterations, seed=args.seed)
    pool = make_pool(config.rollout, config.suite, sft, config.temperature, config.seed)
    try:
        summary = Trainer(config, pool, eval_state_counter(config.suite)).run()
    finally:
        pool.close()
    history = summary["eval_history"]
    return {"source": source, "before": history[0]["mean_success"], "after": history[-1]["mean_success"],
            "gain_points": 100 * (history[-1]["mean_success"] - history[0]["mean_success"]),
            "per_task_after": {t: r["success_rate"] for t, r in history[-1]["per_task"].items()},
            "minutes": summary["seconds"] / 60, "config": json.loads(json.dumps(dataclasses.asdict(config),
                                                                                default=str))}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5, 3.4))
    for i, row in enumerate(results):
        ax.bar([3 * i, 3 * i + 1], [100 * row["before"], 100 * row["after"]], color=["#999", "#36c"])
        ax.text(3 * i + 0.5, 100 * max(row["before"], row["after"]) + 2, f"{row['gain_points']:+.1f}", ha="center")
    ax.set_xticks([3 * i + 0.5 for i in range(len(results))], [r["source"] for r in results])
    ax.set_ylabel("held-out success (%)  grey: before, blue: after")
    ax.set_ylim(0, 105)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", type=Path, default=Path("runs/quickstart/sft"))
    parser.add_argument("--critic", type=Path, default=Path("runs/critic/final"))
    parser.add_argument("--tasks", nargs="+", default=["Reach", "PressButton"])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=1.6)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/compare_rewards"))
    args = parser.parse_args()
    sft = resolve_checkpoint(args.sft)
    results = [run("sim_success", args, sft), run("critic", args, sft)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "comparison.png")
    sim, critic = results
    emit("critic_reward_success_gain_points", critic["gain_points"], "points", "sim_reward_success_gain_points",
         sim["gain_points"], tasks=args.tasks, iterations=args.iterations, eval_episodes=args.eval_episodes,
         before=sim["before"], sim_after=sim["after"], critic_after=critic["after"],
         minutes=[round(r["minutes"], 1) for r in results])


if __name__ == "__main__":
    main()
