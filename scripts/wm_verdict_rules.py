"""Would another rule for "the critic calls this imagined episode a success" agree better with the simulator?

``WorldModelVecEnv`` ends an imagined episode as a success at the first step whose done probability
reaches ``done_threshold``; ``vla-rl wm eval`` judges an imagined episode the same way (its peak done
probability). This script imagines episodes open loop from their first real frame and recorded actions,
keeps the critic's done probability of *every* step on the real and on the imagined frames, and scores
rules on them:

- ``peak``: the peak done probability (the env's rule);
- ``consecutive-k``: the best run of k consecutive steps (its lowest value), a debounced verdict;
- ``mean-k``: the best mean over k consecutive steps.

Each rule's threshold is calibrated on ``--calibrate-on`` (a seeded sample of 100 training episodes, as
``vla-rl wm eval --calibrate-on``) and applied to the held-out ``--data``; ``--policy-episodes`` adds a
file of a policy's own episodes (judged at the calibrated threshold, with their best threshold beside it).
It also prints each set's AUROC of the peak done probability against the simulator's outcome, per task.

    python scripts/wm_verdict_rules.py --world-model runs/world_model29sr --critic runs/critic29sr/final \\
        --data runs/wm_data28/eval.hdf5 --calibrate-on runs/wm_data28/train.hdf5 \\
        --policy-episodes runs/critic_policy26/train.hdf5

Prints one line per rule and camera source, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RULES = [("peak", 1), ("consecutive", 2), ("consecutive", 3), ("mean", 2), ("mean", 3), ("mean", 5)]


def rule_score(traces: np.ndarray, rule: str, k: int) -> np.ndarray:
    """One score per episode: the rule's statistic, compared with a threshold to give the verdict."""
    scores = []
    for row in traces:
        steps = row[~np.isnan(row)]
        if rule == "peak" or len(steps) < k:
            scores.append(steps.max() if rule == "peak" else (steps.min() if rule == "consecutive" else steps.mean()))
        elif rule == "consecutive":
            scores.append(np.lib.stride_tricks.sliding_window_view(steps, k).min(axis=1).max())
        else:
            scores.append(np.convolve(steps, np.ones(k) / k, "valid").max())
    return np.array(scores)


def auroc_or_none(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """The project's AUROC, None (JSON null) where one outcome is missing."""
    from vla_rl.reward.critic_train import auroc

    value = auroc(scores, truth)
    return None if np.isnan(value) else value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", required=True)
    parser.add_argument("--critic", required=True)
    parser.add_argument("--data", required=True, help="held-out episodes (HDF5)")
    parser.add_argument("--calibrate-on", required=True, help="training episodes (HDF5): 100 are sampled")
    parser.add_argument("--policy-episodes", help="a policy's own episodes (HDF5): 120 are sampled")
    parser.add_argument("--seed", type=int, default=0, help="imagination seed")
    args = parser.parse_args()

    from sim_envs.progress_episodes import HELD_OUT, TRAINING
    from vla_rl.cli.world_model import trajectories_of
    from vla_rl.core.checkpoint_dir import resolve_checkpoint
    from vla_rl.reward.critic import load_critic
    from world_model.evaluate import (agreement_by_threshold, best_threshold, critic_channels, critic_done_traces,
                                      imagine_open_loop)
    from world_model.train import load_world_model

    if Path(args.calibrate_on).resolve() == Path(args.data).resolve():
        raise ValueError("--calibrate-on must not be the held-out data")
    model = load_world_model(resolve_checkpoint(Path(args.world_model)))
    critic = load_critic(Path(args.critic))
    cameras = tuple(model.config.cameras)
    agent, wrist = critic_channels(critic, cameras)

    def sample(path: str, count: int, seed: int, role: str | None = None, use: str = ""):
        episodes = trajectories_of(Path(path), cameras, role, use)
        return [episodes[i] for i in sorted(np.random.default_rng(seed).permutation(len(episodes))[:count])]

    sets = {"calibration": sample(args.calibrate_on, 100, 0, TRAINING, "--calibrate-on"),
            "held_out": trajectories_of(Path(args.data), cameras, HELD_OUT, "--data")}
    if args.policy_episodes:
        sets["policy"] = sample(args.policy_episodes, 120, 1)
    traces, truth, tasks = {}, {}, {}
    for name, trajectories in sets.items():
        instructions = [t.instruction for t in trajectories]
        imagined = imagine_open_loop(model, trajectories, None, args.seed)
        traces[name] = {"imagined": critic_done_traces(critic, imagined, instructions, agent, wrist),
                        "real": critic_done_traces(critic, [t.frames for t in trajectories], instructions, agent, wrist)}
        truth[name] = np.array([t.succeeded for t in trajectories])
        tasks[name] = np.array([t.task for t in trajectories])

    report = {"world_model": args.world_model, "critic": args.critic, "seed": args.seed, "rules": [], "auroc": {}}
    for source in ("imagined", "real"):
        for rule, k in RULES:
            scores = {name: rule_score(traces[name][source], rule, k) for name in sets}
            calibration = agreement_by_threshold(scores["calibration"], truth["calibration"])
            threshold = best_threshold(calibration)
            row = {"source": source, "rule": rule if rule == "peak" else f"{rule}-{k}", "threshold": float(threshold),
                   "calibration_agreement": calibration[threshold]}
            for name in sets:
                if name == "calibration":
                    continue
                verdict = scores[name] >= threshold
                at = agreement_by_threshold(scores[name], truth[name])
                best = max(at, key=at.get)  # found on this set itself: how far from its calibrated threshold
                row[name] = {"agreement": float((verdict == truth[name]).mean()),
                             "on_successes": float(verdict[truth[name]].mean()),
                             "on_failures": float((~verdict[~truth[name]]).mean()),
                             "best_threshold": best, "best_threshold_agreement": at[best]}
            report["rules"].append(row)
            print(f"{source:8s} {row['rule']:13s} threshold {threshold:.2f} (calibration {calibration[threshold]:.0%})"
                  + "".join(f" | {name} {row[name]['agreement']:.0%} (successes {row[name]['on_successes']:.0%}, "
                            f"failures {row[name]['on_failures']:.0%}; at its best threshold {row[name]['best_threshold']:.2f}: "
                            f"{row[name]['best_threshold_agreement']:.0%})"
                            for name in sets if name != "calibration"))
        for name in sets:
            peak = rule_score(traces[name][source], "peak", 1)
            report["auroc"][f"{name}/{source}"] = {"all": auroc_or_none(peak, truth[name]), **{
                task: auroc_or_none(peak[tasks[name] == task], truth[name][tasks[name] == task])
                for task in sorted(set(tasks[name]))}}
            print(f"AUROC of the peak done probability, {name} ({source} frames): "
                  + ", ".join(f"{key} {value:.3f}" for key, value in report["auroc"][f"{name}/{source}"].items()
                              if value is not None))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
