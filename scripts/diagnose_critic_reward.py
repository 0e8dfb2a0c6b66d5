"""Does a critic reward rank a policy's own GRPO groups the way the simulator's success does?

GRPO only learns from the order of returns inside a group of rollouts that share an init state. This
script collects such groups from a checkpoint on *training* init states (the quickstart's rollout
recipe: temperature, decision cut), scores every episode with the critic, and reports for several
ways of turning the critic's scores into an episode return:

- ``progress+done``: the ``critic`` reward source (``V(final) + done_bonus * done(final)``);
- ``value``: ``V(final)`` alone; ``done_final``: ``done(final)`` alone;
- ``done_final>=0.5``: 1 when the final frame's done probability reaches 0.5 (a binary verdict);
- ``done_any>=0.5``: 1 when the done probability reaches 0.5 on any frame (the world model's rule).

For each: the episode-level AUROC against the simulator's success, the share of (success, failure)
pairs inside a group that it orders correctly (ties count half), and the share of groups it would
keep (returns not all equal) next to the share the simulator keeps, and the cosine between its GRPO
advantages (std-scaled, and Dr.GRPO's unscaled ones) and the simulator's: the share of the policy
gradient's direction that the critic gets right. ``--min-spread`` adds the ``critic`` return with
the groups whose returns spread less than a margin dropped (dynamic sampling with a margin).

    python scripts/diagnose_critic_reward.py --checkpoint runs/qs19a/sft/step_001500 \\
        --critic runs/critic_glimpse/final [--tasks Reach PressButton] [--groups 12]

Prints one line per task and reward, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sim_envs  # noqa: E402,F401  (first: rendering defaults before mujoco is imported)

from vla_rl.cli.factories import make_pool  # noqa: E402
from vla_rl.cli.quickstart import QuickstartConfig  # noqa: E402
from vla_rl.core.types import TaskSpec  # noqa: E402
from vla_rl.policy.checkpoint import resolve_checkpoint  # noqa: E402
from vla_rl.reward.critic import load_critic  # noqa: E402
from vla_rl.reward.critic_train import auroc  # noqa: E402
from vla_rl.reward.sources import RewardConfig, score_trajectories  # noqa: E402


def episode_scores(critic, batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per episode: ``V(final)``, ``done(final)`` and the highest done probability over its frames."""
    scored, lengths = score_trajectories(critic, batch)
    rows = np.arange(len(lengths))
    value = np.cumsum(scored.progress, axis=1)[rows, lengths]
    frame_is_scored = np.arange(scored.done_prob.shape[1])[None] <= lengths[:, None]
    done_any = np.where(frame_is_scored, scored.done_prob, 0.0).max(axis=1)
    return value, scored.done_prob[rows, lengths], done_any


def pair_order(returns: np.ndarray, success: np.ndarray, groups: np.ndarray) -> float:
    """Share of (success, failure) pairs within a group whose returns are ordered the same way."""
    right = total = 0.0
    for group in np.unique(groups):
        inside = groups == group
        won, lost = returns[inside & success], returns[inside & ~success]
        if len(won) and len(lost):
            difference = won[:, None] - lost[None, :]
            right += (difference > 0).sum() + 0.5 * (difference == 0).sum()
            total += difference.size
    return float(right / total) if total else float("nan")


def advantages(returns: np.ndarray, groups: np.ndarray, scale_by_std: bool, min_spread: float = 0.0) -> np.ndarray:
    """GRPO's per-episode advantage: ``R - group mean``, divided by the group std when ``scale_by_std``;
    0 in a group whose returns spread less than ``min_spread`` (dynamic sampling would drop it)."""
    result = np.zeros(len(returns))
    for group in np.unique(groups):
        inside = groups == group
        if np.ptp(returns[inside]) <= min_spread and min_spread > 0:
            continue
        centred = returns[inside] - returns[inside].mean()
        result[inside] = centred / (returns[inside].std() + 1e-6) if scale_by_std else centred
    return result


def advantage_agreement(returns: np.ndarray, success: np.ndarray, groups: np.ndarray, scale_by_std: bool,
                        min_spread: float = 0.0) -> float:
    """Cosine between the critic's advantages and the simulator's (std-scaled, as sim-success GRPO
    trains): 1 when the critic pushes every episode the way the simulator would, 0 when unrelated."""
    mine = advantages(returns, groups, scale_by_std, min_spread)
    truth = advantages(success.astype(float), groups, True)
    return float(mine @ truth / (np.linalg.norm(mine) * np.linalg.norm(truth) + 1e-12))


