"""Is a localiser VLA limited by its perception or by its control? Run a checkpoint closed-loop on the
held-out init states twice per state: once as it is (its localiser finds the points), once with the
simulator's *true* image points of the named objects (and of the gripper) fed in their place. The
gap between the two success rates is what perfect localisation would buy; the pixel errors of the
model's own points along its own trajectories show where it goes wrong (median, 90th percentile and
worst, per point: the named object, its goal, the gripper, which comes from the proprio with
``gripper_from_proprio``).

    python scripts/diagnose_localiser.py runs/sft_tabletop/step_004500 [--tasks Reach Lift] [--episodes 50]

Single-process and greedy, as ``vla-rl eval`` decodes; about 2-3 minutes per task at 50 states on
2 CPU cores. Prints one line per task, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "osmesa")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_envs.tabletop_env import TabletopEnv  # noqa: E402
from sim_envs.tasks import TASKS  # noqa: E402
from vla_rl.core.types import ObsBatch  # noqa: E402
from vla_rl.policy.policy import VLAPolicy  # noqa: E402
from vla_rl.policy.checkpoint import load_checkpoint  # noqa: E402


class PointSwitch:
    """Wraps ``model.locate``: it always locates the points (and records their error against
    ``truth``, set before each step), then hands on either those points or the true ones."""

    def __init__(self, model):
        self.original = model.locate
        self.use_truth = False
        self.truth: np.ndarray | None = None  # [K, 2] of the current step
        self.errors: list[np.ndarray] = []  # [K] per step while the model's own points are used (NaN: out of view)
        model.locate = self

    def __call__(self, pixels: torch.Tensor, instructions: list[str], proprio=None):
        logits, points = self.original(pixels, instructions, proprio)
        truth = torch.as_tensor(self.truth, dtype=torch.float32, device=points.device)[None]
        if self.use_truth:
            return logits, truth
        error = (points - truth).norm(dim=-1)[0].cpu().numpy()
        inside = ((self.truth >= 0) & (self.truth < pixels.shape[1])).all(-1)
        self.errors.append(np.where(inside, error, np.nan))  # what is out of view cannot be found
        return logits, points


def run_episode(env: TabletopEnv, policy: VLAPolicy, switch: PointSwitch, init_state_id: int, gripper: bool) -> bool:
    obs, info = env.reset(options={"init_state_id": init_state_id, "split": "eval"})
    while True:
        points = env.named_pixels()
        switch.truth = np.concatenate([points, env.gripper_pixels()[None]]) if gripper else points
        chunk = policy.predict_actions(ObsBatch.from_env_obs(obs, info["instruction"]))[0]
        for action in chunk:
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                return bool(info["success"])


def error_summary(errors: list[np.ndarray], names: list[str]) -> dict[str, dict[str, float]]:
    """Per point: median, 90th percentile and worst pixel error, over steps whose true point is inside
    the image (the localiser cannot find what is out of view)."""
    summary = {}
    for name, column in zip(names, np.stack(errors).T):
        seen = column[np.isfinite(column)]
        summary[name] = ({"median": float(np.median(seen)), "p90": float(np.percentile(seen, 90)),
                          "max": float(seen.max())} if seen.size else {"median": None, "p90": None, "max": None})
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--episodes", type=int, default=50, help="held-out init states per task")
    args = parser.parse_args(argv)
    model, action_tokenizer, _ = load_checkpoint(args.checkpoint)
    config = model.config
    if not config.localiser_points:
        raise SystemExit(f"{args.checkpoint} has no localiser (model.localiser_points is 0): nothing to diagnose")
    policy = VLAPolicy(model.eval(), action_tokenizer)
    switch = PointSwitch(model)
    names = ["object", "goal"] + (["gripper"] if config.localiser_gripper else [])
    result = {"figure": "localiser_diagnosis", "checkpoint": str(args.checkpoint), "episodes_per_task": args.episodes,
              "greedy_decoding": config.greedy_decoding, "per_task": {}}
    for task in args.tasks:
        env = TabletopEnv(task, image_size=config.image_size, wrist_camera="wrist" in config.cameras,
                          antialias=config.antialias)
        wins = {"own_points": 0, "true_points": 0}
        switch.errors = []
        try:
            for init_state_id in range(args.episodes):
                for mode in wins:
                    switch.use_truth = mode == "true_points"
                    wins[mode] += run_episode(env, policy, switch, init_state_id, config.localiser_gripper)
        finally:
            env.close()
        row = {**{mode: count / args.episodes for mode, count in wins.items()},
               "pixel_error": error_summary(switch.errors, names)}
        result["per_task"][task] = row
        errors = ", ".join(f"{name} {e['median']:.2f}/{e['p90']:.2f}/{e['max']:.1f}" if e["median"] is not None
                           else f"{name} never in view" for name, e in row["pixel_error"].items())
        print(f"{task:12s} own {row['own_points']:.2f}  true {row['true_points']:.2f}  "
              f"px error median/p90/max: {errors}", flush=True)
    for mode in ("own_points", "true_points"):
        result[f"mean_{mode}"] = float(np.mean([row[mode] for row in result["per_task"].values()]))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
