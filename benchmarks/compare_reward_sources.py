"""GRPO with different rollout and reward sources, same start, same budget, same run:

- ``sim_success``: rollouts in the simulator, rewarded by its success predicate (the reference);
- ``critic``: rollouts in the simulator, rewarded by the critic alone (issue: >= 80% of the
  reference's gain);
- ``world_model``: rollouts only in the learned world model (``env.kind: world_model``), success
  decided by the critic on imagined frames (issue: >= 10 points on at least two tasks).

Every run starts from the same SFT checkpoint, trains on the same tasks for the same number of
iterations with the same seed and the quickstart's GRPO recipe (``vla-rl quickstart``: LoRA rank 8,
lr 1e-3, episode-mean loss, training episodes cut at 12 decisions), and is evaluated in the real
simulator on held-out init states. The budget is iterations, not minutes: critic scoring adds time.

    python benchmarks/compare_reward_sources.py --sft runs/quickstart_aa/sft --critic runs/critic/final \\
        [--runs sim_success critic world_model] [--world-model runs/world_model] \\
        [--tasks Reach PressButton] [--iterations 50] [--eval-episodes 50] [--out runs/compare_rewards] \\
        [--reference runs/compare_rewards/comparison.json]   # reuse an earlier run's sim_success row

Prints one JSON line per compared run (its gain against the sim_success run's); writes
``<out>/comparison.json`` and ``<out>/comparison.png``.
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
from vla_rl.cli.quickstart import QuickstartConfig  # noqa: E402
from vla_rl.policy.checkpoint import resolve_checkpoint  # noqa: E402
from vla_rl.reward.sources import RewardConfig  # noqa: E402
from vla_rl.train.trainer import EnvConfig, Trainer  # noqa: E402


def run(source: str, args, sft: Path) -> dict:
    reward = RewardConfig(source="critic", critic_checkpoint=args.critic) if source == "critic" else RewardConfig()
    env = EnvConfig()
    if source == "world_model":
        env = EnvConfig(kind="world_model", world_model_checkpoint=args.world_model, critic_checkpoint=args.critic,
                        done_threshold=args.done_threshold)
    recipe = QuickstartConfig().train
    config = dataclasses.replace(
        recipe, env=env, init_checkpoint=sft, tasks=tuple(args.tasks), out_dir=args.out / source,
        iterations=args.iterations, time_limit_minutes=0.0, reward=reward, eval_every=0,
        eval_episodes_per_task=args.eval_episodes, checkpoint_every=args.iterations, seed=args.seed,
        temperature=args.temperature if args.temperature is not None else recipe.temperature,
        algorithm=dataclasses.replace(recipe.algorithm, lr=args.lr if args.lr is not None else recipe.algorithm.lr))
    pool = make_pool(config.rollout, config.suite, sft, config.temperature, config.seed, config.env, config.reward)
    try:
        summary = Trainer(config, pool, eval_state_counter(config.suite)).run()
    finally:
        pool.close()
    history = summary["eval_history"]
    return {"source": source, "before": history[0]["mean_success"], "after": history[-1]["mean_success"],
            "gain_points": 100 * (history[-1]["mean_success"] - history[0]["mean_success"]),
            "per_task_before": {t: r["success_rate"] for t, r in history[0]["per_task"].items()},
            "per_task_after": {t: r["success_rate"] for t, r in history[-1]["per_task"].items()},
            "minutes": summary["seconds"] / 60, "config": json.loads(json.dumps(dataclasses.asdict(config),
                                                                                default=str))}


def matching_reference(path: Path, args, sft: Path) -> dict:
    """The sim_success row of an earlier comparison, refused unless it ran the same experiment."""
    rows = [row for row in json.loads(path.read_text()) if row["source"] == "sim_success"]
    if not rows:
        raise SystemExit(f"{path} holds no sim_success run")
    row, config = rows[0], rows[0]["config"]
    wanted = {"init_checkpoint": str(sft), "tasks": list(args.tasks), "iterations": args.iterations, "seed": args.seed,
              "eval_episodes_per_task": args.eval_episodes}
    differing = {key: (config.get(key), value) for key, value in wanted.items() if config.get(key) != value}
    if differing:
        raise SystemExit(f"{path}'s sim_success run differs from this comparison (its value, this one's): {differing}")
    return {**row, "reference": str(path)}


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
    parser.add_argument("--sft", type=Path, default=Path("runs/quickstart_aa/sft"))  # antialiased: a world model needs it
    parser.add_argument("--critic", type=Path, default=Path("runs/critic/final"))
    parser.add_argument("--world-model", type=Path, default=Path("runs/world_model"))
    parser.add_argument("--runs", nargs="+", default=["sim_success", "critic"],
                        choices=["sim_success", "critic", "world_model"], help="sim_success always runs first")
    parser.add_argument("--done-threshold", type=float, default=0.5,
                        help="world_model run: the critic's done probability that ends an imagined episode as a "
                             "success (`vla-rl wm eval --calibrate-on` calibrates one)")
    parser.add_argument("--tasks", nargs="+", default=["Reach", "PressButton"])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--temperature", type=float, help="default: the quickstart's")
    parser.add_argument("--lr", type=float, help="default: the quickstart's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/compare_rewards"))
    parser.add_argument("--reference", type=Path,
                        help="an earlier comparison.json whose sim_success run had this SFT checkpoint, tasks, "
                             "iterations, seed and evaluation size: reported as the reference instead of running it "
                             "again (a world-model run takes much longer than a simulator run)")
    args = parser.parse_args()
    sft = resolve_checkpoint(args.sft)
    names = ["sim_success"] + [name for name in dict.fromkeys(args.runs) if name != "sim_success"]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    if args.reference:
        results.append(matching_reference(args.reference, args, sft))
        names = names[1:]
    for name in names:
        results.append(run(name, args, sft))
        (args.out / "comparison.json").write_text(json.dumps(results, indent=1) + "\n")  # kept if a later run dies
    plot(results, args.out / "comparison.png")
    sim = results[0]
    figures = {"critic": "critic_reward_success_gain_points", "world_model": "world_model_grpo_success_gain_points"}
    for row in results[1:]:
        per_task_gain = {t: round(100 * (row["per_task_after"][t] - row["per_task_before"][t]), 1)
                         for t in row["per_task_after"]}
        emit(figures[row["source"]], row["gain_points"], "points", "sim_reward_success_gain_points",
             sim["gain_points"], tasks=args.tasks, iterations=args.iterations, eval_episodes=args.eval_episodes,
             before=sim["before"], sim_after=sim["after"], after=row["after"], per_task_gain_points=per_task_gain,
             minutes=[round(r["minutes"], 1) for r in (sim, row)])


if __name__ == "__main__":
    main()