def kept(returns: np.ndarray, groups: np.ndarray, min_spread: float = 1e-6) -> float:
    """Share of groups whose returns spread more than ``min_spread`` (dynamic sampling keeps them)."""
    return float(np.mean([np.ptp(returns[groups == g]) > min_spread for g in np.unique(groups)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--critic", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", default=None, help="default: the quickstart's tasks")
    parser.add_argument("--groups", type=int, default=12, help="groups (training init states) per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-spread", type=float, nargs="*", default=[0.25, 0.5, 0.75],
                        help="also: the critic return with groups whose returns spread less than this dropped")
    parser.add_argument("--verdict-thresholds", type=float, nargs="*", default=[],
                        help="also: a binary verdict, the critic return at or above each threshold")
    parser.add_argument("--episodes-out", type=Path, default=None,
                        help="write every episode's scores and outcome here (.npz) for later analysis")
    args = parser.parse_args()

    quickstart = QuickstartConfig()
    recipe = quickstart.train
    tasks = args.tasks or list(quickstart.tasks)
    checkpoint = resolve_checkpoint(args.checkpoint)
    critic = load_critic(args.critic)
    pool = make_pool(recipe.rollout, recipe.suite, checkpoint, recipe.temperature, args.seed,
                     reward=RewardConfig(source="critic", critic_checkpoint=args.critic))
    rng = np.random.default_rng(args.seed)
    report = {"checkpoint": str(checkpoint), "critic": str(args.critic), "group_size": recipe.group_size,
              "temperature": recipe.temperature, "max_decisions": recipe.rollout.max_decisions, "tasks": {}}
    episodes = {}
    try:
        workers = len(pool.node_ids)
        for task in tasks:
            states = rng.choice(recipe.train_states, size=args.groups, replace=False)
            specs = [TaskSpec(task, int(s)) for s in states for _ in range(recipe.group_size)]
            shares = [specs[w::workers] for w in range(workers)]
            batches = [batch for batch, _ in pool.collect(shares)]
            success = np.concatenate([b.success for b in batches]).astype(bool)
            groups = np.concatenate([[s.init_state_id for s in b.task_specs] for b in batches])
            value, done_final, done_any = (np.concatenate(parts) for parts in
                                           zip(*(episode_scores(critic, b) for b in batches)))
            returns = {"progress+done": value + done_final, "value": value, "done_final": done_final,
                       "done_final>=0.5": (done_final >= 0.5).astype(float),
                       "done_any>=0.5": (done_any >= 0.5).astype(float)}
            for threshold in args.verdict_thresholds:
                returns[f"progress+done>={threshold}"] = (value + done_final >= threshold).astype(float)
            episodes[task] = {"success": success, "groups": groups, "value": value, "done_final": done_final,
                              "done_any": done_any}
            rows = {"episodes": int(len(success)), "success": float(success.mean()),
                    "sim_kept_groups": kept(success.astype(float), groups)}
            for name, ret in returns.items():
                rows[name] = {"auroc": auroc(ret, success), "pair_order": pair_order(ret, success, groups),
                              "kept_groups": kept(ret, groups),
                              "advantage_cosine": advantage_agreement(ret, success, groups, True),
                              "advantage_cosine_unscaled": advantage_agreement(ret, success, groups, False)}
                print(f"{task:12s} {name:14s} AUROC {rows[name]['auroc']:.3f}  pairs ordered "
                      f"{rows[name]['pair_order']:.3f}  groups kept {rows[name]['kept_groups']:.2f} "
                      f"(sim {rows['sim_kept_groups']:.2f}, success {rows['success']:.2f})  advantage cosine "
                      f"{rows[name]['advantage_cosine']:.2f} (Dr.GRPO {rows[name]['advantage_cosine_unscaled']:.2f})",
                      flush=True)
            for spread in args.min_spread:
                ret = returns["progress+done"]
                row = {"kept_groups": kept(ret, groups, spread),
                       "advantage_cosine": advantage_agreement(ret, success, groups, True, spread)}
                rows[f"progress+done, spread>{spread}"] = row
                print(f"{task:12s} progress+done, groups spread > {spread}: groups kept {row['kept_groups']:.2f}  "
                      f"advantage cosine {row['advantage_cosine']:.2f}", flush=True)
            report["tasks"][task] = rows
    finally:
        pool.close()
    if args.episodes_out is not None:
        np.savez(args.episodes_out, **{f"{task}/{name}": array for task, arrays in episodes.items()
                                       for name, array in arrays.items()})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
